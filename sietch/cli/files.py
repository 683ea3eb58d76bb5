"""``sietch cp``: copy files between this machine and a sandbox (``sandbox_id:/path``)."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Annotated

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TransferSpeedColumn,
)

from sietch.cli._common import api_errors, err, fail
from sietch.client import Sandbox

files_app = typer.Typer()

_REMOTE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]*):(.*)$")
CHUNK = 256 * 1024


def split_remote(spec: str) -> tuple[str, str] | None:
    """``sb-123:/path`` -> (id, path); None for a local path (write ``./a:b`` for odd names)."""
    match = _REMOTE.match(spec)
    if match is None or not match.group(2):
        return None
    return match.group(1), match.group(2)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err,
        disable=not err.is_terminal,
        transient=True,
    )


def _reading(f: IO[bytes], progress: Progress, task: int) -> Iterator[bytes]:
    while chunk := f.read(CHUNK):
        progress.advance(task, len(chunk))  # type: ignore[arg-type]
        yield chunk


@files_app.command()
def cp(
    src: Annotated[str, typer.Argument(help="A local path, '-' (stdin) or SANDBOX:/path.")],
    dst: Annotated[str, typer.Argument(help="A local path, '-' (stdout) or SANDBOX:/path.")],
) -> None:
    """Copy a file into or out of a sandbox."""
    src_remote, dst_remote = split_remote(src), split_remote(dst)
    if (src_remote is None) == (dst_remote is None):
        fail("exactly one of SRC and DST must be SANDBOX:/path", 2)
    with api_errors():
        if dst_remote is not None:
            _upload(src, *dst_remote)
        else:
            assert src_remote is not None
            _download(*src_remote, dst)


def _upload(local: str, sandbox_id: str, remote: str) -> None:
    if local != "-" and Path(local).is_dir():
        fail(f"{local} is a directory; copy files one by one (or a tar archive)", 2)
    if remote.endswith("/") and local != "-":
        remote += Path(local).name
    with Sandbox.connect(sandbox_id) as sb:
        if local == "-":
            written = sb.files.write(remote, sys.stdin.buffer)
        else:
            try:
                f = open(local, "rb")  # noqa: SIM115 - closed below, after the upload
            except OSError as exc:
                fail(f"cannot read {local}: {exc.strerror}")
            with f, _progress() as progress:
                task = progress.add_task(Path(local).name, total=os.fstat(f.fileno()).st_size)
                written = sb.files.write(remote, _reading(f, progress, task))
    if local != "-":
        err.print(f"{local} -> {sandbox_id}:{written.path} ({written.size} bytes)")


def _download(sandbox_id: str, remote: str, local: str) -> None:
    with Sandbox.connect(sandbox_id) as sb:
        info = sb.files.stat(remote)
        if info.is_dir:
            fail(f"{sandbox_id}:{remote} is a directory; copy files one by one", 2)
        if local == "-":
            sb.files.download(remote, sys.stdout.buffer)
            sys.stdout.flush()
            return
        target = Path(local)
        if target.is_dir():
            target /= Path(remote).name
        partial = target.with_name(f".{target.name}.part")
        try:
            with open(partial, "wb") as f, _progress() as progress:
                task = progress.add_task(target.name, total=info.size)
                for chunk in sb.files.iter_bytes(remote):
                    f.write(chunk)
                    progress.advance(task, len(chunk))
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(target)  # never leave a half-written file under the real name
    err.print(f"{sandbox_id}:{remote} -> {target} ({info.size} bytes)")
