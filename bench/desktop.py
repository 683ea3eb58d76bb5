"""Desktop sandboxes: create to first screenshot, screenshots, clicks, memory per desktop.

This process runs the server (uvicorn + manager, as ``sietch serve``) on a
fresh state dir and drives it with the async SDK over HTTP, as a user would.
The first create boots the desktop from scratch and saves its template
(``desktop_cold_boot_s``); every later one is a restore, from the warm pool
when it has refilled.

Figures: create_to_screenshot_median_ms (warm pool: create -> first PNG),
screenshot_median_ms / p95 (1280x800 PNG), click_median_ms (a click round
trip; both on a sandbox made from the template), desktop_cold_boot_s,
desktop_image_mib (the image's allocated size), desktop_pss_mib (PSS per idle
desktop sandbox with ``--idle`` running).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import time
from collections.abc import Awaitable

import uvicorn
from common import Target, admin_key, free_port, median, new_state_dir, p95, reap, report

from sietch.client import AsyncClient, AsyncSandbox
from sietch.config import Settings
from sietch.core.manager import Manager
from sietch.images.store import ImageStore
from sietch.server import create_app

MiB = 1024 * 1024
SPEC = {"memory_mib": 1024, "disk_mib": 4096}
CLICK_AT = (900, 500)
"""On the empty desktop: a click there changes nothing."""

TARGETS = {
    "create_to_screenshot_median_ms": Target(600),
    "screenshot_median_ms": Target(150),
    "click_median_ms": Target(50),
}


def pss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


async def pool_ready(m: Manager) -> None:
    """Until the warm pool holds a sandbox (a desktop restore takes seconds under TCG)."""
    for _ in range(3000):
        if m.pool.ready():
            return
        await asyncio.sleep(0.2)
    raise RuntimeError("the warm pool did not refill within 10 minutes")


async def timed(what: Awaitable[object]) -> float:
    started = time.perf_counter()
    await what
    return (time.perf_counter() - started) * 1000


async def measure(
    client: AsyncClient, m: Manager, runs: int, shots: int, idle: int
) -> dict[str, float | int | str]:
    started = time.perf_counter()
    # A cold boot and the template's snapshot: minutes under TCG, past any request timeout.
    first = await AsyncSandbox.create("desktop", **SPEC, client=client, request_timeout=None)
    cold_s = time.perf_counter() - started
    await first.kill()
    # Screenshots and clicks on a sandbox made from the template, as every user's is.
    await pool_ready(m)
    sb = await AsyncSandbox.create("desktop", **SPEC, client=client)
    await sb.desktop.screenshot()  # the host's VNC connection opens once per sandbox
    screenshots = [await timed(sb.desktop.screenshot()) for _ in range(shots)]
    clicks = [await timed(sb.desktop.click(*CLICK_AT)) for _ in range(shots)]
    await sb.kill()

    create_to_shot = []
    for _ in range(runs):
        await pool_ready(m)
        begun = time.perf_counter()
        sb = await AsyncSandbox.create("desktop", **SPEC, client=client)
        await sb.desktop.screenshot()
        create_to_shot.append((time.perf_counter() - begun) * 1000)
        await sb.kill()

    running = [
        await AsyncSandbox.create("desktop", **SPEC, client=client, request_timeout=None)
        for _ in range(idle)
    ]
    await asyncio.sleep(10)  # let them settle to idle
    pss = [pss_kib(m.sandbox(sb.id).machine.pid or 0) for sb in running]
    for sb in running:
        await sb.kill()
    image = ImageStore(m.settings.cache_dir).rootfs("desktop")
    return {
        "runs": runs,
        "shots": shots,
        "create_to_screenshot_median_ms": round(median(create_to_shot), 1),
        "create_to_screenshot_p95_ms": round(p95(create_to_shot), 1),
        "screenshot_median_ms": round(median(screenshots), 1),
        "screenshot_p95_ms": round(p95(screenshots), 1),
        "click_median_ms": round(median(clicks), 1),
        "click_p95_ms": round(p95(clicks), 1),
        "desktop_cold_boot_s": round(cold_s, 2),
        "cold_over_create": round(cold_s * 1000 / median(create_to_shot), 1),
        "desktop_image_mib": round(image.stat().st_blocks * 512 / MiB, 1),
        "desktop_pss_mib": round(median(pss) / 1024, 1),
        "pss_idle_sandboxes": idle,
        "accel": m.accel,
    }


async def main(runs: int, shots: int, idle: int) -> None:
    state = new_state_dir()
    try:
        state.chmod(0o755)
        # No template cache: desktop_cold_boot_s measures the template's boot.
        settings = Settings(state_dir=state, port=free_port(), template_cache=False)
        key = admin_key(state)
        app = create_app(settings)
        config = uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level="warning")
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        while not server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.05)
        try:
            manager: Manager = app.state.sietch.manager
            async with AsyncClient(f"http://127.0.0.1:{settings.port}", key) as client:
                figures = await measure(client, manager, runs, shots, idle)
        finally:
            server.should_exit = True
            await serving
            with contextlib.suppress(Exception):
                await reap(state)
    finally:
        shutil.rmtree(state, ignore_errors=True)
    report(figures, TARGETS)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10, help="creates to a first screenshot")
    parser.add_argument("--shots", type=int, default=30, help="screenshots and clicks")
    parser.add_argument("--idle", type=int, default=5, help="idle desktops for the PSS figure")
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.shots, args.idle))
