"""A hibernated sandbox's resume is held to the host memory reserve like a create."""

from __future__ import annotations

import pytest

from sietch.config import MiB
from sietch.core.manager import Manager
from sietch.core.models import SandboxState
from sietch.errors import Unavailable
from tests.conftest import SandboxFactory


async def test_a_resume_below_the_memory_reserve_is_503_and_stays_hibernated(
    manager: Manager, sandboxes: SandboxFactory
) -> None:
    """With a reserve above what the host has, resuming a hibernated sandbox is refused
    (503) naming the resume and the setting; it stays hibernated, nothing of it runs, and
    it resumes with its files once the reserve allows."""
    sb = await sandboxes()
    await sb.write_file("/root/kept", b"still here")
    await manager.hibernate(sb.id)
    guard = manager.memory_guard
    reserve = guard.reserve
    guard.reserve = guard.available() + 1024 * MiB
    try:
        with pytest.raises(Unavailable, match=f"resuming {sb.id}.*SIETCH_MEMORY_RESERVE_MIB"):
            await manager.resume(sb.id)
    finally:
        guard.reserve = reserve
    assert (await manager.get(sb.id)).state is SandboxState.HIBERNATED
    assert manager.live(sb.id) is None
    assert (await manager.resume(sb.id)).state is SandboxState.RUNNING
    async with manager.use(sb.id) as live:
        assert (await live.exec(["cat", "/root/kept"])).stdout == b"still here"
