"""``sietch image``: build and list the guest images (kernel, initramfs, tools disk, root images).

These run on the host, not through the server: images are built before the
server starts (``bootstrap.sh``), into the cache directory the server reads.
So they need the server extra, and import the image code only when they run.
"""

from __future__ import annotations

import dataclasses
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
    out,
    print_json,
    server_side,
)

if TYPE_CHECKING:
    from sietch.config import Settings
    from sietch.images import ImageInfo, ImageStore

image_app = typer.Typer(
    help="Build and list guest images (kernel, initramfs, tools disk, root filesystems).",
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
    """Build what is missing (cached by content hash: instant when nothing changed)."""
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
def ls(json: JsonOption = False) -> None:
    """List the built root images (older builds of a recipe are marked stale)."""
    with api_errors():
        images = _store().list()
    if json:
        print_json([_as_json(i) for i in images])
        return
    table = Table("NAME", "HASH", "SIZE", "ON DISK", "CREATED", "STATUS", box=None)
    for i in images:
        table.add_row(
            i.name,
            i.hash,
            _size(i.size_bytes),
            _size(i.disk_bytes),
            f"{age(i.created_at)} ago",
            "current" if i.current else "[dim]stale[/]",
        )
    out.print(table)
