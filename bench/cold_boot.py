"""Cold boot (no template): create a sandbox and wait for its first exec answer, 10 times."""

from __future__ import annotations

import argparse
import asyncio
import time

from common import Target, bench_manager, median, p95, report


async def main(runs: int) -> None:
    times = []
    async with bench_manager() as manager:
        for _ in range(runs):
            started = time.perf_counter()
            info = await manager.create(template=None)
            await manager.sandbox(info.id).exec(["true"])
            times.append(time.perf_counter() - started)
            await manager.delete(info.id)
        accel = manager.accel
    report(
        {
            "runs": runs,
            "median_s": round(median(times), 3),
            "p95_s": round(p95(times), 3),
            "accel": accel,
        },
        {"median_s": Target(2.0)},
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    asyncio.run(main(parser.parse_args().runs))
