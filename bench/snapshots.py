"""Snapshots and templates: create (warm pool / template restore), snapshot, restore,
fork of 10, PSS, cold boot, and the user's path (a sandbox from the template with data
written in it, snapshotted and restored).

Every restore/create figure is "until the first exec answered", as a user sees it.
The last line is JSON with create_median_ms, create_p95_ms (from the warm pool),
create_nopool_median_ms, create_nopool_p95_ms (restoring the template),
snapshot_median_ms and restore_median_ms (of a cold-booted sandbox, whose RAM is its
own file), fork10_s, pss_mib, cold_boot_median_s, accel; and user_snapshot_median_ms
(wall), user_snapshot_pause_ms (the guest's vCPUs stopped: QEMU's own timestamps on
its STOP and RESUME events), user_snapshot_disk_mib (statvfs delta of the filesystem
holding the snapshots, so extents shared by reflink count once),
user_restore_median_ms and gen3_restore_median_ms (a snapshot three generations of
restore + write + snapshot deep), each with a p95.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common import Target, bench_manager, cow_root, fs_used, median, p95, report

from sietch.core.manager import Manager
from sietch.errors import SandboxNotFound
from sietch.vmm.qemu import QemuMachine

MiB = 1024 * 1024

TARGETS = {
    "create_median_ms": Target(50),
    "restore_median_ms": Target(250),
    "fork10_s": Target(1.5),
    "pss_mib": Target(40),
    "cold_boot_median_s": Target(2.0),
    "user_snapshot_pause_ms": Target(40),
    "user_snapshot_median_ms": Target(100),
    "user_snapshot_disk_mib": Target(80),
    "user_restore_median_ms": Target(250),
    "gen3_restore_median_ms": Target(250),
}


async def first_exec(manager: Manager, sandbox_id: str) -> None:
    await manager.sandbox(sandbox_id).exec(["true"])


async def timed_create(manager: Manager, **spec: Any) -> tuple[float, str]:
    started = time.perf_counter()
    info = await manager.create(**spec)
    await first_exec(manager, info.id)
    return time.perf_counter() - started, info.id


async def pool_ready(m: Manager) -> None:
    for _ in range(600):
        if any(m.pool._ready.values()):
            return
        await asyncio.sleep(0.05)
    raise RuntimeError("the warm pool did not refill within 30 s")


async def drain_pool(m: Manager) -> None:
    for ids in m.pool._ready.values():
        while ids:
            await m.delete(ids.pop())


async def write_data(manager: Manager, sandbox_id: str, mib: int) -> None:
    """What a user's work leaves: ``mib`` MiB of fresh (incompressible) file data."""
    result = await manager.sandbox(sandbox_id).exec(
        f"head -c {mib}M /dev/urandom > /root/bench-$(date +%s%N).bin"
    )
    if result.exit_code != 0:
        raise RuntimeError(f"writing {mib} MiB in the guest failed: {result.stderr!r}")


def settled_fs_used(path: Path) -> int:
    """``fs_used`` once earlier deletes have landed (XFS frees extents in the background)."""
    os.sync()
    used = fs_used(path)
    for _ in range(40):
        time.sleep(0.05)
        now = fs_used(path)
        if now == used:
            return used
        used = now
    return used


def qmp_seconds(event: Mapping[str, Any]) -> float:
    stamp = event["timestamp"]
    return float(stamp["seconds"]) + float(stamp["microseconds"]) / 1e6


async def paused_snapshot(
    manager: Manager, machine: QemuMachine, sandbox_id: str
) -> tuple[float, float, str]:
    """Snapshot a running sandbox: (wall seconds, seconds its vCPUs were stopped, id)."""
    assert machine.qmp is not None
    with machine.qmp.listener(("STOP", "RESUME")) as events:
        started = time.perf_counter()
        snap = await manager.snapshot(sandbox_id)
        wall = time.perf_counter() - started
        stop = await asyncio.wait_for(events.get(), 5)
        resume = await asyncio.wait_for(events.get(), 5)
    if (stop["event"], resume["event"]) != ("STOP", "RESUME"):
        raise RuntimeError(f"unexpected QMP events {stop['event']}, {resume['event']}")
    return wall, qmp_seconds(resume) - qmp_seconds(stop), snap.id


async def timed_restore(manager: Manager, snapshot_id: str) -> tuple[float, str]:
    started = time.perf_counter()
    info = await manager.restore(snapshot_id)
    await first_exec(manager, info.id)
    return time.perf_counter() - started, info.id


