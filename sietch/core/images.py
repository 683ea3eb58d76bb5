"""User images at run time: what a sandbox of one boots from, and its start command.

The builder (:mod:`sietch.builder`) makes the records; the manager reads them
on every create: the disk to boot, the default env/user/directory, and, on
the one cold boot that makes the image's template, the start command, the
wait until it is ready and the exposed ports, all before the template is
saved, so every sandbox restored from it has them from its first instant.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from sietch.core.live import LiveSandbox
from sietch.core.models import ImageConfig, ImageRecord
from sietch.core.store import Store
from sietch.errors import ImageBuildError, SietchError

TOOLS_PYTHON = "/run/sietch/bin/sietch-python"
TOOLS_BUSYBOX = "/run/sietch/bin/busybox"
"""The tools disk's python and busybox: there whatever the image has (or lacks)."""
_PORTS_OPEN = (
    "import socket, sys\n"
    "for p in sys.argv[1:]:\n"
    "    socket.create_connection(('127.0.0.1', int(p)), 1).close()\n"
)


async def start(sandbox: LiveSandbox, config: ImageConfig, timeout_s: float) -> None:
    """Start the image's command and wait until it is ready; expose its ports."""
    if config.start is not None:
        pid = await sandbox.start_background(config.start, tag="start")
        ready = config.ready or (
            [TOOLS_PYTHON, "-c", _PORTS_OPEN, *map(str, config.expose)] if config.expose else None
        )
        if ready is not None:
            await _wait_ready(sandbox, pid, ready, config.ready_timeout_s or timeout_s)
    for port in config.expose:
        sandbox.info.ports.append(await sandbox.forward(port))


async def _wait_ready(sandbox: LiveSandbox, pid: int, ready: list[str], timeout_s: float) -> None:
    """Retry the ready check until it passes; fail with the output if the command exits or
    the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await sandbox.exec(ready, timeout=max(1.0, min(10.0, timeout_s)))
        if result.exit_code == 0:
            return
        output = result.stdout + result.stderr
        gone = [p for p in await sandbox.processes() if p.pid == pid and not p.running]
        if gone:
            with contextlib.suppress(SietchError, TimeoutError):
                replay = await sandbox.attach(pid)
                output = (await asyncio.wait_for(replay.result(), 5)).stdout
                await replay.close()
            raise ImageBuildError(
                f"the start command exited with code {gone[0].exit_code} before it was ready",
                output=output.decode(errors="replace")[-4000:],
            )
        if time.monotonic() > deadline:
            raise ImageBuildError(
                f"the start command was not ready within {timeout_s:g}s (its ready check: "
                f"{' '.join(ready)})",
                output=output.decode(errors="replace")[-4000:],
            )
        await asyncio.sleep(0.2)  # between tries of the ready check, bounded by the deadline


def users(store: Store, name: str) -> list[str]:
    """Sandboxes and (user) snapshots that run on image ``name``."""
    found = [i.id for i in store.all() if i.image == name]
    found += [s.id for s in store.all_snapshots() if s.image == name and not s.template]
    return found


def listed(store: Store, scope: str | None = None) -> list[ImageRecord]:
    """The ready images ``scope`` sees (None: an admin, every tenant's)."""
    return [i for i in store.all_images() if i.ready and scope in (None, i.tenant)]


def find(store: Store, name: str, scope: str | None = None) -> ImageRecord | None:
    """The user image ``name`` if ``scope`` sees it: another tenant's is as unknown as one
    that does not exist (a 404 that never confirms it does)."""
    image = store.get_image(name)
    return image if image is not None and scope in (None, image.tenant) else None


def disk_bytes(store: Store, tenant: str) -> int:
    """Host disk that ``tenant``'s user images take (their own layers, as listed)."""
    return sum(i.size_bytes for i in store.all_images() if i.tenant == tenant)
