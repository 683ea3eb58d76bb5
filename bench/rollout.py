"""Rollout: what an RL trainer does, through a real server with the async SDK.

16 episodes run at once, 50 steps each. A step is an exec of a short shell
command and a 4 KiB file written and read back, both checked. Every 10 steps
the episode snapshots its sandbox; twice per episode it backtracks: restores a
(seeded) random earlier snapshot, deletes the sandbox it was in and carries on
in the restored one. At the end it forks its sandbox 4 ways and each fork
answers an exec; then everything it made (forks, sandboxes, snapshots, also
the one the fork took) is deleted.

The server has its defaults except the limits a trainer raises for its own
concurrency: the create rate (16 creates at once) and ``max_sandboxes`` (the
forks of 16 episodes); one create before the clock starts makes the template,
as on a server that has run before.

Figures: steps_per_s (all steps over the wall time from the first create to
the last episode's forks answering), the step latency median, p95 and
step_p99_ms, failed_steps (counted, never aborting), failed_ops (snapshots,
backtracks and forks that failed), and leftover_mib: MemAvailable drop plus
growth of the state dir's filesystem against a baseline taken before the
server started, once the server is stopped, its state dir removed and the
host's free memory has settled (it rises for up to tens of seconds after the
VMs are gone: 266 MiB short right after the stop, 40 at +15 s, 5 at +45 s in one
run; leftover_mem_at_stop_mib is the drop right after the stop, settle_s how long
it took). Others' work on a shared host moves both; the exact checks are leftover_processes,
leftover_mounts and leftover_loops (what still refers to the state dir).
cow_after_delete_mib: growth of the copy-on-write filesystem since the server
started, once the episodes deleted everything (the template and the warm pool
are part of it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import (
    Target,
    api_server,
    cow_root,
    fs_used,
    leftovers,
    median,
    mem_available,
    new_state_dir,
    p95,
    percentile,
    report,
)

from sietch import AsyncClient, AsyncSandbox, SietchError

MiB = 1024 * 1024


@dataclass(frozen=True)
class Plan:
    episodes: int
    steps: int
    every: int
    """Steps between snapshots."""
    forks: int


@dataclass
class Tally:
    step_ms: list[float] = field(default_factory=list)
    failed_steps: int = 0
    failed_ops: int = 0
    backtracks: int = 0
    ends: list[float] = field(default_factory=list)


def complain(what: str, exc: BaseException) -> None:
    print(f"{what} failed: {exc!r}", file=sys.stderr)


async def step(sb: AsyncSandbox, episode: int, n: int, tally: Tally) -> None:
    """One step: a shell command and a 4 KiB file round trip, both checked."""
    started = time.perf_counter()
    data = os.urandom(4096)
    try:
        result = await sb.exec(f"echo $(({episode} * 1000 + {n}))")
        if result.exit_code != 0 or result.stdout != f"{episode * 1000 + n}\n":
            raise RuntimeError(f"wrong exec result {result}")
        await sb.files.write("/root/step.bin", data)
        if await sb.files.read("/root/step.bin") != data:
            raise RuntimeError("the file read back differs from what was written")
    except (SietchError, RuntimeError) as exc:
        tally.failed_steps += 1
        complain(f"episode {episode} step {n}", exc)
    tally.step_ms.append((time.perf_counter() - started) * 1000)


async def delete_all(client: AsyncClient, boxes: list[AsyncSandbox], sandbox_ids: set[str]) -> None:
    """Delete the sandboxes, then every snapshot taken of them, newest (children) first."""
    for sb in boxes:
        with contextlib.suppress(SietchError):
            await sb.kill()
    snaps = [
        s for s in await AsyncSandbox.list_snapshots(client=client) if s.sandbox_id in sandbox_ids
    ]
    for snap in sorted(snaps, key=lambda s: s.created_at, reverse=True):
        try:
            await AsyncSandbox.delete_snapshot(snap.id, client=client)
        except SietchError as exc:  # left_snapshots reports it
            complain(f"deleting {snap.id}", exc)


async def episode(client: AsyncClient, n: int, plan: Plan, tally: Tally) -> None:
    rng = random.Random(n)
    # Two backtracks, spread over the steps after the first snapshot.
    backtrack_at = {plan.every + (plan.steps - plan.every) * k // 3 for k in (1, 2)}
    boxes: list[AsyncSandbox] = []  # to delete at the end
    used: set[str] = set()  # every sandbox id the episode ran in (their snapshots go too)
    try:
        sb = await AsyncSandbox.create(client=client, labels={"bench": "rollout"})
        boxes.append(sb)
        used.add(sb.id)
        snaps: list[str] = []
        for i in range(1, plan.steps + 1):
            await step(sb, n, i, tally)
            try:
                if i % plan.every == 0:
                    snaps.append((await sb.snapshot(f"ep{n}-step{i}")).id)
                if i in backtrack_at and snaps:
                    back = await AsyncSandbox.restore(rng.choice(snaps), client=client)
                    boxes.append(back)
                    used.add(back.id)
                    await sb.kill()
                    boxes.remove(sb)
                    sb = back
                    tally.backtracks += 1
            except SietchError as exc:
                tally.failed_ops += 1
                complain(f"episode {n} snapshot/backtrack after step {i}", exc)
        try:
            copies = await sb.fork(plan.forks)
            boxes.extend(copies)
            answers = await asyncio.gather(*(c.exec(["true"]) for c in copies))
            if any(a.exit_code != 0 for a in answers):
                raise RuntimeError(f"a fork's exec failed: {answers}")
        except (SietchError, RuntimeError) as exc:
            tally.failed_ops += 1
            complain(f"episode {n} fork", exc)
        tally.ends.append(time.perf_counter())
    finally:
        await delete_all(client, boxes, used)


async def run(url: str, key: str, state: Path, plan: Plan) -> dict[str, float | int]:
    tally = Tally()
    cow = cow_root(state)
    cow_start = fs_used(cow)
    async with AsyncClient(url, key) as client:
        # A trainer's server has its template already: boot it before the clock starts.
        await (await AsyncSandbox.create(client=client)).kill()
        started = time.perf_counter()
        await asyncio.gather(*(episode(client, n, plan, tally) for n in range(plan.episodes)))
        wall = max(tally.ends, default=time.perf_counter()) - started
        left_sandboxes = len(await AsyncSandbox.list(client=client))
        left_snapshots = len(await AsyncSandbox.list_snapshots(client=client))
    os.sync()
    return {
        "steps_per_s": round(len(tally.step_ms) / wall, 2),
        "wall_s": round(wall, 2),
        "step_median_ms": round(median(tally.step_ms), 1),
        "step_p95_ms": round(p95(tally.step_ms), 1),
        "step_p99_ms": round(percentile(tally.step_ms, 0.99), 1),
        "failed_steps": tally.failed_steps,
        "failed_ops": tally.failed_ops,
        "backtracks": tally.backtracks,
        "left_sandboxes": left_sandboxes,
        "left_snapshots": left_snapshots,
        "cow_after_delete_mib": round((fs_used(cow) - cow_start) / MiB, 1),
    }


SETTLE_LIMIT_S = 90.0
SETTLE_QUIET = 2 * MiB
"""Free memory counts as settled once it rose by less than this in SETTLE_EVERY_S."""
SETTLE_EVERY_S = 5.0


def settled_mem_available() -> tuple[int, float]:
    """MemAvailable once it stops rising (the kernel frees exited VMs' memory late), and
    the seconds that took, at most :data:`SETTLE_LIMIT_S`."""
    started, last = time.monotonic(), mem_available()
    while time.monotonic() - started < SETTLE_LIMIT_S:
        time.sleep(SETTLE_EVERY_S)
        now = mem_available()
        if now - last < SETTLE_QUIET:
            return max(now, last), time.monotonic() - started
        last = now
    return last, time.monotonic() - started


def main(plan: Plan) -> None:
    state = new_state_dir()
    settings = {
        "SIETCH_CREATE_RATE_PER_MIN": "1000000",
        "SIETCH_CREATE_BURST": str(plan.episodes + 1),
        # Each episode holds its sandbox, a restored one while backtracking, and its forks.
        "SIETCH_MAX_SANDBOXES": str(max(64, plan.episodes * (plan.forks + 2) + 1)),
    }
    os.sync()
    mem_before, disk_before = mem_available(), fs_used(state.parent)
    with api_server(state, settings) as (url, key):
        figures = asyncio.run(run(url, key, state, plan))
    os.sync()
    at_stop = (mem_before - mem_available()) / MiB
    settled, settle_s = settled_mem_available()
    mem_drop = (mem_before - settled) / MiB
    disk_growth = (fs_used(state.parent) - disk_before) / MiB
    figures.update(
        **leftovers(state),
        leftover_mib=round(mem_drop + disk_growth, 1),
        leftover_mem_mib=round(mem_drop, 1),
        leftover_mem_at_stop_mib=round(at_stop, 1),
        settle_s=round(settle_s, 1),
        leftover_disk_mib=round(disk_growth, 1),
    )
    targets = {
        "steps_per_s": Target(20, at_least=True),
        "failed_steps": Target(0),
        "leftover_mib": Target(16),
    }
    report({"episodes": plan.episodes, "steps": plan.steps, **figures}, targets)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--snapshot-every", type=int, default=10)
    parser.add_argument("--forks", type=int, default=4)
    args = parser.parse_args()
    main(Plan(args.episodes, args.steps, args.snapshot_every, args.forks))
