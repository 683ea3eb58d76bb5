"""A process killed mid-snapshot leaves no listed snapshot that cannot be restored."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sietch.config import Settings
from sietch.core.manager import Manager
from sietch.storage import xfs
from sietch.vmm import process
from tests.conftest import short_tmpdir

CHILD = """
import asyncio, sys, time
from pathlib import Path
from sietch.config import Settings
from sietch.core.manager import Manager
from sietch.storage import xfs
from sietch.core import snapshots

state_dir, stage = Path(sys.argv[1]), sys.argv[2]
original = snapshots.Snapshots._commit

def commit(self, snap, tmp, final):
    if stage == "before-rename":
        print("KILL", flush=True)
        time.sleep(120)
    original(self, snap, tmp, final)
    print("KILL", flush=True)  # renamed into place, not yet recorded
    time.sleep(120)

async def main():
    async with Manager(Settings(state_dir=state_dir, templates=False)) as m:
        info = await m.create()
        await m.sandbox(info.id).write_file("/root/f", b"kept")
        good = await m.snapshot(info.id, name="good")
        print("GOOD", good.id, flush=True)
        snapshots.Snapshots._commit = commit
        await m.snapshot(info.id, name="doomed")

asyncio.run(main())
"""


def crash_mid_snapshot(state_dir: Path, stage: str) -> str:
    """Run the child until it is inside the second snapshot, SIGKILL it; the first's id."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(state_dir), stage],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    good = None
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if line.startswith("GOOD"):
                good = line.split()[1]
            if line.startswith("KILL"):
                break
        else:
            pytest.fail(f"the child ended early with code {child.wait()}")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    assert good is not None
    return good


@pytest.mark.parametrize("stage", ["before-rename", "after-rename"])
async def test_kill_mid_snapshot_lists_only_restorable_snapshots(stage: str) -> None:
    """SIGKILL while a snapshot is written: after restart only the finished one is listed."""
    state_dir = short_tmpdir("stc")
    try:
        good = await asyncio.to_thread(crash_mid_snapshot, state_dir, stage)
        snapshots = next(
            p for p in (state_dir / "cow" / "snapshots", state_dir / "snapshots") if p.exists()
        )
        leftovers = os.listdir(snapshots)
        assert len(leftovers) == 2  # the good one and the half-written one
        async with Manager(Settings(state_dir=state_dir, templates=False)) as m:
            listed = [s.id for s in await m.list_snapshots()]
            assert listed == [good]
            assert os.listdir(snapshots) == [good]
            info = await m.restore(good)
            assert await m.sandbox(info.id).read_bytes("/root/f") == b"kept"
            await m.delete(info.id)
        assert not list(process.find_by_marker(str(state_dir)))
    finally:
        xfs.unmount(state_dir / "cow")
        shutil.rmtree(state_dir, ignore_errors=True)
