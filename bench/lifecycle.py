"""Hibernation: how fast a sandbox goes to disk and comes back, and what memory it frees.

Every sandbox is created from the template and has ``--write-mib`` MiB of fresh data
written into its RAM (tmpfs) first, as a user's would. The last line is JSON with
hibernate_median_ms (running until its QEMU process is gone), wake_to_exec_median_ms
(hibernated until a first exec answered, woken by that exec as ``auto_resume`` does),
restore_median_ms (a restore of a snapshot of such a sandbox to its first exec, in the
same run) and wake_over_restore, each with a p95; and hibernate_freed_mib: host
MemAvailable regained per sandbox after hibernating ``--sandboxes`` of them at once.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from common import Target, bench_manager, median, mem_available, p95, report

from sietch.core.manager import Manager
from sietch.vmm import process

TARGETS = {
    "hibernate_median_ms": Target(300),
    "wake_over_restore": Target(1.2),
    "hibernate_freed_mib": Target(60, at_least=True),
}
WRITE = "head -c {mib}M /dev/urandom > /dev/shm/data"


async def written(m: Manager, write_mib: int) -> str:
    """A sandbox from the template with ``write_mib`` MiB written into its RAM."""
    info = await m.create()
    result = await m.sandbox(info.id).exec(["sh", "-c", WRITE.format(mib=write_mib)])
    if result.exit_code != 0:
        raise RuntimeError(result.stderr.decode())
    return info.id


async def hibernate_timed(m: Manager, sandbox_id: str) -> float:
    pid = m.sandbox(sandbox_id).machine.pid or 0
    started = time.perf_counter()
    await m.hibernate(sandbox_id)
    await process.wait_exit(pid)
    return time.perf_counter() - started


async def first_exec(m: Manager, sandbox_id: str) -> None:
    async with m.use(sandbox_id) as sandbox:  # wakes a hibernated one
        await sandbox.exec(["true"])


async def timings(m: Manager, runs: int, write_mib: int) -> dict[str, float]:
    """Hibernate, wake and (for comparison) restore, interleaved run by run."""
    sleeps, wakes, restores = [], [], []
    for _ in range(runs):
        sandbox_id = await written(m, write_mib)
        snap = await m.snapshot(sandbox_id)
        sleeps.append(await hibernate_timed(m, sandbox_id))
        started = time.perf_counter()
        await first_exec(m, sandbox_id)
        wakes.append(time.perf_counter() - started)
        started = time.perf_counter()
        copy = await m.restore(snap.id)
        await first_exec(m, copy.id)
        restores.append(time.perf_counter() - started)
        for done in (copy.id, sandbox_id):
            await m.delete(done)
        await m.delete_snapshot(snap.id)
    figures: dict[str, float] = {}
    for key, values in (
        ("hibernate_median_ms", sleeps), ("wake_to_exec_median_ms", wakes),
        ("restore_median_ms", restores),
    ):  # fmt: skip
        figures[key] = round(1000 * median(values), 1)
        figures[key.replace("_median", "_p95")] = round(1000 * p95(values), 1)
    figures["wake_over_restore"] = round(median(wakes) / median(restores), 2)
    return figures


async def freed(m: Manager, count: int, write_mib: int) -> float:
    """MiB of MemAvailable regained per sandbox by hibernating ``count`` at once."""
    slots = asyncio.Semaphore(4)

    async def one() -> str:
        async with slots:
            return await written(m, write_mib)

    ids = await asyncio.gather(*(one() for _ in range(count)))
    await asyncio.sleep(5)  # let the page cache and the guests settle
    before = mem_available()
    for sandbox_id in ids:
        await m.hibernate(sandbox_id)
    await asyncio.sleep(5)
    gained = mem_available() - before
    for sandbox_id in ids:
        await m.delete(sandbox_id)
    return round(gained / count / 2**20, 1)


async def main(runs: int, sandboxes: int, write_mib: int) -> None:
    async with bench_manager() as m:
        await m.delete((await m.create()).id)  # the first create makes the template
        figures = await timings(m, runs, write_mib)
        figures["hibernate_freed_mib"] = await freed(m, sandboxes, write_mib)
    report({"runs": runs, **figures, "sandboxes": sandboxes, "write_mib": write_mib}, TARGETS)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--sandboxes", type=int, default=20, help="hibernated at once (freed)")
    parser.add_argument("--write-mib", type=int, default=64, help="data written in each")
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.sandboxes, args.write_mib))
