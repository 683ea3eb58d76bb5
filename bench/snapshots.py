"""Snapshots and templates: create (warm pool / template restore), snapshot, restore,
fork of 10, PSS, cold boot.

Every figure is "until the first exec answered", as a user sees it. The last
line is JSON with create_median_ms, create_p95_ms (from the warm pool),
create_nopool_median_ms, create_nopool_p95_ms (restoring the template), snapshot_median_ms,
restore_median_ms, fork10_s, pss_mib, cold_boot_median_s, accel.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from common import bench_manager, median, p95, report

from sietch.core.manager import Manager


async def first_exec(manager: Manager, sandbox_id: str) -> None:
    await manager.sandbox(sandbox_id).exec(["true"])


async def timed_create(manager: Manager, **spec: object) -> tuple[float, str]:
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


def pss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


async def main(runs: int, cold_runs: int, idle: int) -> None:
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
            "accel": accel,
        }
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--cold-runs", type=int, default=3)
    parser.add_argument("--idle", type=int, default=20, help="sandboxes running for the PSS figure")
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.cold_runs, args.idle))
