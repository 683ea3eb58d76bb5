"""What the builder does inside a build sandbox besides RUN: files in, directories, users.

Everything runs on the tools disk's python (``/run/sietch/bin/sietch-python``),
so it works in an image without python, tar or even a shell.
"""

from __future__ import annotations

import asyncio
import posixpath
import tarfile
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

from sietch.builder import safetar
from sietch.builder.context import Context, Source
from sietch.core.images import TOOLS_PYTHON
from sietch.core.live import LiveSandbox
from sietch.errors import ImageBuildError, InvalidArgument, SietchError

_HELPER = """
import os, sys, tarfile
op = sys.argv[1]
if op == "extract":
    with tarfile.open(sys.argv[2], "r:") as tar:
        tar.extractall("/", numeric_owner=True)
    os.unlink(sys.argv[2])
elif op == "mkdir":
    path, uid, gid = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    if not os.path.isdir(path):
        os.makedirs(path)
        os.chown(path, uid, gid)
elif op == "isdir":
    sys.exit(0 if os.path.isdir(sys.argv[2]) else 1)
"""
_UPLOAD = "/tmp/.sietch-build-copy.tar"


async def helper(sb: LiveSandbox, *args: str) -> int:
    result = await sb.exec([TOOLS_PYTHON, "-c", _HELPER, *args], user="root", cwd="/")
    if result.exit_code not in (0, 1):
        raise ImageBuildError(
            f"the build helper failed ({' '.join(args[:2])})",
            output=(result.stdout + result.stderr).decode(errors="replace")[-4000:],
        )
    return result.exit_code or 0


def _table(text: str) -> dict[str, tuple[int, int]]:
    out = {}
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and fields[2].isdigit():
            out[fields[0]] = (int(fields[2]), int(fields[3]) if fields[3].isdigit() else 0)
    return out


async def ids(sb: LiveSandbox, spec: str | None, line: int) -> tuple[int, int]:
    """``user[:group]`` (names or numbers) as the image's /etc/passwd and /etc/group say."""
    if not spec:
        return 0, 0
    user, _, group = spec.partition(":")

    async def table(path: str) -> dict[str, tuple[int, int]]:
        try:
            return _table((await sb.read_bytes(path)).decode(errors="replace"))
        except SietchError:
            return {}

    users = await table("/etc/passwd") if not user.isdigit() else {}
    if not user.isdigit() and user not in users:
        raise InvalidArgument(f"Dockerfile line {line}: no user {user!r} in the image", line=line)
    uid, gid = (int(user), int(user)) if user.isdigit() else users[user]
    if group:
        groups = await table("/etc/group") if not group.isdigit() else {}
        if not group.isdigit() and group not in groups:
            raise InvalidArgument(
                f"Dockerfile line {line}: no group {group!r} in the image", line=line
            )
        gid = int(group) if group.isdigit() else groups[group][0]
    return uid, gid


def copy_tar(
    context: Context,
    sources: Iterable[Source],
    dest: str,
    *,
    owner: tuple[int, int] | None,
    chmod: int | None,
    dest_is_dir: bool,
    unpack: bool,
    out: Path,
) -> None:
    """The tar that puts ``sources`` at ``dest`` as COPY/ADD do (``unpack``: ADD's local
    archives are unpacked into ``dest``)."""
    root = dest.strip("/")

    def place(info: tarfile.TarInfo, rel: str) -> tarfile.TarInfo:
        info.name = posixpath.join(root, rel) if rel else root
        info.uname = info.gname = ""
        if owner is not None:
            info.uid, info.gid = owner
        if chmod is not None and not info.issym():
            info.mode = chmod
        return info

    with tarfile.open(out, "w:", format=tarfile.PAX_FORMAT) as tar:
        for source in sources:
            if unpack and source.path.is_file() and tarfile.is_tarfile(source.path):
                with tarfile.open(source.path, "r:*") as archive:
                    for member in safetar.members(archive):
                        data = archive.extractfile(member) if member.isfile() else None
                        tar.addfile(place(member, member.name), data)
                continue
            is_dir = source.path.is_dir() and not source.path.is_symlink()
            for rel, path in context.files(source):
                target = rel if is_dir else (rel if dest_is_dir else "")
                info = place(tar.gettarinfo(str(path), arcname="x"), target)
                if info.isfile():
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)


async def upload(sb: LiveSandbox, tar_path: Path) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        f = await asyncio.to_thread(open, tar_path, "rb")
        try:
            while chunk := await asyncio.to_thread(f.read, 1 << 20):
                yield chunk
        finally:
            f.close()

    await sb.write_file(_UPLOAD, chunks(), mode=0o600)
    await helper(sb, "extract", _UPLOAD)


def check_sources(sources: list[Source], dest: str, line: int) -> None:
    if len(sources) > 1 and not dest.endswith("/"):
        raise InvalidArgument(
            f"Dockerfile line {line}: with several sources the destination must end with /",
            line=line,
        )
