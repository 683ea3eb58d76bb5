"""A desktop sandbox, booted once per module: its boot makes the desktop image's template."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from sietch.core.live import LiveSandbox
from sietch.core.manager import Manager

PROBE = Path(__file__).with_name("rfb_probe.py")
GUEST_PROBE = "/tmp/rfb_probe.py"
SPEC = {"image": "desktop", "memory_mib": 1024, "disk_mib": 4096}
"""What a desktop sandbox needs: code-server and Xfce want more than the default 512 MiB."""
READY_DEADLINE = 360.0
"""The agent reports ready once the desktop answers; a cold boot under TCG takes minutes."""


async def until_ready(sandbox: LiveSandbox) -> dict[str, object]:
    """The agent's ``ready`` answer, which it gives once the image's services are up."""
    async with asyncio.timeout(READY_DEADLINE):
        return await sandbox.agent.call("ready")


async def with_probe(sandbox: LiveSandbox) -> LiveSandbox:
    await sandbox.write_file(GUEST_PROBE, PROBE.read_bytes())
    return sandbox


@pytest_asyncio.fixture(scope="module")
async def desktop_sandbox(manager: Manager) -> AsyncIterator[LiveSandbox]:
    """The first desktop sandbox of the session: a cold boot, then the template is taken."""
    info = await manager.create(**SPEC)
    sandbox = manager.sandbox(info.id)
    try:
        assert (await until_ready(sandbox))["services"] == "up"
        yield await with_probe(sandbox)
    finally:
        await manager.delete(info.id)
