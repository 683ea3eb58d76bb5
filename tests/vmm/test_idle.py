"""An idle guest is tickless: it stops its timer tick instead of waking 250 times a second."""

from __future__ import annotations

import re

import pytest

from sietch.core.live import LiveSandbox
from tests.conftest import SandboxFactory

WINDOW_S = 3
"""Seconds the guest idles between two reads of its local-timer interrupt count."""


@pytest.fixture
async def sandbox(sandboxes: SandboxFactory) -> LiveSandbox:
    return await sandboxes()


async def test_idle_guest_is_tickless(sandbox: LiveSandbox) -> None:
    """The guest's tick is in nohz mode and its CPU takes far fewer than 250 timer irqs/s."""
    timers = (await sandbox.exec(["cat", "/proc/timer_list"])).stdout.decode()
    assert re.findall(r"nohz_mode\s*:\s*(\d+)", timers) == ["2"], "the tick is not stopped"
    clock = "/sys/devices/system/clocksource/clocksource0/current_clocksource"
    if sandbox.info.accel == "tcg":
        assert (await sandbox.exec(["cat", clock])).stdout.strip() == b"tsc"
    script = f"grep LOC: /proc/interrupts; sleep {WINDOW_S}; grep LOC: /proc/interrupts"
    result = await sandbox.exec(["sh", "-c", script])
    before, after = (int(line.split()[1]) for line in result.stdout.decode().splitlines())
    # A periodic 250 Hz tick would take ~750; a tickless guest takes a few dozen.
    assert after - before < 50 * WINDOW_S, f"{after - before} timer interrupts in {WINDOW_S} s"


async def test_tcg_guest_runs_without_spectre_defences(sandbox: LiveSandbox) -> None:
    """Under TCG (which never speculates) the guest kernel drops its Spectre v2 defences,
    emulated work on every syscall; under KVM it keeps them."""
    path = "/sys/devices/system/cpu/vulnerabilities/spectre_v2"
    state = (await sandbox.exec(["cat", path])).stdout.decode()
    if sandbox.info.accel == "tcg":
        assert state.startswith("Vulnerable"), state
    else:
        assert not state.startswith("Vulnerable"), state
