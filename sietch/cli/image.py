"""``sietch image``: build and list the guest images (kernel, initramfs, tools disk, root images).

These run on the host, not through the server: images are built before the
server starts (``bootstrap.sh``), into the cache directory the server reads.
So they need the server extra, and import the image code only when they run.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from sietch.cli._common import (
    JsonOption,
    age,
    api_errors,
    err,
    fail,
    listing_table,
    out,
    print_json,
    server_side,
)
from sietch.cli.build import TagOption, progress_printer
from sietch.client import Client

if TYPE_CHECKING:
    from sietch.config import Settings
    from sietch.images import ImageInfo, ImageStore

image_app = typer.Typer(
    help=(
        "Images: 'image build' builds the built-in ones on this host (before any server "
        "runs); ls, inspect, rm, prune and import talk to the server. User images from a "
        "Dockerfile: 'sietch build'."
    ),
    no_args_is_help=True,
)


def _settings() -> Settings:
    with server_side("sietch image"):
        from sietch.config import get_settings
    return get_settings()


def _store() -> ImageStore:
    with server_side("sietch image"):
        from sietch.images import ImageStore
    return ImageStore(_settings().cache_dir)


def _as_json(info: ImageInfo) -> dict[str, Any]:
    return {
        **dataclasses.asdict(info),
        "path": str(info.path),
        "created_at": info.created_at.isoformat(),
    }


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


@image_app.command("build")
def build(
    names: Annotated[
        list[str] | None, typer.Argument(help="Images to build (default: the configured one).")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Build every known image.")] = False,
    json: JsonOption = False,
) -> None:
    """Build the built-in images on this host (kernel, initramfs, tools disk, rootfs); cached
    by content hash. User images from a Dockerfile: 'sietch build' (through the server)."""
    store = _store()
    if all_ and names:
        fail("give image names or --all, not both", 2)
    wanted = store.names() if all_ else names or [_settings().default_image]
    built = []
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
    )
    with api_errors(), Progress(*columns, console=err, transient=True) as bar:
        for name in wanted:
            task = bar.add_task(name, total=1.0)

            def show(stage: str, fraction: float | None, task: TaskID = task) -> None:
                bar.update(task, description=stage, completed=fraction or 0.0)

            built.append(store.build(name, progress=show))
            bar.update(task, completed=1.0)
    if json:
        print_json([_as_json(i) for i in built])
        return
    for info in built:
        out.print(f"{info.name}\t{info.hash}\t{info.path}")


@image_app.command("ls")
def ls(
    local: Annotated[
        bool, typer.Option("--local", help="The built-in images in this host's cache, offline.")
    ] = False,
    json: JsonOption = False,
) -> None:
    """List the server's images (built-in and users'); --local: this host's image cache."""
    if not local:
        with api_errors(), Client() as client:
            images = client.images.list()
        if json:
            print_json(images)
            return
        table = listing_table("NAME", "SOURCE", "BASE", "SIZE", "DISK", "CREATED", "USED BY")
        for image in images:
            table.add_row(
                image.name,
                image.source,
                image.base or "",
                _size(image.size_bytes),
                f"{image.disk_mib} MiB",
                f"{age(image.created_at)} ago",
                str(len(image.users)),
            )
        out.print(table)
        return
    with api_errors():
        found = _store().list()
    if json:
        print_json([_as_json(i) for i in found])
        return
    table = Table("NAME", "HASH", "SIZE", "ON DISK", "CREATED", "STATUS", box=None)
    for i in found:
        table.add_row(
            i.name,
            i.hash,
            _size(i.size_bytes),
            _size(i.disk_bytes),
            f"{age(i.created_at)} ago",
            "current" if i.current else "[dim]stale[/]",
        )
    out.print(table)


@image_app.command("inspect")
def inspect(name: str) -> None:
    """An image as JSON: config (env, user, workdir, start, expose), steps, users."""
    with api_errors(), Client() as client:
        print_json(client.images.get(name))


@image_app.command("rm")
def rm(names: Annotated[list[str], typer.Argument(help="User images to remove.")]) -> None:
    """Remove user images (refused while sandboxes or snapshots use one)."""
    with api_errors(), Client() as client:
        for name in names:
            client.images.delete(name)
            out.print(name)


@image_app.command("prune")
def prune() -> None:
    """Delete the server's cached build layers that no image needs."""
    with api_errors(), Client() as client, err.status("Pruning…"):
        removed = client.images.prune()
    out.print(f"{len(removed)} layers removed")


@image_app.command("import")
def import_(
    archive: Annotated[Path, typer.Argument(help="A docker save tarball or OCI layout (tar).")],
    tag: TagOption,
    json: JsonOption = False,
) -> None:
    """Import an OCI image archive through the server (like docker load)."""
    with api_errors(), Client() as client, err.status("Importing…") as status:
        image = client.images.import_image(tag, archive, on_event=progress_printer(status))
    print_json(image) if json else out.print(image.name)
