"""Files in and out of a real microVM, streamed, with clear errors."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator

import pytest

from sietch.core.live import LiveSandbox
from sietch.errors import FileNotFound, InvalidArgument, PermissionDenied

MiB = 1024 * 1024


async def _random_chunks(total: int, digest: hashlib._Hash) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        chunk = os.urandom(min(MiB, total - sent))
        digest.update(chunk)
        sent += len(chunk)
        yield chunk


async def test_hundred_mib_up_and_down(shared: LiveSandbox) -> None:
    """100 MiB uploaded and downloaded again hash the same, inside and outside."""
    up = hashlib.sha256()
    size = await shared.write_file("/tmp/big.bin", _random_chunks(100 * MiB, up))
    assert size == 100 * MiB
    guest = await shared.exec(["sha256sum", "/tmp/big.bin"])
    assert guest.stdout.split()[0].decode() == up.hexdigest()
    down = hashlib.sha256()
    received = 0
    async for chunk in shared.read_file("/tmp/big.bin"):
        down.update(chunk)
        received += len(chunk)
    assert received == 100 * MiB
    assert down.hexdigest() == up.hexdigest()
    await shared.remove("/tmp/big.bin")


async def test_write_creates_parents_and_lists(shared: LiveSandbox) -> None:
    """Writing creates parent directories; listing and stat show the result."""
    await shared.write_file("/srv/data/a/one.txt", b"1")
    await shared.write_file("/srv/data/two.txt", b"22", mode=0o600)
    entries = {e.name: e for e in await shared.list_dir("/srv/data")}
    assert set(entries) == {"a", "two.txt"}
    assert entries["a"].type == "dir"
    assert (entries["two.txt"].type, entries["two.txt"].size) == ("file", 2)
    assert (await shared.stat("/srv/data/two.txt")).mode & 0o777 == 0o600
    assert await shared.read_bytes("/srv/data/a/one.txt") == b"1"


async def test_mkdir_rename_remove(shared: LiveSandbox) -> None:
    """mkdir -p, rename and recursive remove work on the guest's filesystem."""
    await shared.mkdir("/srv/m/x/y")
    await shared.rename("/srv/m/x", "/srv/m/z")
    assert [e.name for e in await shared.list_dir("/srv/m")] == ["z"]
    await shared.remove("/srv/m", recursive=True)
    with pytest.raises(FileNotFound):
        await shared.stat("/srv/m")


async def test_missing_path_errors_name_the_path(shared: LiveSandbox) -> None:
    """Reading, listing or removing a missing path raises FileNotFound naming it."""
    with pytest.raises(FileNotFound, match="/nope/file"):
        await shared.read_bytes("/nope/file")
    with pytest.raises(FileNotFound, match="/nope"):
        await shared.list_dir("/nope")
    with pytest.raises(FileNotFound):
        await shared.remove("/nope/file")


async def test_paths_outside_the_users_reach(shared: LiveSandbox) -> None:
    """The agent's own files and kernel interfaces are off limits; paths must be absolute."""
    with pytest.raises(PermissionDenied):
        await shared.write_file("/run/sietch/agent/evil.py", b"x")
    with pytest.raises(PermissionDenied):
        await shared.write_file("/proc/sys/kernel/hostname", b"x")
    with pytest.raises(InvalidArgument):
        await shared.read_bytes("relative/path")
