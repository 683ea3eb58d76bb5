"""Snapshots on real VMs: backtracking, forks, snapshot trees, guest fix-ups, templates."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from sietch.core.live import LiveSandbox
from sietch.core.manager import Manager
from sietch.errors import Conflict, SandboxNotRunning, SnapshotNotFound
from sietch.storage import cow
from tests.snapshots.conftest import Tracker

COUNTER = "i=0; while :; do i=$((i+1)); echo $i > /dev/shm/count; sleep 0.05; done"


async def count(sb: LiveSandbox, timeout: float = 30.0) -> int:
    """The counter's value. ``echo > file`` truncates before it writes, so a read can fall
    between the two (or before the first write): read again until a number is there."""
    deadline = time.monotonic() + timeout
    while not (out := (await sb.exec(["cat", "/dev/shm/count"])).stdout.strip()):
        assert time.monotonic() < deadline, "the counter never wrote its file"
        await asyncio.sleep(0.05)
    return int(out)


async def counting(sb: LiveSandbox, above: int, timeout: float = 30.0) -> int:
    """Wait until the counter passes ``above`` (retry with a deadline)."""
    deadline = time.monotonic() + timeout
    while (value := await count(sb)) <= above:
        assert time.monotonic() < deadline, f"counter stuck at {value}"
        await asyncio.sleep(0.1)
    return value


async def test_backtrack_restores_files_and_running_processes(track: Tracker) -> None:
    """Two restores both have the old file and the background process counting on from there."""
    sb = await track.create()
    await sb.write_file("/root/state", b"before")
    pid = await sb.start_background(["sh", "-c", COUNTER])
    before = await counting(sb, 3)
    snap = await track.snapshot(sb, name="checkpoint")
    at_snapshot = await count(sb)
    await sb.write_file("/root/state", b"after")
    await sb.signal(pid, "SIGKILL")
    restores = await asyncio.gather(track.restore(snap), track.restore(snap))
    for r in restores:
        assert await r.read_bytes("/root/state") == b"before"
        first = await count(r)
        assert before <= first, "the counter restarted instead of going on"
        assert first < at_snapshot + 1000
        assert await counting(r, first) > first
        assert any(p.pid == pid and p.running for p in await r.processes())
    assert await sb.read_bytes("/root/state") == b"after"


async def test_fork_five_are_isolated(track: Tracker, manager: Manager) -> None:
    """Five forks each keep their own writes; the parent is unchanged; disks hold only changes."""
    parent = await track.create()
    await parent.write_file("/root/who", b"parent")
    forks = await track.fork(parent, 5)
    assert len({f.id for f in forks}) == 5
    await asyncio.gather(
        *(f.write_file("/root/who", f"fork-{i}".encode()) for i, f in enumerate(forks))
    )
    for i, f in enumerate(forks):
        assert await f.read_bytes("/root/who") == f"fork-{i}".encode()
        assert (await f.exec(["ls", "/root"])).stdout == b"who\n"
    assert await parent.read_bytes("/root/who") == b"parent"
    for f in forks:
        # The fork's overlay holds what it changed, not a copy of the image.
        assert cow.disk_usage(f.machine.config.root_disk) < 64 * 1024 * 1024


async def test_three_generations_of_snapshots(track: Tracker) -> None:
    """A snapshot of a restore of a snapshot of a restore restores, with the parent links."""
    sb = await track.create()
    parents: list[str | None] = [sb.info.snapshot_id]
    for level in range(3):
        await sb.write_file(f"/root/level{level}", str(level).encode())
        snap = await track.snapshot(sb, name=f"level {level}")
        assert snap.parent_id == parents[-1]
        parents.append(snap.id)
        sb = await track.restore(snap)
    listing = (await sb.exec(["sh", "-c", "cat /root/level*"])).stdout
    assert listing == b"012"


async def test_restores_get_fresh_clock_entropy_and_mac(track: Tracker) -> None:
    """After restore the clock is the host's (±1 s) and two forks differ in randomness and MAC."""
    sb = await track.create()
    snap = await track.snapshot(sb)
    await asyncio.sleep(3)  # the snapshot's clock is now 3 s behind
    a, b = await asyncio.gather(track.restore(snap), track.restore(snap))
    for r in (a, b):
        guest = float((await r.exec(["date", "+%s.%N"])).stdout)
        assert abs(guest - time.time()) < 1.0
    rand = ["sh", "-c", "head -c 32 /dev/urandom | od -An -tx1"]
    assert (await a.exec(rand)).stdout != (await b.exec(rand)).stdout
    macs = [(await r.exec(["cat", "/sys/class/net/eth0/address"])).stdout.strip() for r in (a, b)]
    assert macs[0] != macs[1]
    assert macs == [r.machine.config.mac.encode() for r in (a, b)]


