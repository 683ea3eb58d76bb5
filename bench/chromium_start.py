"""What makes the guest's Chromium slow to show a page under TCG, and which flags help.

One desktop template (booted once); then, for each variant, a fresh restore
(a new QEMU: every translation cold, as in a user's sandbox) starts Chromium
with that variant's command line on a ``file://`` page whose background is a
known colour, and the screen is watched over the host's VNC connection until
that colour shows. Per variant: seconds to the colour, the guest's busy CPU
seconds meanwhile (``/proc/stat``), QEMU's host CPU seconds, and, where the
browser has a DevTools endpoint, the seconds a second page took to show in a
new tab opened through it (``PUT /json/new``). The guest's busiest processes
and QEMU's ``info jit`` go to ``--out`` for each variant.

Variants run one after another (never at once: they would share the CPU).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from common import new_state_dir, report

from sietch.config import Settings
from sietch.core.live import LiveSandbox
from sietch.core.manager import Manager
from sietch.images.rootfs import UID, USER
from sietch.vmm import process

SPEC: dict[str, Any] = {"image": "desktop", "memory_mib": 1024, "disk_mib": 4096}
PAGE = Path(__file__).parents[1] / "tests" / "desktop" / "page.html"
COLOUR = (0x33, 0x66, 0xCC)
SECOND = (0xCC, 0x66, 0x33)
AT = (400, 300)
"""In the page's coloured part whether the window is maximized or 800x600 at the corner."""
CDP = 9222
PROFILE = "/home/user/.cache/sietch-chromium-probe"

BASE = (
    *("--no-first-run", "--no-default-browser-check", "--disable-gpu", "--start-maximized"),
    *("--password-store=basic", "--disable-background-networking", "--disable-component-update"),
)
"""The image's command line until now (sietch.images.desktop.BROWSER)."""
CDP_FLAGS = (f"--user-data-dir={PROFILE}", f"--remote-debugging-port={CDP}")
QUIET = (
    *("--disable-extensions", "--disable-component-extensions-with-background-pages"),
    *("--disable-sync", "--disable-default-apps", "--disable-breakpad", "--no-pings"),
    *("--metrics-recording-only", "--disable-hang-monitor", "--disable-dev-shm-usage"),
    "--disable-features=Translate,MediaRouter,OptimizationHints,AutofillServerCommunication,"
    "CertificateTransparencyComponentUpdater,DialMediaRouteProvider,GlobalMediaControls,"
    "HardwareMediaKeyHandling,LensOverlay,InterestFeedContentSuggestions,SpareRendererForSitePerProcess",
)
LEAN_GPU = ("--disable-software-rasterizer", "--in-process-gpu")
ONE_PROCESS = ("--single-process", "--no-sandbox")
JITLESS = ("--js-flags=--jitless",)
NOASLR = ("setarch", "x86_64", "-R")

VARIANTS: dict[str, tuple[str, ...]] = {
    "base": ("chromium", *BASE),
    "all": (*NOASLR, "chromium", *BASE, *CDP_FLAGS, *QUIET, *LEAN_GPU, *ONE_PROCESS, *JITLESS),
    "all-jit": (*NOASLR, "chromium", *BASE, *CDP_FLAGS, *QUIET, *LEAN_GPU, *ONE_PROCESS),
    "all-aslr": ("chromium", *BASE, *CDP_FLAGS, *QUIET, *LEAN_GPU, *ONE_PROCESS, *JITLESS),
    "all-multiprocess": (
        *NOASLR, "chromium", *BASE, *CDP_FLAGS, *QUIET, *LEAN_GPU, "--renderer-process-limit=1",
        *JITLESS,
    ),
    "all-noisy": (*NOASLR, "chromium", *BASE, *CDP_FLAGS, *LEAN_GPU, *ONE_PROCESS, *JITLESS),
    "all-small": (
        *NOASLR, "chromium", *(f for f in BASE if f != "--start-maximized"),
        "--window-position=0,0", "--window-size=800,600",
        *CDP_FLAGS, *QUIET, *LEAN_GPU, *ONE_PROCESS, *JITLESS,
    ),
    "cdp": ("chromium", *BASE, *CDP_FLAGS),
}  # fmt: skip


def close_to(pixel: tuple[int, ...], colour: tuple[int, int, int], slack: int = 6) -> bool:
    return all(abs(a - b) <= slack for a, b in zip(pixel[:3], colour, strict=True))


async def guest_busy_s(sb: LiveSandbox) -> float:
    """The guest's busy CPU seconds since boot (this kernel counts no idle time)."""
    out = (await sb.exec(["sh", "-c", "head -n1 /proc/stat; getconf CLK_TCK"])).stdout.split()
    ticks = [int(v) for v in out[1:-1]]
    return (ticks[0] + ticks[1] + ticks[2] + sum(ticks[5:8])) / int(out[-1])


