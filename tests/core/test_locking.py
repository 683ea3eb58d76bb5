"""The sandbox lock: commands run side by side; snapshots and the like wait for them."""

from __future__ import annotations

import asyncio

import pytest

from sietch.core.live import LiveSandbox
from sietch.core.manager import Manager
from sietch.core.rwlock import RWLock
from sietch.errors import Conflict, SandboxNotFound, SietchError
from tests.agent.hostside import eventually


async def test_shared_holders_overlap_and_exclusive_waits_for_them() -> None:
    """Two shared holders hold the lock at once; an exclusive request gets it after both."""
    lock = RWLock()
    order: list[str] = []
    both_in = asyncio.Event()
    release = asyncio.Event()

    async def reader(name: str) -> None:
        async with lock.shared():
            order.append(f"{name} in")
            if len(order) == 2:
                both_in.set()
            await release.wait()
            order.append(f"{name} out")

    async def writer() -> None:
        await lock.acquire_exclusive()
        order.append("writer")
        lock.release_exclusive()

    readers = [asyncio.ensure_future(reader(n)) for n in ("a", "b")]
    await both_in.wait()
    wrote = asyncio.ensure_future(writer())
    await asyncio.sleep(0)
    assert "writer" not in order
    release.set()
    await asyncio.gather(*readers, wrote)
    assert order[-1] == "writer"


async def test_exclusive_gives_up_and_lets_queued_readers_go() -> None:
    """An exclusive request that times out raises, and shared requests queued behind it go on."""
    lock = RWLock()
    await lock.acquire_shared()
    with pytest.raises(TimeoutError):
        await lock.acquire_exclusive(0.05)
    async with asyncio.timeout(5):  # not queued behind a writer that gave up
        await lock.acquire_shared()
    lock.release_shared()
    lock.release_shared()
    await lock.acquire_exclusive(0)
    lock.release_exclusive()


async def test_snapshot_is_busy_while_a_command_holds_the_sandbox(
    manager: Manager, shared: LiveSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A snapshot waits for the commands in flight and, past SIETCH_LOCK_WAIT_S, says busy."""
    monkeypatch.setattr(manager.settings, "lock_wait_s", 0.2)
    async with manager.use(shared.id) as sandbox, manager.use(shared.id):
        with pytest.raises(Conflict, match="SIETCH_LOCK_WAIT_S"):
            await manager.snapshot(shared.id)
        assert (await sandbox.exec(["echo", "still here"])).stdout == b"still here\n"


async def test_delete_ends_a_long_command_instead_of_waiting(manager: Manager) -> None:
    """Delete during a blocking command returns at once; the command fails; use() then 404s."""
    info = await manager.create()

    async def long_command() -> None:
        async with manager.use(info.id) as sandbox:
            await sandbox.exec(["sleep", "600"])

    running = asyncio.ensure_future(long_command())

    async def sleeping() -> None:
        ps = await manager.sandbox(info.id).exec(["ps", "-eo", "args"])
        assert b"sleep 600" in ps.stdout

    await eventually(sleeping, timeout=30)
    await manager.delete(info.id)
    with pytest.raises(SietchError):
        await running
    with pytest.raises(SandboxNotFound):
        async with manager.use(info.id):
            pass
