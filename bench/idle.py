"""Idle cost: host CPU of idle sandboxes, and an exec's latency among many idle ones.

``idle_cpu_ms_per_s``: 20 idle sandboxes for 30 s, host CPU per sandbox per
second, counting every host process that serves one: its QEMU (all threads),
its slirp4netns, and its share of Sietch (this process, which runs the
manager). Two windows of 30 s follow each other: ``first_30s_ms_per_s`` from 5 s
after the creates, and the figure itself (with its split by role) from the next
30 s, when the sandboxes are idle as a held one is for most of its life. The
first was 1.7-2.3x the second (not traced to the end; most likely because a
restored guest is ~3 s into its uptime and its kernel's periodic work, the netdev
watchdog every 5 s, the memcg stats flush every 2 s, the deferred-probe timeout at
10 s, runs for the first time in the new QEMU, whose TCG translates it afresh).
``exec_under_load_median_ms``: `exec true` in one of 60 idle
sandboxes, against the same with that sandbox alone (``exec_unloaded_median_ms``).
The warm pool is off, so every sandbox measured is one a user holds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from common import bench_manager, median, report, task_cpu_ns

from sietch.core.live import LiveSandbox
from sietch.core.manager import Manager


def served_by(sb: LiveSandbox) -> dict[str, int]:
    """The host processes that serve one sandbox, by role."""
    pids = {"qemu": sb.machine.pid or 0}
    if sb.network is not None and sb.network.uplink is not None:
        pids["slirp4netns"] = sb.network.uplink.proc.pid
    return pids


async def idle_cpu(sandboxes: list[LiveSandbox], seconds: float) -> dict[str, float]:
    """ms of host CPU per second per sandbox, by role, over ``seconds`` of idling."""
    roles = [served_by(sb) for sb in sandboxes]
    before = [{role: task_cpu_ns(pid) for role, pid in r.items()} for r in roles]
    own_before, started = time.process_time_ns(), time.monotonic()
    await asyncio.sleep(seconds)
    own_used, elapsed = time.process_time_ns() - own_before, time.monotonic() - started
    used: dict[str, float] = {}
    for r, start in zip(roles, before, strict=True):
        for role, pid in r.items():
            now = task_cpu_ns(pid)
            ns = sum(t - start[role].get(tid, 0) for tid, t in now.items())
            used[role] = used.get(role, 0.0) + ns
    used["sietch"] = float(own_used)
    per = {k: v / 1e6 / elapsed / len(sandboxes) for k, v in used.items()}
    return {f"{k}_ms_per_s": round(v, 2) for k, v in per.items()}


async def exec_median(sb: LiveSandbox, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await sb.exec(["true"])
        times.append((time.perf_counter() - started) * 1000)
    return round(median(times), 2)


async def grow(manager: Manager, sandboxes: list[LiveSandbox], count: int) -> None:
    while len(sandboxes) < count:
        sandboxes.append(manager.sandbox((await manager.create()).id))


async def main(idle: int, loaded: int, seconds: float, settle: float, runs: int) -> None:
    sandboxes: list[LiveSandbox] = []
    async with bench_manager(pool_size=0, max_sandboxes=max(loaded, idle) + 1) as manager:
        await grow(manager, sandboxes, 2)
        probe = sandboxes[1]  # restored from the template, as users' sandboxes are
        await exec_median(probe, 30)  # its first execs translate the agent's code afresh
        unloaded = await exec_median(probe, runs)
        await grow(manager, sandboxes, idle)
        await asyncio.sleep(settle)  # restored guests finish their first work
        first = await idle_cpu(sandboxes, seconds)
        per_role = await idle_cpu(sandboxes, seconds)
        await grow(manager, sandboxes, loaded)
        await asyncio.sleep(settle)
        under_load = await exec_median(probe, runs)
        accel = manager.accel
    report(
        {
            "sandboxes": idle,
            "seconds": seconds,
            "idle_cpu_ms_per_s": round(sum(per_role.values()), 2),
            **per_role,
            "first_30s_ms_per_s": round(sum(first.values()), 2),
            "loaded_sandboxes": loaded,
            "exec_unloaded_median_ms": unloaded,
            "exec_under_load_median_ms": under_load,
            "load_ratio": round(under_load / unloaded, 2),
            "host_load_1m": round(os.getloadavg()[0], 2),
            "accel": accel,
        }
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sandboxes", type=int, default=20, help="idle sandboxes measured")
    parser.add_argument("--loaded", type=int, default=60, help="idle sandboxes under the exec")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(main(args.sandboxes, args.loaded, args.seconds, args.settle, args.runs))
