"""The warm pool after a failed fill (pure logic: a fake host instead of VMs): it tries
again after a pause, a bounded number of times, and a waiting create learns of the failure."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sietch.core import pool
from sietch.core.models import SandboxInfo, SandboxSpec
from sietch.core.pool import WarmPool
from sietch.errors import Unavailable
from tests.core.test_pool_burst import FakeHost


class FailingHost(FakeHost):
    """Restores that fail ``failures`` times, then succeed; each one is counted."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.release.set()
        self.failures = failures
        self.restores = 0

    async def restore(self, template_id: str, **options: Any) -> SandboxInfo:
        self.restores += 1
        if self.restores <= self.failures:
            raise Unavailable("the desktop sent no screen update within 30s")
        return await super().restore(template_id, **options)


@pytest.fixture(autouse=True)
def short_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool, "RETRY_S", 0.01)


async def settle(host: FakeHost) -> None:
    """Until every task the pool started has ended."""
    async with asyncio.timeout(30):
        while pending := [t for t in host.tasks if not t.done()]:
            await asyncio.wait(pending)


async def test_a_failed_fill_is_tried_again_until_it_succeeds() -> None:
    """Two failed restores, then the pool holds a sandbox: three restores in all."""
    host = FailingHost(failures=2)
    warm = WarmPool(host, size=1, parallel=1)  # type: ignore[arg-type]
    warm.refill("default", "tpl")
    await settle(host)
    assert host.restores == 3 and len(warm.ready()) == 1


async def test_a_fill_that_always_fails_gives_up() -> None:
    """A template that never restores costs ATTEMPTS restores, not a loop of them; a create
    waiting meanwhile fails with the restore's error instead of waiting for ever."""
    host = FailingHost(failures=1000)
    warm = WarmPool(host, size=1, parallel=1)  # type: ignore[arg-type]
    with pytest.raises(Unavailable, match="no screen update"):
        await warm.take("default", SandboxSpec(), "tpl")
    await settle(host)
    # Two fills (the pool's one, and one for the waiting create), each tried ATTEMPTS times.
    assert host.restores == 2 * pool.ATTEMPTS and not warm.ready()
