"""Every way a live sandbox ends leaves nothing on the host.

Nothing means: no QEMU with the sandbox's work dir on its command line, no
process in or holding its network namespace (QEMU, slirp4netns, our own fd),
no work dir, and no record in state ``running``. Failures are provoked for
real: a boot timeout too short to boot, a snapshot whose device state was
cut short, a VM whose QMP socket went missing while Sietch was down.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from sietch.config import Settings
from sietch.core.manager import Manager
from sietch.core.models import SandboxState
from sietch.core.pool import is_pooled
from sietch.core.store import Store
from sietch.errors import BootError
from sietch.storage import xfs
from sietch.vmm import process
from tests.agent.hostside import eventually
from tests.conftest import short_tmpdir


@dataclass
class Traces:
    """What one live sandbox held on the host, to prove later that none of it is left."""

    sandbox_id: str
    workdir: Path
    netns: str | None
    """``net:[inode]`` of its own namespace; None when Sietch can't isolate (not root)."""


def traces(manager: Manager, sandbox_id: str, pid: int) -> Traces:
    netns = os.readlink(f"/proc/{pid}/ns/net")
    own = netns != os.readlink("/proc/self/ns/net")
    return Traces(sandbox_id, manager.sandboxes_dir / sandbox_id, netns if own else None)


def namespace_holders(netns: str) -> list[int]:
    """Processes running in ``netns`` or holding an fd of it."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            links = [os.readlink(entry / "ns" / "net")]
            links += [os.readlink(fd) for fd in (entry / "fd").iterdir()]
        except OSError:  # gone meanwhile, or a kernel thread
            continue
        if netns in links:
            found.append(int(entry.name))
    return found


async def assert_gone(t: Traces, store: Store, timeout: float = 30.0) -> None:
    """Wait (deadline retries) until nothing of the sandbox is left."""

    async def check() -> None:
        assert not list(process.find_by_marker(str(t.workdir) + os.sep))
        if t.netns is not None:
            assert not namespace_holders(t.netns), f"{t.netns} is still held"
        assert not t.workdir.exists()
        info = store.get(t.sandbox_id)
        assert info is None or info.state is not SandboxState.RUNNING

    await eventually(check, timeout)


@asynccontextmanager
async def spotting(manager: Manager) -> AsyncIterator[list[Traces]]:
    """Record the traces of every QEMU that starts meanwhile (for creates that fail)."""
    found: list[Traces] = []
    marker = str(manager.sandboxes_dir) + os.sep

    async def watch() -> None:
        while True:
            for pid, args in process.find_by_marker(marker):
                sandbox_id = next(a for a in args if marker in a).split(marker)[1].split(os.sep)[0]
                try:  # once it is QEMU itself (not setpriv/nsenter) it is in its namespace
                    is_qemu = "qemu-system" in os.readlink(f"/proc/{pid}/exe")
                except OSError:
                    continue
                if is_qemu and sandbox_id not in {t.sandbox_id for t in found}:
                    found.append(traces(manager, sandbox_id, pid))
            await asyncio.sleep(0.005)

    task = asyncio.ensure_future(watch())
    try:
        yield found
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def pooled(manager: Manager, sandbox_id: str) -> bool:
    info = manager.store.get(sandbox_id)
    return info is not None and is_pooled(info)


@asynccontextmanager
async def own_state_dir() -> AsyncIterator[Path]:
    state_dir = short_tmpdir("stt")
    try:
        yield state_dir
    finally:
        xfs.unmount(state_dir / "cow")
        shutil.rmtree(state_dir, ignore_errors=True)


async def test_delete_leaves_nothing(manager: Manager) -> None:
    """Deleting a sandbox ends its QEMU, uplink and namespace, and removes its files and row."""
    info = await manager.create()
    assert info.pid is not None
    t = traces(manager, info.id, info.pid)
    await manager.delete(info.id)
    await assert_gone(t, manager.store)
    assert manager.store.get(info.id) is None


async def test_expiry_leaves_nothing(manager: Manager) -> None:
    """A sandbox whose timeout ran out is deleted, leaving nothing behind."""
    info = await manager.create(timeout_s=3)
    assert info.pid is not None
    t = traces(manager, info.id, info.pid)
    await assert_gone(t, manager.store, timeout=60)
    assert manager.store.get(info.id) is None


async def test_failed_boot_leaves_nothing() -> None:
    """A cold boot that times out kills its QEMU and removes its network, files and row."""
    async with own_state_dir() as state_dir:
        settings = Settings(state_dir=state_dir, templates=False, boot_timeout_s=1.0)
        async with Manager(settings) as m, spotting(m) as started:
            with pytest.raises(BootError):
                await m.create()
            assert len(started) == 1
            await assert_gone(started[0], m.store)
            assert m.store.all() == []


async def test_failed_restore_leaves_nothing(manager: Manager) -> None:
    """A restore of a snapshot whose device state is cut short leaves nothing of its VM."""
    info = await manager.create()
    snap = await manager.snapshot(info.id)
    await manager.delete(info.id)
    state = manager.snapshots.dir / snap.id / "state"
    state.write_bytes(state.read_bytes()[:1024])
    try:
        async with spotting(manager) as started:
            with pytest.raises(BootError):
                await manager.restore(snap.id)
        # The warm pool may be refilling meanwhile: its restores are not this one.
        started = [t for t in started if not pooled(manager, t.sandbox_id)]
        assert len(started) == 1
        await assert_gone(started[0], manager.store)
        assert manager.store.get(started[0].sandbox_id) is None
    finally:
        await manager.delete_snapshot(snap.id)


FIRST_RUN = """
import asyncio, json, sys
from pathlib import Path
from sietch.config import Settings
from sietch.core.manager import Manager

