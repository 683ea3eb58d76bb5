"""Burst: 20 sandboxes created at once through a real server, until all answer an exec.

The server runs with its defaults except the create rate limit, raised so the
burst is not refused. Before the burst the template exists (one create boots it
and is deleted) and the warm pool holds its default number of sandboxes, each
past its first, slow exec: what a server that sat idle for a while offers. The
clock runs from the moment all creates are sent until the last one's exec
answered. The last line is JSON with burst20_s (for --count 20; burstN_s
otherwise), the per-sandbox create -> exec answered median and p95, failed, and
pool_size.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from pathlib import Path

from common import Target, api_server, median, new_state_dir, p95, report

from sietch import AsyncClient, AsyncSandbox, SietchError
from sietch.config import Settings
from sietch.core.models import SandboxState
from sietch.core.pool import is_pooled
from sietch.core.store import Store


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / 100  # utime, stime in clock ticks


async def pool_settled(state: Path, size: int, timeout: float = 300.0) -> None:
    """Wait until ``size`` pooled sandboxes run and their QEMUs idle (first exec paid).

    The pool is the server's; from outside, a pooled VM is a store record plus a
    QEMU that stops burning CPU once its first exec has been answered.
    """
    store = Store(state / "sietch.db")
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = [
                i.pid for i in store.all(SandboxState.RUNNING) if is_pooled(i) and i.pid is not None
            ]
            if len(pids) >= size:
                before = [cpu_seconds(pid) for pid in pids]
                await asyncio.sleep(0.5)
                busy = [cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True)]
                if all(seconds < 0.15 for seconds in busy):  # < 30 % of a core
                    return
            else:
                await asyncio.sleep(0.1)
        raise RuntimeError(f"the warm pool did not fill to {size} within {timeout:.0f} s")
    finally:
        store.close()


async def one(client: AsyncClient, boxes: list[AsyncSandbox], i: int) -> float | None:
    """Create a sandbox and run an exec in it: seconds until it answered, None on failure."""
    started = time.perf_counter()
    try:
        sb = await AsyncSandbox.create(client=client, labels={"bench": "burst"})
        boxes.append(sb)
        result = await sb.exec(["echo", str(i)])
    except SietchError as exc:
        print(f"sandbox {i} failed: {exc!r}", file=sys.stderr)
        return None
    if result.exit_code != 0 or result.stdout != f"{i}\n":
        print(f"sandbox {i} wrong result: {result}", file=sys.stderr)
        return None
    return time.perf_counter() - started


async def run(url: str, key: str, state: Path, count: int, pool_size: int) -> dict[str, float]:
    async with AsyncClient(url, key) as client:
        first = await AsyncSandbox.create(client=client)  # boots once, makes the template
        await first.kill()
        await pool_settled(state, pool_size)
        boxes: list[AsyncSandbox] = []
        try:
            started = time.perf_counter()
            times = await asyncio.gather(*(one(client, boxes, i) for i in range(count)))
            burst = time.perf_counter() - started
        finally:
            for sb in boxes:
                with contextlib.suppress(SietchError):
                    await sb.kill()
    ok = [t for t in times if t is not None]
    return {
        f"burst{count}_s": round(burst, 3),
        "each_median_s": round(median(ok), 3) if ok else 0.0,
        "each_p95_s": round(p95(ok), 3) if ok else 0.0,
        "failed": count - len(ok),
    }


def main(count: int) -> None:
    # Raised for the run: the burst measures creation, not the limiter.
    limits = {"SIETCH_CREATE_RATE_PER_MIN": "1000000", "SIETCH_CREATE_BURST": str(count + 1)}
    pool_size = Settings().pool_size  # what the server reads from the same environment
    state = new_state_dir()
    with api_server(state, limits) as (url, key):
        figures = asyncio.run(run(url, key, state, count, pool_size))
    targets = {"burst20_s": Target(4.0), "failed": Target(0)} if count == 20 else {}
    report({"count": count, **figures, "pool_size": pool_size}, targets)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=20, help="sandboxes created at once")
    main(parser.parse_args().count)