async def test_pause_stops_the_guest_until_resume(track: Tracker, manager: Manager) -> None:
    """A paused sandbox refuses commands and its processes stand still until resumed."""
    sb = await track.create()
    await sb.start_background(["sh", "-c", COUNTER])
    await counting(sb, 2)
    info = await manager.pause(sb.id)
    assert info.state == "paused"
    with pytest.raises(SandboxNotRunning):
        manager.sandbox(sb.id)
    await asyncio.sleep(0.5)
    info = await manager.resume(sb.id)
    assert info.state == "running"
    frozen = await count(sb)
    assert await counting(sb, frozen) > frozen


async def test_snapshot_of_a_sandbox_whose_vm_just_died_is_refused(track: Tracker) -> None:
    """A snapshot asked for right after the sandbox's QEMU died (its record may not have
    caught up yet) is 409 sandbox_not_running, not a 500 (schemathesis found one)."""
    sb = await track.create()
    assert sb.machine.pid is not None
    os.kill(sb.machine.pid, signal.SIGKILL)
    with pytest.raises(SandboxNotRunning):
        await track.snapshot(sb)


async def test_snapshot_in_use_cannot_be_deleted(track: Tracker, manager: Manager) -> None:
    """Deleting a snapshot a sandbox was restored from is refused until that sandbox is gone."""
    sb = await track.create()
    snap = await track.snapshot(sb)
    restored = await track.restore(snap)
    with pytest.raises(Conflict):
        await manager.delete_snapshot(snap.id)
    await manager.delete(restored.id)
    await manager.delete_snapshot(snap.id)
    with pytest.raises(SnapshotNotFound):
        await manager.get_snapshot(snap.id)


async def test_create_restores_the_template_and_cold_boot_remains(track: Tracker) -> None:
    """create() restores the image's template; template=None boots from scratch."""
    warm = await track.create()
    cold = await track.create(template=None)
    assert cold.info.snapshot_id is None
    assert warm.info.snapshot_id is not None or (await track.create()).info.snapshot_id
    templates = [s for s in await track.m.list_snapshots(templates=True) if s.template]
    assert templates and all(s.template_key for s in templates)
    assert (await cold.exec(["true"])).exit_code == 0


async def test_a_snapshot_right_after_a_cold_boot_waits_for_the_agents_start(
    track: Tracker,
) -> None:
    """A cold boot answers while the Python agent is still starting, niced (sietch-front
    serves); a snapshot taken at once waits for that start, so its restores have it done."""
    cold = await track.create(template=None)
    restored = await track.restore(await track.snapshot(cold))
    nice = await restored.exec(["sh", "-c", "sed 's/.*) //' /proc/1/stat | cut -d' ' -f17"])
    assert nice.stdout == b"0\n", "PID 1 still starts (niced) in the restored copy"


async def test_snapshots_share_extents_as_root(track: Tracker, manager: Manager) -> None:
    """As root, snapshots reflink the RAM file (on an XFS image where the state dir can't)."""
    if os.geteuid() != 0:
        pytest.skip("the XFS image needs root; plain copies are used otherwise")
    assert manager.snapshots.reflink
    sb = await track.create(template=None)  # share=on RAM: snapshots clone its file

    def used() -> int:
        st = os.statvfs(manager.snapshots.dir)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    before = used()
    snaps = [await track.snapshot(sb) for _ in range(3)]
    grown = used() - before
    listed = sum(s.size_bytes for s in snaps)  # counts shared extents in every file
    assert listed > 3 * 64 * 1024 * 1024
    assert grown < listed / 2, f"3 snapshots took {grown} bytes of {listed}"
