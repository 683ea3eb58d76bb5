"""Sandbox commands: create, ls, info, rm, logs, network, expose, unexpose, ports."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from sietch.cli._common import (
    JsonOption,
    LabelOption,
    age,
    api_errors,
    err,
    fail,
    listing_table,
    out,
    parse_pairs,
    print_json,
    print_listing,
)
from sietch.cli.lifecycle import (
    AutoResumeOption,
    IdleTimeoutOption,
    OnIdleOption,
    OnTimeoutOption,
)
from sietch.client import Client, Sandbox, SandboxInfo
from sietch.errors import SietchError

sandbox_app = typer.Typer()

InternetOption = Annotated[
    bool | None,
    typer.Option(
        "--internet/--no-internet", help="Reach public internet addresses [server default: on]."
    ),
]
AllowOption = Annotated[
    list[str] | None,
    typer.Option("--allow", help="A CIDR or domain reachable either way; repeat for more."),
]

_STATE_STYLE = {"running": "green", "creating": "yellow", "paused": "blue", "dead": "red",
                "hibernated": "cyan"}  # fmt: skip


@sandbox_app.command()
def create(  # noqa: PLR0917 - typer passes options by name
    image: Annotated[str | None, typer.Option(help="Image name [server default].")] = None,
    vcpus: Annotated[int | None, typer.Option(help="Virtual CPUs.")] = None,
    memory: Annotated[int | None, typer.Option("--memory", help="Memory in MiB.")] = None,
    disk: Annotated[int | None, typer.Option("--disk", help="Disk in MiB.")] = None,
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE.")] = None,
    label: LabelOption = None,
    timeout: Annotated[
        float | None, typer.Option(help="Seconds until --on-timeout (delete by default).")
    ] = None,
    on_timeout: OnTimeoutOption = None,
    idle_timeout: IdleTimeoutOption = None,
    on_idle: OnIdleOption = None,
    auto_resume: AutoResumeOption = None,
    template: Annotated[
        bool, typer.Option(help="Restore the image's warm template; --no-template cold-boots.")
    ] = True,
    internet: InternetOption = None,
    allow: AllowOption = None,
    as_json: JsonOption = False,
) -> None:
    """Boot a sandbox and print its id."""
    with api_errors(), err.status("Booting sandbox…"):
        sb = Sandbox.create(
            image,
            vcpus=vcpus,
            memory_mib=memory,
            disk_mib=disk,
            env=parse_pairs(env, "--env"),
            labels=parse_pairs(label, "--label"),
            timeout_s=timeout,
            on_timeout=on_timeout,
            idle_timeout_s=idle_timeout,
            on_idle=on_idle,
            auto_resume=auto_resume,
            template="auto" if template else None,
            internet=internet,
            allow=allow,
            keep=True,
        )
    sb.close()
    if as_json:
        print_json(sb.info)
    else:
        out.print(sb.id)


@sandbox_app.command("ls")
def list_sandboxes(
    label: LabelOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only print ids.")] = False,
    as_json: JsonOption = False,
) -> None:
    """List sandboxes (dead ones too), optionally only those with all given labels."""
    with api_errors():
        infos = Sandbox.list(parse_pairs(label, "--label"))
    print_listing(infos, _table, as_json=as_json, quiet=quiet)


def _table(infos: list[SandboxInfo]) -> Table:
    table = listing_table("ID", "STATE", "IMAGE", "VCPUS", "MEMORY", "AGE", "LABELS")
    for i in infos:
        state = f"[{_STATE_STYLE.get(i.state, 'white')}]{i.state}[/]"
        labels = ",".join(f"{k}={v}" for k, v in i.labels.items())
        table.add_row(
            i.id, state, i.image, str(i.vcpus), f"{i.memory_mib}M", age(i.created_at), labels
        )
    return table


@sandbox_app.command()
def info(
    sandbox_id: Annotated[
        str | None, typer.Argument(help="A sandbox id; without one, the server's info.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Show a sandbox's details, or the server's version, accelerator and limits."""
    with api_errors(), Client() as client:
        record = (
            client.info() if sandbox_id is None else Sandbox.connect(sandbox_id, client=client).info
        )
    if as_json:
        print_json(record)
        return
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in record.model_dump().items():
        if key == "ports":
            text = ", ".join(f"{p['guest_port']}->{p['host']}:{p['host_port']}" for p in value)
            text = text or "-"
        elif isinstance(value, dict):
            text = ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
        else:
            text = "-" if value is None else str(value)
        table.add_row(key, text)
    out.print(table)


