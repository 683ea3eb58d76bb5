"""Small files: a 4 KiB write and its read back, 200 times each, through the manager.

What an RL rollout step does with files (bench/rollout.py). ``*_guest_cpu_ms`` is
the host CPU its QEMU (all threads) used per operation, the guest's work emulated:
the measure of which agent served it (sietch-front for files this small).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from common import bench_manager, median, p95, report, task_cpu_ns


async def timed(pid: int, runs: int, op: Callable[[], Awaitable[Any]]) -> tuple[list[float], float]:
    """Wall times (ms) of ``runs`` calls, and QEMU's CPU (ms) per call."""
    times = []
    before = task_cpu_ns(pid)
    for _ in range(runs):
        started = time.perf_counter()
        await op()
        times.append((time.perf_counter() - started) * 1000)
    after = task_cpu_ns(pid)
    return times, sum(t - before.get(tid, 0) for tid, t in after.items()) / 1e6 / runs


async def main(runs: int, size: int) -> None:
    data = os.urandom(size)
    async with bench_manager() as manager:
        info = await manager.create()
        sandbox = manager.sandbox(info.id)
        pid = sandbox.machine.pid or 0

        async def write() -> None:
            await sandbox.write_file("/root/step.bin", data)

        async def read() -> None:
            if await sandbox.read_bytes("/root/step.bin") != data:
                raise RuntimeError("the file read back differs from what was written")

        for _ in range(5):
            await write()
            await read()
        writes, write_cpu = await timed(pid, runs, write)
        reads, read_cpu = await timed(pid, runs, read)
        accel = manager.accel
    report(
        {
            "runs": runs,
            "size": size,
            "write_median_ms": round(median(writes), 2),
            "write_p95_ms": round(p95(writes), 2),
            "write_guest_cpu_ms": round(write_cpu, 2),
            "read_median_ms": round(median(reads), 2),
            "read_p95_ms": round(p95(reads), 2),
            "read_guest_cpu_ms": round(read_cpu, 2),
            "accel": accel,
        }
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--size", type=int, default=4096, help="bytes per file")
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.size))
