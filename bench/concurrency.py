"""Concurrency: 50 exec requests at once across 5 sandboxes, through a real server process."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from common import api_server, median, p95, report

from sietch import AsyncClient, AsyncSandbox, SietchError


async def run(url: str, key: str, sandboxes: int, requests: int) -> dict[str, float | int]:
    async with AsyncClient(url, key) as client:
        boxes = [
            await AsyncSandbox.create(client=client, labels={"bench": "concurrency"})
            for _ in range(sandboxes)
        ]
        try:
            for sb in boxes:
                await sb.exec(["true"])

            async def one(i: int) -> float | None:
                started = time.perf_counter()
                try:
                    result = await boxes[i % len(boxes)].exec(["echo", str(i)])
                except SietchError as exc:
                    print(f"request {i} failed: {exc!r}", file=sys.stderr)
                    return None
                if result.exit_code != 0 or result.stdout != f"{i}\n":
                    print(f"request {i} wrong result: {result}", file=sys.stderr)
                    return None
                return (time.perf_counter() - started) * 1000

            times = await asyncio.gather(*(one(i) for i in range(requests)))
        finally:
            for sb in boxes:
                await sb.kill()
    ok = [t for t in times if t is not None]
    return {
        "ok": len(ok),
        "failed": requests - len(ok),
        "median_ms": round(median(ok), 2) if ok else 0.0,
        "p95_ms": round(p95(ok), 2) if ok else 0.0,
    }


def main(sandboxes: int, requests: int) -> None:
    with api_server() as (url, key):
        figures = asyncio.run(run(url, key, sandboxes, requests))
    report({"sandboxes": sandboxes, "requests": requests, **figures})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sandboxes", type=int, default=5)
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    main(args.sandboxes, args.requests)
