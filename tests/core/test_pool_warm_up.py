"""What a warm-pool fill runs in its sandbox before handing it out (pure logic: a fake host
instead of VMs): the image's own shell and true, or the tools' busybox where it has none."""

from __future__ import annotations

from typing import Any

import pytest

from sietch.core.images import TOOLS_BUSYBOX
from sietch.core.models import SandboxInfo
from sietch.core.pool import WARM_UP, WarmPool
from sietch.errors import NotFound
from tests.core.test_pool_burst import FakeHost, FakeSandbox
from tests.core.test_pool_retry import settle


class RecordingSandbox(FakeSandbox):
    """Records each exec's argv; ``missing`` programs are not in its image."""

    def __init__(self, info: SandboxInfo, missing: set[str]) -> None:
        super().__init__(info)
        self.missing = missing
        self.execs: list[list[str]] = []

    async def exec(self, argv: list[str], *_: Any) -> None:
        self.execs.append(argv)
        if argv[0] in self.missing:
            raise NotFound(f"command not found: {argv[0]}")


class RecordingHost(FakeHost):
    def __init__(self, missing: set[str]) -> None:
        super().__init__()
        self.release.set()
        self.missing = missing

    async def restore(self, template_id: str, **options: Any) -> SandboxInfo:
        info = await super().restore(template_id, **options)
        self.sandboxes[info.id] = RecordingSandbox(info, self.missing)
        return info


@pytest.mark.parametrize(
    ("missing", "expected"),
    [(set(), [WARM_UP]), ({"/bin/sh"}, [WARM_UP, [TOOLS_BUSYBOX, "true"]])],
    ids=["image-shell", "no-shell"],
)
async def test_a_fill_runs_the_images_own_programs_first(
    missing: set[str], expected: list[list[str]]
) -> None:
    """A fill warms the image's /bin/sh and true (its ld.so and libc, which the agent never
    runs), falling back to the tools' busybox in an image without a shell."""
    host = RecordingHost(missing)
    warm = WarmPool(host, size=1, parallel=1)  # type: ignore[arg-type]
    warm.refill("default", "tpl")
    await settle(host)
    [sandbox_id] = warm.ready()
    sandbox = host.sandboxes[sandbox_id]
    assert isinstance(sandbox, RecordingSandbox)
    assert sandbox.execs == expected
