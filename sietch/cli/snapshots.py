"""Snapshot commands: pause, resume, snapshot, restore, fork, snapshots, snapshot-rm."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from sietch.cli._common import (
    JsonOption,
    LabelOption,
    age,
    api_errors,
    err,
    listing_table,
    out,
    parse_pairs,
    print_json,
    print_listing,
)
from sietch.client import Client, Sandbox, SnapshotInfo

snapshots_app = typer.Typer()


@snapshots_app.command()
def pause(sandbox_id: str) -> None:
    """Stop a sandbox's CPUs; its memory and processes wait as they are."""
    with api_errors(), Client() as client:
        Sandbox.connect(sandbox_id, client=client).pause()
    out.print(sandbox_id)


@snapshots_app.command()
def resume(sandbox_id: str) -> None:
    """Let a paused sandbox run on, or bring a hibernated one back."""
    with api_errors(), Client() as client:
        Sandbox.connect(sandbox_id, client=client).resume()
    out.print(sandbox_id)


@snapshots_app.command()
def snapshot(
    sandbox_id: str,
    name: Annotated[str | None, typer.Option(help="A name to find it by.")] = None,
    label: LabelOption = None,
    ttl: Annotated[
        float | None, typer.Option(help="Delete it after this many seconds, once unused.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Save a sandbox's memory, processes and disk; print the snapshot's id."""
    with api_errors(), Client() as client, err.status("Snapshotting…"):
        snap = Sandbox.connect(sandbox_id, client=client).snapshot(
            name, labels=parse_pairs(label, "--label"), ttl_s=ttl
        )
    if as_json:
        print_json(snap)
    else:
        out.print(snap.id)


@snapshots_app.command()
def restore(
    snapshot_id: str,
    label: LabelOption = None,
    hostname: Annotated[str | None, typer.Option(help="The restored guest's hostname.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Start a new sandbox from a snapshot; print its id."""
    with api_errors(), err.status("Restoring…"):
        sb = Sandbox.restore(
            snapshot_id, labels=parse_pairs(label, "--label"), hostname=hostname, keep=True
        )
    sb.close()
    if as_json:
        print_json(sb.info)
    else:
        out.print(sb.id)


@snapshots_app.command()
def fork(
    sandbox_id: str,
    count: Annotated[int, typer.Option("--count", "-n", help="How many copies.")] = 1,
    label: LabelOption = None,
    as_json: JsonOption = False,
) -> None:
    """Make running copies of a sandbox; print their ids."""
    with api_errors(), Client() as client, err.status(f"Forking {count}…"):
        forks = Sandbox.connect(sandbox_id, client=client).fork(
            count, labels=parse_pairs(label, "--label")
        )
    if as_json:
        print_json([f.info for f in forks])
    else:
        for f in forks:
            out.print(f.id)


@snapshots_app.command("snapshots")
def list_snapshots(
    templates: Annotated[bool, typer.Option(help="Include image templates.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only print ids.")] = False,
    as_json: JsonOption = False,
) -> None:
    """List snapshots with their parents (the tree of what was restored from what)."""
    with api_errors():
        snaps = Sandbox.list_snapshots(templates)
    print_listing(snaps, _table, as_json=as_json, quiet=quiet)


def _table(snaps: list[SnapshotInfo]) -> Table:
    table = listing_table("ID", "NAME", "PARENT", "SANDBOX", "SIZE", "AGE", "LABELS")
    for s in snaps:
        labels = ",".join(f"{k}={v}" for k, v in s.labels.items())
        name = s.name or ("(template)" if s.template else "")
        size = f"{s.size_bytes / 2**20:.0f}M"
        table.add_row(
            s.id, name, s.parent_id or "-", s.sandbox_id or "-", size, age(s.created_at), labels
        )
    return table


@snapshots_app.command("snapshot-rm")
def remove(
    snapshot_ids: list[str],
    subtree: Annotated[
        bool, typer.Option(help="Also every snapshot descended from each one.")
    ] = False,
) -> None:
    """Delete snapshots (refused while a sandbox or child snapshot builds on one)."""
    with api_errors(), Client() as client:
        for snapshot_id in snapshot_ids:
            Sandbox.delete_snapshot(snapshot_id, subtree=subtree, client=client)
            out.print(snapshot_id)