def qemu_cpu_s(state: Path, sandbox_id: str) -> float:
    """Host CPU seconds (user + system) of the sandbox's QEMU."""
    tick = os.sysconf("SC_CLK_TCK")
    for pid, argv in process.find_by_marker(str(state)):
        if argv and "qemu-system" in argv[0] and f"sietch-{sandbox_id}" in argv:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / tick
    return float("nan")


async def until_colour(
    m: Manager, sb: LiveSandbox, colour: tuple[int, int, int], deadline: float
) -> float | None:
    """Seconds until ``colour`` shows at :data:`AT`, or None at the deadline."""
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < deadline:
        shot = await m.desktops.screenshot(sb)
        if close_to(shot.convert("RGB").getpixel(AT), colour):  # type: ignore[arg-type]
            return elapsed
        await asyncio.sleep(1.0)
    return None


def keep(out: Path, name: str, png: bytes, notes: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.png").write_bytes(png)
    (out / f"{name}.txt").write_text(notes)


async def trial(m: Manager, name: str, deadline: float, out: Path) -> dict[str, object]:
    info = await m.create(**SPEC)
    sb = m.sandbox(info.id)
    try:
        await m.desktops.warm_up(sb, 600)
        await sb.write_file("/tmp/page.html", PAGE.read_bytes(), mode=0o644)
        second = PAGE.read_bytes().replace(b"#3366cc", b"#cc6633")
        await sb.write_file("/tmp/page2.html", second, mode=0o644)
        busy0, host0 = await guest_busy_s(sb), qemu_cpu_s(m.settings.state_dir, sb.id)
        env = {"DISPLAY": ":0", "XDG_RUNTIME_DIR": f"/run/user/{UID}"}
        argv = [*VARIANTS[name], "file:///tmp/page.html"]
        await sb.start_background(argv, user=USER, env=env, tag="probe")
        page_s = await until_colour(m, sb, COLOUR, deadline)
        busy1, host1 = await guest_busy_s(sb), qemu_cpu_s(m.settings.state_dir, sb.id)
        result: dict[str, object] = {
            "variant": name,
            "page_s": None if page_s is None else round(page_s, 1),
            "guest_busy_s": round(busy1 - busy0, 1),
            "qemu_cpu_s": round(host1 - host0, 1),
            "load": round(os.getloadavg()[0], 2),
        }
        if page_s is not None and "--remote-debugging-port=9222" in argv:
            started = time.monotonic()
            new = f"curl -fsS -X PUT 'http://127.0.0.1:{CDP}/json/new?file:///tmp/page2.html'"
            opened = await sb.exec(["sh", "-c", new])
            result["cdp_new_ok"] = opened.exit_code == 0
            tab = await until_colour(m, sb, SECOND, min(deadline, 180))
            result["tab_s"] = None if tab is None else round(time.monotonic() - started, 1)
        report_cmd = (
            "ps -eo pid,etime,time,rss,args --sort=-time | cut -c1-200 | head -25; "
            "cat /sys/devices/system/cpu/vulnerabilities/meltdown; free -m; dmesg | tail -20"
        )
        ps = await sb.exec(["sh", "-c", report_cmd])
        assert sb.machine.qmp is not None
        jit = await sb.machine.qmp.execute("human-monitor-command", {"command-line": "info jit"})
        png = io.BytesIO()
        (await m.desktops.screenshot(sb)).save(png, "PNG")
        notes = json.dumps(result) + "\n" + ps.stdout.decode() + ps.stderr.decode() + str(jit)
        keep(out, name, png.getvalue(), notes)
        print(json.dumps(result), flush=True)
        return result
    finally:
        await m.delete(info.id)


async def main(variants: list[str], deadline: float, out: Path, state: Path | None) -> None:
    own = state is None
    state = state or new_state_dir()
    state.mkdir(parents=True, exist_ok=True)
    state.chmod(0o755)
    try:
        async with Manager(Settings(state_dir=state, pool_size=0)) as m:
            started = time.monotonic()
            first = await m.create(**SPEC)  # the template (a cold boot) unless the state has it
            boot_s = time.monotonic() - started
            await m.delete(first.id)
            print(json.dumps({"template_s": round(boot_s, 1)}), flush=True)
            results = [await trial(m, name, deadline, out) for name in variants]
    finally:
        if own:
            shutil.rmtree(state, ignore_errors=True)
    report({"template_s": round(boot_s, 1), "trials": results})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("variants", nargs="+", choices=sorted(VARIANTS))
    parser.add_argument("--deadline", type=float, default=300, help="seconds per variant")
    parser.add_argument("--out", type=Path, default=Path("test-results/chromium-start"))
    parser.add_argument("--state", type=Path, help="a state dir to keep (and its template)")
    args = parser.parse_args()
    asyncio.run(main(args.variants, args.deadline, args.out, args.state))
