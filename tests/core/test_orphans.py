"""No VM outlives its owner: a SIGKILLed owner's QEMU is reaped by the next manager start,
and the sandbox's network uplink goes with its QEMU."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sietch.config import Settings
from sietch.core.manager import Manager
from sietch.vmm import process
from tests.conftest import short_tmpdir
from tests.network.outside import uplinks

OWNER = textwrap.dedent(
    """
    import asyncio, sys
    from sietch.config import Settings
    from sietch.core.manager import Manager

    async def main():
        m = Manager(Settings(state_dir=sys.argv[1]), persistent=sys.argv[2] == "1")
        await m.start()
        info = await m.create()
        print(info.pid, flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


def _start_owner(state_dir: Path, persistent: bool) -> tuple[subprocess.Popen[str], int]:
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(state_dir), "1" if persistent else "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert owner.stdout is not None
    line = owner.stdout.readline()
    assert line.strip().isdigit(), f"owner failed to create a sandbox: {line!r}"
    return owner, int(line)


@pytest.mark.parametrize("persistent", [False, True], ids=["library", "persistent"])
async def test_sigkilled_owner_leaves_no_vm(persistent: bool) -> None:
    """After the owner is SIGKILLed, the next manager start leaves no QEMU of its state dir."""
    state_dir = short_tmpdir("sto")
    try:
        owner, qemu_pid = _start_owner(state_dir, persistent)
        assert process.alive(qemu_pid)
        owned = uplinks(state_dir)
        assert owned, "the owner's sandbox has no uplink"
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait()
        assert owner.stdout is not None
        owner.stdout.close()
        async with Manager(Settings(state_dir=state_dir)) as m:
            assert not list(process.find_by_marker(str(state_dir)))
            assert not process.alive(qemu_pid)
            for pid in owned:
                await asyncio.wait_for(process.wait_exit(pid), 10)
            (info,) = await m.list()
            assert info.state == "dead"
            await m.delete(info.id)
            assert not os.listdir(m.sandboxes_dir)
    finally:
        for pid, _ in process.find_by_marker(str(state_dir)):
            process.kill_and_forget(pid)
        shutil.rmtree(state_dir, ignore_errors=True)
