"""Files copied between machines (a snapshot's directory, a user image's layers): a tar
stream of them, and the SHA-256 of every file as its last member (``SHA256SUMS``), so the
receiver checks what it wrote, file by file, in the one pass that writes it.

The sender reads the files as they are (snapshots and layers never change once
published); the receiver extracts into a temp directory (a snapshot's: ``.tmp-<id>`` in
its snapshots directory, swept on start if a copy dies half way) and publishes it only
once every checksum matched (:meth:`sietch.core.snapshots.Snapshots.adopt`; an image's:
:mod:`sietch.builder.copy`). The cluster's nodes use it through their internal port
(``sietch.server.routes.internal``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import queue
import shutil
import tarfile
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from sietch.core.models import SnapshotInfo
from sietch.core.snapshots import Snapshots
from sietch.errors import InvalidArgument, SietchError

SUMS = "SHA256SUMS"
_CHUNK = 1024 * 1024


class _Pipe(io.RawIOBase):
    """A file the tar writer writes to, read as chunks by the streaming response."""

    def __init__(self) -> None:
        self.chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=8)
        self.abandoned = False
        """The reader went away (the receiver hung up): stop writing."""

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if self.abandoned:
            raise BrokenPipeError("the snapshot copy's receiver went away")
        self.chunks.put(bytes(data))
        return len(data)


Files = list[tuple[str, Path | bytes]]
"""What a stream carries: (its name in the stream, a file here or the bytes themselves)."""


def _write_tar(files: Files, pipe: _Pipe) -> None:
    sums = []
    try:
        with tarfile.open(fileobj=pipe, mode="w|", bufsize=_CHUNK) as tar:
            for name, path in files:
                digest = hashlib.sha256()
                if isinstance(path, bytes):
                    digest.update(path)
                    tar.addfile(_member(name, len(path)), io.BytesIO(path))
                else:
                    info = tar.gettarinfo(str(path), arcname=name)
                    with open(path, "rb") as f:
                        tar.addfile(info, _Hashing(f, digest))
                sums.append(f"{digest.hexdigest()}  {name}\n")
            body = "".join(sums).encode()
            tar.addfile(_member(SUMS, len(body)), io.BytesIO(body))
        pipe.chunks.put(None)
    except BaseException as exc:  # the reader raises it: a cut stream, never a short one
        pipe.chunks.put(exc)


def _member(name: str, size: int) -> tarfile.TarInfo:
    entry = tarfile.TarInfo(name)
    entry.size, entry.mode = size, 0o644
    return entry


class _Hashing(io.RawIOBase):
    """A file read through a hash."""

    def __init__(self, f: io.BufferedReader, digest: hashlib._Hash) -> None:
        self.f = f
        self.digest = digest

    def read(self, size: int = -1) -> bytes:
        data = self.f.read(size)
        self.digest.update(data)
        return data


async def export_snapshot(snapshots: Snapshots, snap: SnapshotInfo) -> AsyncIterator[bytes]:
    """The snapshot's directory as a tar stream with its checksums."""
    root = snapshots.dir / snap.id
    if not (root / "snapshot.json").exists():
        raise InvalidArgument(f"snapshot {snap.id} has no files to copy here")
    files: Files = [
        (p.relative_to(root).as_posix(), p) for p in sorted(root.rglob("*")) if p.is_file()
    ]
    async for chunk in export_files(files, f"snapshot {snap.id}"):
        yield chunk


async def export_files(files: Files, what: str) -> AsyncIterator[bytes]:
    """``files`` as a tar stream with their checksums."""
    pipe = _Pipe()
    writer = threading.Thread(target=_write_tar, args=(files, pipe), daemon=True)
    writer.start()
    try:
        while True:
            chunk = await asyncio.to_thread(pipe.chunks.get)
            if chunk is None:
                return
            if isinstance(chunk, BaseException):
                raise SietchError(f"reading {what} failed: {chunk}") from chunk
            yield chunk
    finally:
        pipe.abandoned = True
        with contextlib.suppress(queue.Empty):  # unblock a writer waiting to put
            while True:
                pipe.chunks.get_nowait()


class _Feed(io.RawIOBase):
    """The tar reader's input: chunks handed over by the receiving coroutine."""

    def __init__(self) -> None:
        self.chunks: queue.Queue[bytes] = queue.Queue(maxsize=8)
        self.pending = b""
        self.ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self.pending:
            self.pending = self.chunks.get()
            if not self.pending:
                self.ended = True
                return 0
        n = min(len(buffer), len(self.pending))
        buffer[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n


def _extract(feed: _Feed, tmp: Path) -> None:
    """Write the members under ``tmp``, hashing each; check them against SHA256SUMS."""
    got: dict[str, str] = {}
    sums: str | None = None
    with tarfile.open(fileobj=feed, mode="r|", bufsize=_CHUNK) as tar:
        for member in tar:
            source = tar.extractfile(member)
            if source is None or not member.isfile():
                raise InvalidArgument(f"a snapshot copy holds only files, not {member.name!r}")
            if member.name == SUMS:
                sums = source.read().decode()
                continue
            target = (tmp / member.name).resolve()
            if not target.is_relative_to(tmp.resolve()):
                raise InvalidArgument(f"a snapshot copy names a path outside it: {member.name}")
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            with open(target, "wb") as out:
                while block := source.read(_CHUNK):
                    digest.update(block)
                    out.write(block)
            os.chmod(target, member.mode & 0o777)
            got[member.name] = digest.hexdigest()
    if sums is None:
        raise InvalidArgument("the snapshot copy ended before its checksums: cut short")
    expected = {name: digest for digest, name in (ln.split("  ", 1) for ln in sums.splitlines())}
    if expected != got:
        bad = sorted(k for k in expected.keys() | got.keys() if expected.get(k) != got.get(k))
        raise InvalidArgument(f"the snapshot copy does not match its checksums: {bad}")


async def import_snapshot(
    snapshots: Snapshots,
    snapshot_id: str,
    chunks: AsyncIterator[bytes],
    prepare: Callable[[Path], Awaitable[None]] | None = None,
) -> SnapshotInfo:
    """Receive a snapshot exported by :func:`export_snapshot`, check it, publish it;
    ``prepare`` sees the checked directory first (what its disk needs, made ready)."""
    tmp = snapshots.dir / f".tmp-{snapshot_id}"
    try:
        await receive(tmp, chunks)
        if prepare is not None:
            await prepare(tmp)
        return await asyncio.to_thread(snapshots.adopt, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fresh(tmp: Path) -> None:
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()


async def receive(tmp: Path, chunks: AsyncIterator[bytes]) -> None:
    """Extract a stream of :func:`export_files` into ``tmp`` (made afresh), every file
    checked against its checksum; what to do with them is the caller's."""
    await asyncio.to_thread(_fresh, tmp)
    feed = _Feed()
    done: list[BaseException | None] = []

    def extract() -> None:
        try:
            _extract(feed, tmp)
            done.append(None)
        except BaseException as exc:
            done.append(exc)
        finally:
            # Take what the sender still hands over (a tar's end padding, or the rest of
            # a refused copy), so it never blocks on a full queue.
            while not feed.ended and feed.chunks.get():
                pass

    worker = threading.Thread(target=extract, daemon=True)
    worker.start()
    try:
        async for chunk in chunks:
            if chunk:
                await asyncio.to_thread(feed.chunks.put, chunk)
    finally:
        await asyncio.to_thread(feed.chunks.put, b"")
        await asyncio.to_thread(worker.join)
    if done[0] is not None:
        raise done[0]