@sandbox_app.command()
def rm(
    sandbox_ids: Annotated[list[str] | None, typer.Argument(help="Sandbox ids.")] = None,
    all_: Annotated[bool, typer.Option("--all", "-a", help="Every sandbox (of --label).")] = False,
    label: LabelOption = None,
) -> None:
    """Delete sandboxes: their VMs stop and their disks are removed."""
    if not sandbox_ids and not all_:
        fail("give sandbox ids, or --all", 2)
    if sandbox_ids and all_:
        fail("give sandbox ids or --all, not both", 2)
    failed = 0
    with api_errors(), Client() as client:
        ids = sandbox_ids or [
            i.id for i in Sandbox.list(parse_pairs(label, "--label"), client=client)
        ]
        for sandbox_id in ids:
            try:
                Sandbox.connect(sandbox_id, client=client).kill()
            except SietchError as exc:
                failed += 1
                err.print(f"[red]{sandbox_id}: {exc.message}[/]")
            else:
                out.print(sandbox_id)
    if failed:
        raise typer.Exit(1)


@sandbox_app.command()
def logs(
    sandbox_id: str,
    limit: Annotated[int, typer.Option(help="Bytes from the end.")] = 256 * 1024,
) -> None:
    """Print the tail of a sandbox's serial console (boot messages, panics)."""
    with api_errors(), Client() as client:
        text = Sandbox.connect(sandbox_id, client=client).logs(limit)
    sys.stdout.write(text)


@sandbox_app.command()
def network(
    sandbox_id: str,
    internet: InternetOption = None,
    allow: AllowOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show a sandbox's egress policy, or replace it when given options."""
    with api_errors(), Client() as client:
        sb = Sandbox.connect(sandbox_id, client=client)
        if internet is None and allow is None:
            policy = sb.info.network
        else:
            policy = sb.set_network(
                internet=True if internet is None else internet, allow=allow or []
            )
    if as_json:
        print_json(policy)
        return
    out.print(f"internet: {'on' if policy.internet else 'off'}")
    out.print(f"allow:    {', '.join(policy.allow) or '-'}")


PortArgument = Annotated[int, typer.Argument(help="A TCP port in the sandbox.")]


@sandbox_app.command()
def expose(sandbox_id: str, port: PortArgument, as_json: JsonOption = False) -> None:
    """Reach a port of the sandbox from this host; prints host:port (the same if run again)."""
    with api_errors(), Client() as client:
        mapping = Sandbox.connect(sandbox_id, client=client).expose(port)
    if as_json:
        print_json(mapping)
    else:
        out.print(f"{mapping.host}:{mapping.host_port}")


@sandbox_app.command()
def unexpose(sandbox_id: str, port: PortArgument) -> None:
    """Close the host side of an exposed port."""
    with api_errors(), Client() as client:
        Sandbox.connect(sandbox_id, client=client).unexpose(port)


@sandbox_app.command()
def ports(sandbox_id: str, as_json: JsonOption = False) -> None:
    """List a sandbox's exposed ports and where this host reaches them."""
    with api_errors(), Client() as client:
        mappings = Sandbox.connect(sandbox_id, client=client).ports()
    if as_json:
        print_json(mappings)
        return
    table = listing_table("PORT", "HOST ADDRESS")
    for m in mappings:
        table.add_row(str(m.guest_port), f"{m.host}:{m.host_port}")
    out.print(table)
