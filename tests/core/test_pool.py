"""The warm pool: creates hand out sandboxes restored ahead of time, made the caller's."""

from __future__ import annotations

import asyncio

from sietch.core.manager import Manager
from tests.conftest import SandboxFactory


async def _pooled(manager: Manager, image: str = "default") -> set[str]:
    """Wait until the pool holds a ready sandbox for a create of ``image`` with the default
    sizes; return those pooled ids (the whole suite's pool also holds other sizes')."""
    s = manager.settings
    sizes = (s.default_vcpus, s.default_memory_mib, s.default_disk_mib)
    for _ in range(1200):
        # One may go between the two looks (the pool ends those of an older template).
        infos = [manager.store.get(i) for i in manager.pool.ready()]
        ready = {
            info.id
            for info in infos
            if info is not None
            and info.image == image
            and (info.vcpus, info.memory_mib, info.disk_mib) == sizes
        }
        if ready:
            return ready
        await asyncio.sleep(0.1)
    raise AssertionError("the warm pool never filled")


async def test_create_hands_out_a_warm_sandbox(manager: Manager, sandboxes: SandboxFactory) -> None:
    """A create takes a pooled sandbox, gives it the caller's env and labels, and a
    pooled sandbox never shows in listings; two handed-out ones differ in randomness."""
    await sandboxes()  # makes the template, which starts filling the pool
    pooled = await _pooled(manager)
    assert not pooled & {i.id for i in await manager.list()}
    a = await sandboxes(env={"GREETING": "hi"}, labels={"who": "pool-a"})
    assert a.id in pooled
    assert (await a.exec('echo "$GREETING"')).stdout == b"hi\n"
    assert [i.id for i in await manager.list(labels={"who": "pool-a"})] == [a.id]
    refilled = await _pooled(manager)
    b = await sandboxes()
    assert b.id in refilled
    read = ["sh", "-c", "head -c 32 /dev/urandom | od -An -tx1"]
    assert (await a.exec(read)).stdout != (await b.exec(read)).stdout
