"""Exec round trip: run `true` in one sandbox 200 times through the manager."""

from __future__ import annotations

import argparse
import asyncio
import time

from common import bench_manager, median, p95, report


async def main(runs: int) -> None:
    times = []
    async with bench_manager() as manager:
        info = await manager.create()
        sandbox = manager.sandbox(info.id)
        for _ in range(5):
            await sandbox.exec(["true"])
        for _ in range(runs):
            started = time.perf_counter()
            await sandbox.exec(["true"])
            times.append((time.perf_counter() - started) * 1000)
        accel = manager.accel
    report(
        {
            "runs": runs,
            "median_ms": round(median(times), 2),
            "p95_ms": round(p95(times), 2),
            "accel": accel,
        }
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    asyncio.run(main(parser.parse_args().runs))
