"""Timeouts on real VMs: kill, pause, hibernate; set_timeout; idleness and its leases."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from sietch.core.lifecycle import Activity
from sietch.core.manager import Manager
from sietch.core.models import SandboxState
from sietch.errors import InvalidArgument
from sietch.vmm import process
from tests.agent.hostside import eventually
from tests.conftest import SandboxFactory

WAIT_S = 120.0
"""Deadline of every wait: a loaded machine acts late, never early."""


async def state_of(manager: Manager, sandbox_id: str) -> SandboxState:
    return (await manager.get(sandbox_id)).state


async def becomes(manager: Manager, sandbox_id: str, state: SandboxState) -> None:
    async def check() -> None:
        assert await state_of(manager, sandbox_id) is state

    await eventually(check, WAIT_S)


async def test_timeout_kill_deletes_the_sandbox(
    manager: Manager, sandboxes: SandboxFactory
) -> None:
    """on_timeout=kill (the default) deletes the sandbox and its record, as timeout_s did."""
    sb = await sandboxes(timeout_s=1)
    assert sb.info.expires_at is not None and sb.info.on_timeout == "kill"
    workdir = manager.sandboxes_dir / sb.id

    async def gone() -> None:
        assert manager.store.get(sb.id) is None

    await eventually(gone, WAIT_S)
    assert not workdir.exists()


async def test_timeout_pause_then_a_command_resumes_it(
    manager: Manager, sandboxes: SandboxFactory
) -> None:
    """on_timeout=pause stops the vCPUs; a command wakes it (auto_resume), which restarts
    the timeout."""
    sb = await sandboxes(timeout_s=1, on_timeout="pause")
    await becomes(manager, sb.id, SandboxState.PAUSED)
    assert (await manager.get(sb.id)).expires_at is None
    async with manager.use(sb.id) as woken:
        assert (await woken.exec(["echo", "awake"])).stdout == b"awake\n"
    await becomes(manager, sb.id, SandboxState.PAUSED)  # timed out again after the resume


async def test_timeout_hibernate_ends_the_vm_and_exec_wakes_it(
    manager: Manager, sandboxes: SandboxFactory
) -> None:
    """on_timeout=hibernate ends QEMU and keeps the record; an exec restores it, files kept."""
    sb = await sandboxes(timeout_s=30, on_timeout="hibernate")
    await sb.write_file("/root/kept", b"still here")
    pid = sb.machine.pid
    assert pid is not None
    await manager.set_timeout(sb.id, timeout_s=1)
    await becomes(manager, sb.id, SandboxState.HIBERNATED)
    await eventually(_dead(pid), WAIT_S)
    assert not list(process.find_by_marker(str(manager.sandboxes_dir / sb.id)))
    async with manager.use(sb.id) as woken:
        assert (await woken.exec(["cat", "/root/kept"])).stdout == b"still here"
    assert (await manager.get(sb.id)).id == sb.id


def _dead(pid: int) -> Callable[[], Awaitable[None]]:
    async def check() -> None:
        assert not process.alive(pid)

    return check


async def test_set_timeout_extends(manager: Manager, sandboxes: SandboxFactory) -> None:
    """set_timeout moves the deadline: a twin with the old timeout is killed, the other runs."""
    kept, twin = await asyncio.gather(
        sandboxes(timeout_s=3, on_timeout="pause"), sandboxes(timeout_s=3, on_timeout="pause")
    )
    extended = await manager.set_timeout(kept.id, timeout_s=3600)
    assert extended.expires_at is not None and twin.info.expires_at is not None
    assert extended.expires_at > twin.info.expires_at
    await becomes(manager, twin.id, SandboxState.PAUSED)
    assert await state_of(manager, kept.id) is SandboxState.RUNNING
    cleared = await manager.set_timeout(kept.id, timeout_s=None)
    assert cleared.expires_at is None
    with pytest.raises(InvalidArgument):
        await manager.set_timeout(kept.id, on_timeout="explode")


async def test_idle_timeout_waits_for_leases_and_processes(
    manager: Manager, sandboxes: SandboxFactory
) -> None:
    """The idle timeout fires only when idle: a held lease or a process started through the
    API keeps a sandbox awake while an idle twin is paused."""
    leased, busy, idle = await asyncio.gather(sandboxes(), sandboxes(), sandboxes())
    pid = await busy.start_background(["sleep", "3600"])
    lease = manager.activity.lease(leased.id)
    try:
        for sb in (leased, busy, idle):
            await manager.set_timeout(sb.id, idle_timeout_s=1, on_idle="pause")
        await becomes(manager, idle.id, SandboxState.PAUSED)
        assert await state_of(manager, leased.id) is SandboxState.RUNNING
        assert await state_of(manager, busy.id) is SandboxState.RUNNING
    finally:
        lease.release()
    await becomes(manager, leased.id, SandboxState.PAUSED)
    await busy.signal(pid, "SIGKILL")
    await becomes(manager, busy.id, SandboxState.PAUSED)


def test_activity_leases_nest_and_release_once() -> None:
    """A sandbox is busy while any lease is held; releasing one twice frees nothing more."""
    activity = Activity()
    first_seen = activity.idle_since("sb-x")
    assert first_seen is not None
    outer, inner = activity.lease("sb-x"), activity.lease("sb-x")
    assert activity.idle_since("sb-x") is None
    inner.release()
    inner.release()
    assert activity.idle_since("sb-x") is None and activity.leases("sb-x") == 1
    with activity.busy("sb-x"):
        assert activity.leases("sb-x") == 2
    outer.release()
    since = activity.idle_since("sb-x")
    assert since is not None and since >= first_seen
    assert activity.leases("sb-x") == 0
