"""Noisy neighbours: an exec's latency in one sandbox while another runs a fork bomb and a
memory hog, over the same sandbox's latency with the other one idle.

``neighbour_exec_ratio`` is loaded median / unloaded median of ``exec true`` in the probe
sandbox (target <= 2). The neighbour's guest runs a classic shell fork bomb and a
Python loop that allocates and writes 300 MiB over and over; its host side is held by
its cgroup (CPU quota of its one vCPU, memory limit, pids limit). ``--cgroups off``
runs the same without per-sandbox cgroups, for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from common import Target, bench_manager, median, report

from sietch.core.live import LiveSandbox

HOG = "python3 -c \"\nwhile True:\n    block = b'\\x01' * (300 << 20)\n    del block\""
BOMB = "bomb() { bomb | bomb & }; bomb"


async def exec_median(sb: LiveSandbox, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await sb.exec(["true"])
        times.append((time.perf_counter() - started) * 1000)
    return round(median(times), 2)


async def main(runs: int, settle: float, cgroups: str) -> None:
    async with bench_manager(pool_size=0, cgroups=cgroups) as manager:
        probe_info = await manager.create()
        noisy_info = await manager.create()
        probe, noisy = manager.sandbox(probe_info.id), manager.sandbox(noisy_info.id)
        await exec_median(probe, 30)  # its first execs translate the agent's code afresh
        unloaded = await exec_median(probe, runs)
        await noisy.start_background(HOG)
        await noisy.start_background(BOMB)
        await asyncio.sleep(settle)  # the bomb fills the guest, the hog its RAM
        loaded = await exec_median(probe, runs)
        usage = noisy.cgroup.usage() if noisy.cgroup is not None else None
        alive = noisy.machine.running
        status = manager.cgroups_status
        await manager.delete(noisy.id)
        await manager.delete(probe.id)
    report(
        {
            "runs": runs,
            "cgroups": status,
            "exec_unloaded_median_ms": unloaded,
            "exec_loaded_median_ms": loaded,
            "neighbour_exec_ratio": round(loaded / unloaded, 2),
            "neighbour_alive": alive,
            "neighbour_memory_peak_mib": (
                round(usage.memory_peak_bytes / 2**20, 1)
                if usage is not None and usage.memory_peak_bytes is not None
                else None
            ),
            "neighbour_host_pids": usage.pids if usage is not None else None,
            "host_load_1m": round(os.getloadavg()[0], 2),
        },
        {"neighbour_exec_ratio": Target(2.0)},
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--settle", type=float, default=10.0)
    parser.add_argument("--cgroups", choices=["auto", "off"], default="auto")
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.settle, args.cgroups))
