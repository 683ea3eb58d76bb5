"""Hibernation: how fast a sandbox goes to disk and comes back, what memory it frees, and
how many sandboxes the machine holds with and without it.

Every timed sandbox is created from the template and has ``--write-mib`` MiB of fresh
data written into its RAM (tmpfs) first, as a user's would. The last line is JSON with
hibernate_median_ms (running until its QEMU process is gone; hibernate_call_median_ms:
until the call returned, its files made durable), wake_to_exec_median_ms (hibernated
until a first exec answered, woken by that exec as ``auto_resume`` does),
restore_median_ms (a restore of a snapshot of such a sandbox to its first exec, in the
same run) and wake_over_restore, each with a p95; hibernate_freed_mib: host
MemAvailable regained per sandbox after hibernating ``--sandboxes`` of them at once.

density_idle_sandboxes: idle default sandboxes created ``--step`` at a time; after each
step every one, in turn, must answer an exec within ``--answer-s`` (2 s); the figure is
the most that did, up to ``--cap-idle``. density_with_hibernation: the same with
``idle_timeout_s`` (``--idle-s``) hibernating them, ``--step-hibernated`` at a time,
every one asleep before each round, so each answer includes its wake; up to
``--cap-hibernated``. A cap of 0 skips that part, and
``--skip-timings`` the timings and the freed memory. Each stops at the first slow
answer, or when a create is refused (the memory reserve, the sandbox limit), and says
why (``*_stopped``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from typing import Any

from common import Target, bench_manager, median, mem_available, p95, report

from sietch.core.manager import Manager
from sietch.core.models import SandboxState
from sietch.errors import SietchError
from sietch.vmm import process

TARGETS = {
    "hibernate_median_ms": Target(300),
    "wake_over_restore": Target(1.2),
    "hibernate_freed_mib": Target(60, at_least=True),
}
DENSITY = {
    "density_idle_sandboxes": Target(100, at_least=True),
    "density_with_hibernation": Target(300, at_least=True),
}
WRITE = "head -c {mib}M /dev/urandom > /dev/shm/data"


async def written(m: Manager, write_mib: int) -> str:
    """A sandbox from the template with ``write_mib`` MiB written into its RAM."""
    info = await m.create()
    result = await m.sandbox(info.id).exec(["sh", "-c", WRITE.format(mib=write_mib)])
    if result.exit_code != 0:
        raise RuntimeError(result.stderr.decode())
    return info.id


async def hibernate_timed(m: Manager, sandbox_id: str) -> tuple[float, float]:
    """Seconds until its QEMU process was gone, and until the call returned."""
    pid = m.sandbox(sandbox_id).machine.pid or 0
    started = time.perf_counter()
    call = asyncio.ensure_future(m.hibernate(sandbox_id))
    await process.wait_exit(pid)
    gone = time.perf_counter() - started
    await call
    return gone, time.perf_counter() - started


async def first_exec(m: Manager, sandbox_id: str) -> None:
    async with m.use(sandbox_id) as sandbox:  # wakes a hibernated one
        await sandbox.exec(["true"])


async def timings(m: Manager, runs: int, write_mib: int) -> dict[str, float]:
    """Hibernate, wake and (for comparison) restore, interleaved run by run."""
    sleeps, calls, wakes, restores = [], [], [], []
    for _ in range(runs):
        sandbox_id = await written(m, write_mib)
        snap = await m.snapshot(sandbox_id)
        gone, call = await hibernate_timed(m, sandbox_id)
        sleeps.append(gone)
        calls.append(call)
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
        ("hibernate_median_ms", sleeps), ("hibernate_call_median_ms", calls),
        ("wake_to_exec_median_ms", wakes), ("restore_median_ms", restores),
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


async def answers(m: Manager, ids: list[str], within_s: float) -> list[float]:
    """Each sandbox in turn answers an exec (waking it if it sleeps): the seconds each
    took, up to the first over ``within_s``."""
    took: list[float] = []
    for sandbox_id in ids:
        started = time.perf_counter()
        await first_exec(m, sandbox_id)
        took.append(time.perf_counter() - started)
        if took[-1] > within_s:
            break
    return took


async def asleep(m: Manager, ids: list[str], deadline_s: float) -> None:
    """Wait until every one of ``ids`` has hibernated (its idle timeout)."""
    until = time.monotonic() + deadline_s
    while time.monotonic() < until:
        states = [(await m.get(i)).state for i in ids]
        if all(s is SandboxState.HIBERNATED for s in states):
            return
        await asyncio.sleep(1.0)
    raise RuntimeError(f"not all of {len(ids)} sandboxes hibernated within {deadline_s:g} s")


async def density(
    m: Manager, cap: int, step: int, within_s: float, idle_s: float | None
) -> dict[str, Any]:
    """How many sandboxes the machine holds while each answers within ``within_s``; with
    ``idle_s`` they hibernate when idle, and each answer includes its wake."""
    name = "density_with_hibernation" if idle_s else "density_idle_sandboxes"
    ids: list[str] = []
    held, why = 0, f"cap {cap}"
    timeouts: dict[str, Any] = {"idle_timeout_s": idle_s, "on_idle": "hibernate"}
    try:
        while len(ids) < cap:
            try:
                for _ in range(min(step, cap - len(ids))):
                    ids.append((await m.create(**(timeouts if idle_s else {}))).id)
            except SietchError as exc:
                why = f"create refused: {exc.code}: {exc.message}"
                break
            if idle_s:
                await asleep(m, ids, 60 + 5 * len(ids))
            took = await answers(m, ids, within_s)
            slowest = max(took)
            print(f"{name}: {len(ids)} held, slowest answer {slowest:.2f} s, median "
                  f"{median(took):.2f} s, load {os.getloadavg()[0]:.1f}",
                  file=sys.stderr, flush=True)  # fmt: skip
            if slowest > within_s:
                why = (
                    f"with {len(ids)} sandboxes the {len(took)}th answer took {slowest:.2f} s"
                    f" (median of the round {median(took):.2f} s)"
                )
                break
            held = len(ids)
    finally:
        for sandbox_id in ids:
            with contextlib.suppress(SietchError):
                await m.delete(sandbox_id)
    return {name: held, f"{name}_stopped": why, f"{name}_load": round(os.getloadavg()[0], 1)}


async def main(args: argparse.Namespace) -> None:
    figures: dict[str, Any] = {}
    targets = {}
    limit = max(args.cap_idle, args.cap_hibernated) + 8
    async with bench_manager(max_sandboxes=limit, pool_size=0) as m:
        await m.delete((await m.create()).id)  # the first create makes the template
        if not args.skip_timings:
            figures.update(await timings(m, args.runs, args.write_mib))
            figures["hibernate_freed_mib"] = await freed(m, args.sandboxes, args.write_mib)
            figures.update(runs=args.runs, sandboxes=args.sandboxes, write_mib=args.write_mib)
            targets.update(TARGETS)
            print(f"timings: {figures}, load {os.getloadavg()}", file=sys.stderr, flush=True)
        for cap, step, idle_s, name in (
            (args.cap_idle, args.step, None, "density_idle_sandboxes"),
            (args.cap_hibernated, args.step_hibernated, args.idle_s, "density_with_hibernation"),
        ):
            if cap:
                figures.update(await density(m, cap, step, args.answer_s, idle_s))
                targets[name] = DENSITY[name]
    report(figures, targets)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--sandboxes", type=int, default=20, help="hibernated at once (freed)")
    parser.add_argument("--write-mib", type=int, default=64, help="data written in each")
    parser.add_argument("--skip-timings", action="store_true", help="only the densities")
    parser.add_argument("--cap-idle", type=int, default=150, help="most idle sandboxes (0: skip)")
    parser.add_argument(
        "--cap-hibernated", type=int, default=400, help="most hibernating ones (0: skip)"
    )
    parser.add_argument("--step", type=int, default=10, help="idle ones added between rounds")
    parser.add_argument(
        "--step-hibernated", type=int, default=50, help="hibernating ones added between rounds"
    )
    parser.add_argument("--answer-s", type=float, default=2.0, help="each exec answers within")
    parser.add_argument("--idle-s", type=float, default=5.0, help="their idle_timeout_s")
    asyncio.run(main(parser.parse_args()))