async def user_path(m: Manager, runs: int, write_mib: int) -> dict[str, float]:
    """The user's path: create from the template, write, then snapshot and restore."""
    made: list[str] = []  # sandboxes and snapshots still to delete, oldest first
    snaps: list[str] = []
    try:
        user = (await m.create()).id
        made.append(user)
        await write_data(m, user, write_mib)
        machine = m.sandbox(user).machine
        where = cow_root(m.settings.state_dir)
        walls, pauses, disk, restores = [], [], [], []
        for _ in range(runs):
            before = await asyncio.to_thread(settled_fs_used, where)
            wall, paused, snap = await paused_snapshot(m, machine, user)
            snaps.append(snap)
            disk.append((await asyncio.to_thread(settled_fs_used, where) - before) / MiB)
            walls.append(wall)
            pauses.append(paused)
            seconds, restored = await timed_restore(m, snap)
            restores.append(seconds)
            await m.delete(restored)
            await m.delete_snapshot(snaps.pop())

        # Three generations: each restores the last snapshot, writes, snapshots again.
        source = user
        for generation in range(3):
            if generation:
                source = (await m.restore(snaps[-1])).id
                made.append(source)
                await write_data(m, source, write_mib)
            snaps.append((await m.snapshot(source)).id)
        gen3 = []
        for _ in range(runs):
            seconds, restored = await timed_restore(m, snaps[-1])
            gen3.append(seconds)
            await m.delete(restored)
    finally:
        # Sandboxes first (each pins the snapshot it came from), then the newest snapshot
        # first (each pins its parent).
        for sid in reversed(made):
            with contextlib.suppress(SandboxNotFound):
                await m.delete(sid)
        for snap in reversed(snaps):
            await m.delete_snapshot(snap)
    ms = {
        "user_snapshot_median_ms": walls,
        "user_snapshot_pause_ms": pauses,
        "user_restore_median_ms": restores,
        "gen3_restore_median_ms": gen3,
    }
    figures: dict[str, float] = {}
    for key, values in ms.items():
        figures[key] = round(1000 * median(values), 1)
        figures[key.replace("_median", "").replace("_ms", "_p95_ms")] = round(1000 * p95(values), 1)
    figures["user_snapshot_disk_mib"] = round(median(disk), 1)
    figures["user_snapshot_disk_max_mib"] = round(max(disk), 1)
    return figures


def pss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


async def main(runs: int, cold_runs: int, idle: int, write_mib: int) -> None:
    async with bench_manager() as m:
        # The first create boots from scratch and saves the template.
        _, first = await timed_create(m)
        await m.delete(first)

        cold = []
        for _ in range(cold_runs):
            seconds, sid = await timed_create(m, template=None)
            cold.append(seconds)
            await m.delete(sid)

        # A user creating at a moderate rate finds the warm pool refilled.
        creates = []
        for _ in range(runs):
            await pool_ready(m)
            seconds, sid = await timed_create(m)
            creates.append(seconds)
            await m.delete(sid)

        # Back to back with no pool: every create restores the template itself.
        pool_size, m.pool.size = m.pool.size, 0
        await drain_pool(m)
        unpooled = []
        for _ in range(runs):
            seconds, sid = await timed_create(m)
            unpooled.append(seconds)
            await m.delete(sid)
        m.pool.size = pool_size

        source = (await m.create(template=None)).id  # a share=on VM: the fast snapshot path
        snaps, restores = [], []
        for _ in range(runs):
            started = time.perf_counter()
            snap = await m.snapshot(source)
            snaps.append(time.perf_counter() - started)
            started = time.perf_counter()
            info = await m.restore(snap.id)
            await first_exec(m, info.id)
            restores.append(time.perf_counter() - started)
            await m.delete(info.id)
            await m.delete_snapshot(snap.id)

        started = time.perf_counter()
        forks = await m.fork(source, 10)
        await asyncio.gather(*(first_exec(m, f.id) for f in forks))
        fork10 = time.perf_counter() - started
        for f in forks:
            await m.delete(f.id)

        user = await user_path(m, runs, write_mib)

        running = [(await m.create()).id for _ in range(idle)]
        await asyncio.sleep(5)  # let them settle to idle
        pss = [pss_kib(m.sandbox(sid).machine.pid or 0) for sid in running]
        for sid in running:
            await m.delete(sid)
        await m.delete(source)
        accel = m.accel

    report(
        {
            "runs": runs,
            "create_median_ms": round(1000 * median(creates), 1),
            "create_p95_ms": round(1000 * p95(creates), 1),
            "create_nopool_median_ms": round(1000 * median(unpooled), 1),
            "create_nopool_p95_ms": round(1000 * p95(unpooled), 1),
            "snapshot_median_ms": round(1000 * median(snaps), 1),
            "restore_median_ms": round(1000 * median(restores), 1),
            "fork10_s": round(fork10, 3),
            "pss_mib": round(median(pss) / 1024, 1),
            "pss_idle_sandboxes": idle,
            "cold_boot_median_s": round(median(cold), 3),
            "cold_over_create": round(median(cold) / median(creates), 1),
            **user,
            "write_mib": write_mib,
            "accel": accel,
        },
        TARGETS,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--cold-runs", type=int, default=3)
    parser.add_argument("--idle", type=int, default=20, help="sandboxes running for the PSS figure")
    parser.add_argument(
        "--write-mib", type=int, default=64, help="data written in the user's sandbox"
    )
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.cold_runs, args.idle, args.write_mib))
