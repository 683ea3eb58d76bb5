"""Incremental snapshots: a snapshot of a restored sandbox stores what changed, restores
with everything intact, and outlives the snapshots it came from."""

from __future__ import annotations

import os

import pytest

from sietch.core.live import LiveSandbox
from sietch.core.manager import Manager
from sietch.vmm import dirty
from tests.snapshots.conftest import Tracker
from tests.snapshots.test_snapshots import COUNTER, count, counting

MiB = 1024 * 1024
WRITE = "head -c {mib}M /dev/urandom > /dev/shm/data-{n} && md5sum /dev/shm/data-{n}"


def used(manager: Manager) -> int:
    """Bytes in use on the filesystem of the snapshots (reflinked extents count once)."""
    st = os.statvfs(manager.snapshots.dir)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


async def write_memory(sb: LiveSandbox, n: int, mib: int) -> bytes:
    """``mib`` MiB of fresh random data in the guest's RAM (tmpfs); returns its md5sum line."""
    result = await sb.exec(["sh", "-c", WRITE.format(n=n, mib=mib)])
    assert result.exit_code == 0, result.stderr
    return result.stdout


async def intact(sb: LiveSandbox, sums: list[bytes], files: int) -> None:
    """The RAM data, the files and the counting background process all survived."""
    for n, line in enumerate(sums):
        assert (await sb.exec(["md5sum", f"/dev/shm/data-{n}"])).stdout == line
    for n in range(files):
        assert await sb.read_bytes(f"/root/gen{n}") == str(n).encode()
    first = await count(sb)
    assert await counting(sb, first) > first, "the background process stopped"


async def test_snapshot_of_a_template_sandbox_stores_what_was_written(
    track: Tracker, manager: Manager
) -> None:
    """A template-created sandbox's snapshot takes the device format, its disk use grows
    with the 64 MiB written rather than the 512 MiB guest, and it restores intact."""
    if not manager.snapshots.reflink:
        pytest.skip("needs a filesystem that reflinks (as root: the XFS image)")
    sb = await track.create()
    if sb.info.snapshot_id is None:  # that create made the template
        sb = await track.create()
    assert not sb.machine.config.memory_shared, "not a copy-on-write restore"
    await sb.write_file("/root/gen0", b"0")
    await sb.start_background(["sh", "-c", COUNTER])
    sums = [await write_memory(sb, 0, 64)]
    await counting(sb, 2)
    before = used(manager)
    snap = await track.snapshot(sb)
    grown = used(manager) - before
    assert snap.state_format == "devices" and not snap.ram_in_stream
    assert snap.standalone
    assert 56 * MiB < grown < (64 + 48) * MiB, f"the snapshot took {grown / MiB:.0f} MiB"
    await intact(await track.restore(snap), sums, 1)


async def test_third_generation_outlives_its_parent_and_grandparent(
    track: Tracker, manager: Manager
) -> None:
    """Snapshot, restore, write, three generations deep: with the first two snapshots and
    their sandboxes deleted, the third still restores with every generation's data."""
    sb = await track.create()
    await sb.start_background(["sh", "-c", COUNTER])
    sums: list[bytes] = []
    snaps = []
    for n in range(3):
        await sb.write_file(f"/root/gen{n}", str(n).encode())
        sums.append(await write_memory(sb, n, 16))
        await counting(sb, 2)
        snaps.append(await track.snapshot(sb, name=f"generation {n}"))
        sb = await track.restore(snaps[-1])
        await intact(sb, sums, n + 1)
    assert [s.parent_id for s in snaps[1:]] == [s.id for s in snaps[:-1]]
    assert all(s.state_format == "devices" and s.standalone for s in snaps)
    for sandbox_id in track.sandbox_ids:
        await manager.delete(sandbox_id)
    track.sandbox_ids.clear()
    for old in snaps[:2]:
        await manager.delete_snapshot(old.id)
        assert not (manager.snapshots.dir / old.id).exists()
    await intact(await track.restore(snaps[2]), sums, 3)


async def test_unreadable_memory_falls_back_to_qemu_writing_the_ram(
    track: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where QEMU's memory can't be read (as under a strict ptrace scope) QEMU writes a
    restored sandbox's whole RAM into its snapshot, which restores intact."""

    def refused(pid: int, ram: object, dest: object) -> int:
        raise PermissionError(1, "Operation not permitted", f"/proc/{pid}/mem")

    sb = await track.create()
    sb = await track.restore(await track.snapshot(sb))  # certainly a private mapping
    await sb.write_file("/root/gen0", b"0")
    await sb.start_background(["sh", "-c", COUNTER])
    sums = [await write_memory(sb, 0, 8)]
    monkeypatch.setattr(dirty, "copy_written", refused)
    snap = await track.snapshot(sb)
    monkeypatch.undo()
    assert snap.state_format == "devices" and not snap.ram_in_stream
    memory = track.m.snapshots.dir / snap.id / "memory"
    assert memory.stat().st_blocks * 512 >= 512 * MiB, "not the whole RAM: not the fallback"
    await intact(await track.restore(snap), sums, 1)
