"""The warm pool's bookkeeping under a burst (pure logic: a fake host instead of VMs)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any

import pytest

from sietch.core import pool
from sietch.core.models import SandboxInfo, SandboxSpec, SandboxState, Timeouts
from sietch.core.pool import WarmPool
from sietch.errors import FileNotFound


class FakeSandbox:
    def __init__(self, info: SandboxInfo) -> None:
        self.info = info
        self.id = info.id
        self.agent = self
        self.log = logging.getLogger("fake")

    async def call(self, *_: Any, **__: Any) -> dict[str, Any]:
        return {}

    async def exec(self, *_: Any) -> None:
        return None

    async def stat(self, path: str) -> None:
        raise FileNotFound(f"{path} is not in this fake image (no kernel gateway)")


class FakeHost:
    """Restores that take until :attr:`release` is set, counting how many run at once."""

    def __init__(self) -> None:
        self.sandboxes: dict[str, FakeSandbox] = {}
        self.running = self.most = 0
        self.release = asyncio.Event()
        self.tasks: list[asyncio.Task[Any]] = []
        self.store = self

    def put(self, info: SandboxInfo) -> None:
        pass

    async def restore(self, template_id: str, **options: Any) -> SandboxInfo:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await self.release.wait()
        finally:
            self.running -= 1
        n = len(self.sandboxes)
        info = SandboxInfo(
            id=f"sb-{n}",
            state=SandboxState.RUNNING,
            image="default",
            vcpus=1,
            memory_mib=512,
            disk_mib=2048,
            created_at=datetime.now(UTC),
            accel="tcg",
            labels=options["labels"],
        )
        self.sandboxes[info.id] = FakeSandbox(info)
        return info

    def live(self, sandbox_id: str) -> FakeSandbox | None:
        return self.sandboxes.get(sandbox_id)

    async def destroy(self, sandbox_id: str) -> None:
        self.sandboxes.pop(sandbox_id, None)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.tasks.append(asyncio.ensure_future(coro))

    def set_timeouts(self, info: SandboxInfo, timeouts: Timeouts) -> None:
        pass


async def test_a_burst_waits_for_parallel_refills_bounded_by_concurrency() -> None:
    """Five creates on an empty pool of one are each served by a refill of their own, at
    most two restoring at once, and the pool is full again afterwards."""
    host = FakeHost()
    pool = WarmPool(host, size=1, parallel=2)  # type: ignore[arg-type]
    spec = SandboxSpec()
    takes = [asyncio.ensure_future(pool.take("k", spec, "tpl")) for _ in range(5)]
    for _ in range(50):  # let every take queue up and the refills start
        await asyncio.sleep(0)
    assert host.most == 2, "the refills did not run in parallel, or ran unbounded"
    assert not any(t.done() for t in takes)
    host.release.set()
    served = await asyncio.wait_for(asyncio.gather(*takes), 10)
    assert all(info is not None for info in served)
    assert len({info.id for info in served if info is not None}) == 5
    await asyncio.wait_for(asyncio.gather(*host.tasks), 10)
    assert host.most == 2
    assert len(pool.ready()) == 1, "the pool did not refill to its size"


async def test_a_hand_out_tops_the_pool_up_only_after_a_pause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With nobody waiting, the refill after a hand-out waits REFILL_DELAY_S (the new
    owner's first commands get the host meanwhile), then fills the pool again."""
    host = FakeHost()
    host.release.set()
    warm = WarmPool(host, size=1, parallel=1)  # type: ignore[arg-type]
    warm.refill("k", "tpl")
    await asyncio.wait_for(asyncio.gather(*host.tasks), 10)
    monkeypatch.setattr(pool, "REFILL_DELAY_S", 3600)
    assert await warm.take("k", SandboxSpec(), "tpl") is not None
    for _ in range(50):
        await asyncio.sleep(0)
    assert len(host.sandboxes) == 1 and not warm.ready(), "the refill did not wait"
    for task in host.tasks:
        task.cancel()
    monkeypatch.setattr(pool, "REFILL_DELAY_S", 0)
    assert await warm.take("k", SandboxSpec(), "tpl") is not None  # waits for its own fill
    async with asyncio.timeout(10):  # the refill, and the fill it starts
        while pending := [t for t in host.tasks if not t.done()]:
            await asyncio.wait(pending)
    assert len(host.sandboxes) == 3 and len(warm.ready()) == 1
