"""Exec round trip: run `true` in one sandbox 200 times through the manager.

``guest_cpu_ms`` is the host CPU its QEMU (all threads) used per exec: the
guest's work, emulated, plus QEMU's own.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from common import bench_manager, median, p95, report, task_cpu_ns


async def main(runs: int) -> None:
    times = []
    async with bench_manager() as manager:
        info = await manager.create()
        sandbox = manager.sandbox(info.id)
        pid = sandbox.machine.pid or 0
        for _ in range(5):
            await sandbox.exec(["true"])
        before = task_cpu_ns(pid)
        for _ in range(runs):
            started = time.perf_counter()
            await sandbox.exec(["true"])
            times.append((time.perf_counter() - started) * 1000)
        after = task_cpu_ns(pid)
        accel = manager.accel
    guest_ns = sum(t - before.get(tid, 0) for tid, t in after.items())
    report(
        {
            "runs": runs,
            "median_ms": round(median(times), 2),
            "p95_ms": round(p95(times), 2),
            "guest_cpu_ms": round(guest_ns / 1e6 / runs, 2),
            "accel": accel,
        }
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    asyncio.run(main(parser.parse_args().runs))
