"""File throughput: upload and download 100 MiB to and from one sandbox."""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import AsyncIterator

from common import bench_manager, median, report

MiB = 1024 * 1024


async def chunks(block: bytes, total: int) -> AsyncIterator[bytes]:
    for _ in range(total // len(block)):
        yield block


async def main(size_mib: int, runs: int) -> None:
    block = os.urandom(MiB)
    up, down = [], []
    async with bench_manager() as manager:
        info = await manager.create()
        sandbox = manager.sandbox(info.id)
        for _ in range(runs):
            started = time.perf_counter()
            await sandbox.write_file("/tmp/blob", chunks(block, size_mib * MiB))
            up.append(size_mib / (time.perf_counter() - started))
            started = time.perf_counter()
            received = 0
            async for chunk in sandbox.read_file("/tmp/blob"):
                received += len(chunk)
            down.append(size_mib / (time.perf_counter() - started))
            assert received == size_mib * MiB
            await sandbox.remove("/tmp/blob")
        accel = manager.accel
    report(
        {
            "size_mib": size_mib,
            "runs": runs,
            "upload_mib_s": round(median(up), 1),
            "download_mib_s": round(median(down), 1),
            "accel": accel,
        }
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.size_mib, args.runs))
