"""Extracting untrusted tar archives (build contexts, OCI layers) without escaping the target.

Refused, with an error naming the member: absolute paths, ``..`` components,
links that point outside the target, device files and FIFOs, and archives that
unpack to more than ``max_bytes`` or ``max_members`` (tar bombs). Nothing is
written outside ``dest``: every path is checked before anything of it is made,
and parents that are symlinks are never followed (an earlier member could
have planted one).
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from sietch.errors import InvalidArgument

MAX_BYTES = 16 << 30
MAX_MEMBERS = 1_000_000


def clean_name(name: str) -> str:
    """The member's path relative to the root; InvalidArgument if it is absolute or climbs."""
    if name.startswith("/"):
        raise InvalidArgument(f"archive member {name!r}: absolute path", member=name)
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidArgument(f"archive member {name!r}: '..' in its path", member=name)
    return "/".join(parts)


def members(
    tar: tarfile.TarFile, *, max_bytes: int = MAX_BYTES, max_members: int = MAX_MEMBERS
) -> Iterator[tarfile.TarInfo]:
    """The archive's members, checked one by one as they stream (names cleaned in place)."""
    total = 0
    for count, member in enumerate(tar, 1):
        total += member.size
        if count > max_members or total > max_bytes:
            raise InvalidArgument(
                f"the archive unpacks to more than {max_bytes >> 20} MiB or {max_members} "
                "files: refused",
                member=member.name,
            )
        if member.ischr() or member.isblk() or member.isfifo():
            raise InvalidArgument(
                f"archive member {member.name!r}: device files and FIFOs are not allowed",
                member=member.name,
            )
        if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
            raise InvalidArgument(f"archive member {member.name!r}: unsupported type")
        member.name = clean_name(member.name)
        if member.islnk():
            member.linkname = clean_name(member.linkname)
        if member.issym() and not member.linkname.startswith("/"):
            target = posixpath.normpath(
                posixpath.join(posixpath.dirname(member.name), member.linkname)
            )
            if target == ".." or target.startswith("../"):
                raise InvalidArgument(
                    f"archive member {member.name!r}: its link leaves the archive",
                    member=member.name,
                )
        yield member


def _no_symlink_parents(dest: Path, rel: str) -> Path:
    """``dest/rel`` after checking that no parent inside ``dest`` is a symlink."""
    path = dest
    parts = rel.split("/") if rel else []
    for part in parts[:-1]:
        path = path / part
        if path.is_symlink():
            raise InvalidArgument(f"archive member {rel!r} goes through a symlink", member=rel)
    return dest / rel if rel else dest


def extract(
    fileobj: IO[bytes],
    dest: Path,
    *,
    owners: bool = False,
    hook: Callable[[tarfile.TarInfo, Path], bool] | None = None,
    max_bytes: int = MAX_BYTES,
) -> None:
    """Unpack a tar stream into ``dest``. ``owners``: keep uid/gid (as root);
    ``hook(member, path)`` returns False to skip a member (whiteouts)."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
        for member in members(tar, max_bytes=max_bytes):
            path = _no_symlink_parents(dest, member.name)
            if hook is not None and not hook(member, path):
                continue
            _extract_one(tar, member, path, dest, owners)


def _extract_one(
    tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path, dest: Path, owners: bool
) -> None:
    if member.isdir():
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            path.unlink()
        path.mkdir(parents=True, exist_ok=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
        if member.issym():
            os.symlink(member.linkname, path)
        elif member.islnk():
            source = _no_symlink_parents(dest, member.linkname)
            if source.is_symlink() or not source.is_file():
                raise InvalidArgument(f"archive member {member.name!r}: bad hard link")
            os.link(source, path)
        else:
            stream = tar.extractfile(member)
            assert stream is not None
            with open(path, "xb") as out:
                shutil.copyfileobj(stream, out, 1 << 20)
    if owners:
        os.lchown(path, member.uid, member.gid)
    if not member.issym():
        os.chmod(path, member.mode & 0o7777)
        os.utime(path, (member.mtime, member.mtime))
