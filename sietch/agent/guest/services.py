"""An image's own services: what the image's ``/etc/sietch/start`` runs from boot on.

The agent has no init system to hand services to, so an image that needs
something running (the desktop image: its X server, Xfce and code-server)
ships an executable START. The agent runs it once at boot, as root, in the
background, in a session of its own, its output appended to LOG. If the image
also ships READY, the agent runs it until it exits 0 (or READY_TIMEOUT passes)
before it reports ready: the template snapshot is then taken with the
services up, and every sandbox restored from it has them at once. This is the
start and ready command pair of E2B's templates.

An image without START costs one ``stat``. The state lives in this module,
not in the agent's: if the agent's loop restarts after a crash, the services
it started are still running and must not be started twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from sietch.agent.guest.process import Spec

if TYPE_CHECKING:
    from sietch.agent.guest.ops import Agent
    from sietch.agent.guest.stream import Stream

log = logging.getLogger(__name__)

START = "/etc/sietch/start"
READY = "/etc/sietch/ready"
LOG = "/var/log/sietch/start.log"
READY_TIMEOUT = 300.0
"""Seconds the services get to come up: an Xfce desktop takes tens of them under emulation."""
READY_TIMEOUT_FILE = "/etc/sietch/ready-timeout"
"""An image whose services take longer says how long, in seconds (the code interpreter's
kernel imports numpy, pandas and matplotlib: minutes under emulation on a loaded host)."""
READY_INTERVAL = 0.5
NICE = 10
PROBE_TIMEOUT = 30.0
"""A READY run that hangs this long is killed and counts as not ready."""
SHELL = "/run/sietch/bin/busybox"
"""The tools disk's shell does the redirection: the image may have none."""
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Services:
    """State of the image's services, reported by the ``ready`` operation."""

    def __init__(self) -> None:
        self.state = "none"
        """none (the image has no START), starting, up, failed (START exited or READY timed out)."""
        self.pid: int | None = None
        self.detail = ""
        self.attempted = False

    def info(self) -> dict[str, Any]:
        return {"services": self.state, "pid": self.pid, "detail": self.detail, "log": LOG}


STATE = Services()


def _spec(argv: list[str], *, timeout: float | None) -> Spec:
    return Spec(
        argv=argv,
        env={"PATH": PATH, "HOME": "/root", "USER": "root", "LANG": "C.UTF-8"},
        cwd="/",
        timeout=timeout,
        background=True,
        listed=False,  # the user's process listing stays the user's
    )


async def start(agent: Agent) -> None:
    """Run START, then wait for READY; never raises (PID 1 must carry on booting)."""
    services = STATE
    if services.attempted or not os.access(START, os.X_OK):
        return
    services.attempted = True
    try:
        os.makedirs(os.path.dirname(LOG), exist_ok=True)
        script = 'exec "$0" >>"$1" 2>&1 </dev/null'
        proc = agent.processes.spawn(_spec([SHELL, "sh", "-c", script, START, LOG], timeout=None))
        # Niced, its whole process group (it has just started: nothing forked
        # yet escapes): on one emulated vCPU a desktop's start-up would
        # otherwise starve the agent itself.
        os.setpriority(os.PRIO_PGRP, proc.pid, NICE)
    except Exception as exc:
        services.state, services.detail = "failed", f"cannot start {START}: {exc}"
        log.warning("%s", services.detail)
        return
    services.state, services.pid = "starting", proc.pid
    log.info("started %s (pid %d), output in %s", START, proc.pid, LOG)
    if not os.access(READY, os.X_OK):
        services.state = "up"
        return
    exited = proc.when_exited()
    timeout = _ready_timeout()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        probe = agent.processes.spawn(_spec([READY], timeout=PROBE_TIMEOUT))
        await probe.when_exited()
        if probe.exit_code == 0:
            services.state = "up"
            log.info("services up")
            return
        if exited.done():
            code = proc.exit_code if proc.signal is None else f"signal {proc.signal}"
            services.state, services.detail = "failed", f"{START} exited ({code}); see {LOG}"
            log.warning("%s", services.detail)
            return
        await asyncio.sleep(READY_INTERVAL)
    services.state = "failed"
    services.detail = f"{READY} did not succeed within {timeout:.0f}s; see {LOG}"
    log.warning("%s", services.detail)


def _ready_timeout() -> float:
    try:
        with open(READY_TIMEOUT_FILE) as f:
            return max(READY_TIMEOUT, float(f.read().strip()))
    except (OSError, ValueError):
        return READY_TIMEOUT


async def op_ready(agent: Agent, stream: Stream, args: dict[str, Any]) -> dict[str, Any]:
    """Answered once the agent is ready, which includes the image's services (see module)."""
    return STATE.info()