async def main():
    async with Manager(Settings(state_dir=Path(sys.argv[1]), pool_size=0), persistent=True) as m:
        made = [await m.create() for _ in range(4)]
        print(json.dumps([[i.id, i.pid] for i in made]))

asyncio.run(main())
"""


def first_run(state_dir: Path) -> list[tuple[str, int]]:
    """A persistent manager in a process of its own (as the server is) makes 4 sandboxes."""
    out = subprocess.run(
        [sys.executable, "-c", FIRST_RUN, str(state_dir)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    ).stdout
    return [(sandbox_id, pid) for sandbox_id, pid in json.loads(out.splitlines()[-1])]


async def test_restart_adopts_every_running_vm_and_ends_one_it_cannot_drive() -> None:
    """After a restart each adopted QEMU is the same process and answers; one whose QMP
    socket went missing is killed and its files removed, its record dead."""
    async with own_state_dir() as state_dir:
        made = await asyncio.to_thread(first_run, state_dir)
        assert all(process.alive(pid) for _, pid in made)
        m = Manager(Settings(state_dir=state_dir, pool_size=0), persistent=True)
        broken_id, broken_pid = made.pop()
        t = traces(m, broken_id, broken_pid)
        (t.workdir / "qmp.sock").unlink()
        async with m:
            await assert_gone(t, m.store)
            assert (await m.get(broken_id)).state is SandboxState.DEAD
            for sandbox_id, pid in made:
                assert process.alive(pid) and (await m.get(sandbox_id)).pid == pid
                run = await m.sandbox(sandbox_id).exec(["echo", sandbox_id])
                assert run.stdout == f"{sandbox_id}\n".encode()
                await m.delete(sandbox_id)


async def test_close_leaves_nothing_of_created_or_pooled_sandboxes() -> None:
    """Closing a (library-mode) manager ends its sandboxes and its warm pool's."""
    async with own_state_dir() as state_dir:
        async with Manager(Settings(state_dir=state_dir, pool_size=1)) as m:
            info = await m.create()

            async def pooled() -> str:
                ready = m.pool.ready()
                assert ready, "the warm pool has not filled yet"
                return ready.pop()

            pooled_id = await eventually(pooled, timeout=120)
            pooled_pid = (await m.get(pooled_id)).pid
            assert info.pid is not None and pooled_pid is not None
            left = [traces(m, info.id, info.pid), traces(m, pooled_id, pooled_pid)]
        store = Store(state_dir / "sietch.db")
        try:
            for t in left:
                await assert_gone(t, store)
            assert store.all() == []
        finally:
            store.close()
