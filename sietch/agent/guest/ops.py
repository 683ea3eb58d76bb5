"""The operation table, the per-stream wrapper, and the small system operations.

Operation modules are imported on first use: the agent must answer SYNC and
``hello`` as early as possible on a cold boot under emulation, and the exec
and file machinery (subprocess, shutil, ...) is not needed for that.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from sietch.agent import protocol as P
from sietch.agent.guest import AGENT_VERSION
from sietch.agent.guest.errors import OpError, arg_float, arg_str
from sietch.agent.guest.mux import Mux
from sietch.agent.guest.reaper import Reaper
from sietch.agent.guest.stream import Stream, StreamClosed

if TYPE_CHECKING:
    from sietch.agent.guest.table import ProcessTable

log = logging.getLogger(__name__)

Handler = Callable[["Agent", Stream, dict[str, Any]], Awaitable[dict[str, Any]]]

OPS: dict[str, str] = {
    "hello": "ops",
    "shutdown": "ops",
    "resize_fs": "ops",
    "ready": "services",
    "usage": "ops",
    "exec": "execops",
    "attach": "execops",
    "processes": "execops",
    "signal": "execops",
    "wait": "execops",
    "write": "files",
    "read": "files",
    "list": "files",
    "stat": "files",
    "mkdir": "files",
    "remove": "files",
    "rename": "files",
}
EARLY = frozenset({"hello", "shutdown"})
"""Operations served before PID-1 setup (mounts, network) has finished."""


class Agent:
    """What the operations share: mode, reaper, process table, readiness."""

    def __init__(self, *, init: bool, reaper: Reaper) -> None:
        self.init = init
        self.reaper = reaper
        self.mux: Mux | None = None
        self.ready = asyncio.Event()
        self.stopped = asyncio.Event()
        """Set when the agent should exit (shutdown outside PID 1)."""
        self._processes: ProcessTable | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def background(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a task nobody awaits, holding a reference so it is not collected."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def processes(self) -> ProcessTable:
        if self._processes is None:
            from sietch.agent.guest.table import ProcessTable

            self._processes = ProcessTable(self.reaper)
        return self._processes


def _handler(op: str) -> Handler:
    module = importlib.import_module(f"sietch.agent.guest.{OPS[op]}")
    handler: Handler = getattr(module, f"op_{op}")
    return handler


async def serve(agent: Agent, stream: Stream, request: dict[str, Any]) -> None:
    """Run one operation and end its stream with a result or an error."""
    op = request.get("op")
    try:
        if not isinstance(op, str) or op not in OPS:
            raise OpError("invalid_argument", f"unknown op {op!r}")
        handler = _handler(op)
        if op not in EARLY:
            await agent.ready.wait()
        result = await handler(agent, stream, request)
        if "type" in result:  # would hide that this is the final result
            raise RuntimeError(f"{op} result has a 'type' field")
        _finish(stream, {"type": "result", **result})
    except OpError as exc:
        stream.finish({"type": "error", "code": exc.code, "message": exc.message})
    except StreamClosed:
        pass
    except Exception as exc:
        log.exception("op %s failed", op)
        stream.finish({"type": "error", "code": "internal", "message": f"{op}: {exc}"})


def _finish(stream: Stream, result: dict[str, Any]) -> None:
    try:
        stream.finish(result)
    except P.ProtocolError as exc:
        stream.finish({"type": "error", "code": "internal", "message": f"result too large: {exc}"})


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


async def op_hello(agent: Agent, stream: Stream, args: dict[str, Any]) -> dict[str, Any]:
    """Sent after every (re)connect: a restored snapshot needs today's clock and fresh entropy."""
    now = arg_float(args, "time")
    entropy_b64 = arg_str(args, "entropy")
    hostname = arg_str(args, "hostname")
    mac = arg_str(args, "mac")
    entropy = b""
    if entropy_b64:
        import base64
        import binascii

        try:
            entropy = base64.b64decode(entropy_b64, validate=True)
        except binascii.Error as exc:
            raise OpError("invalid_argument", f"entropy is not base64: {exc}") from None
    if hostname is not None:
        from sietch.agent.guest.init import check_hostname

        check_hostname(hostname)
    clock_set = False
    # Outside PID 1 (development on a host) none of this may touch the machine.
    if agent.init:
        from sietch.agent.guest import init

        if now is not None:
            clock_set = init.set_clock(now)
        if entropy:
            init.add_entropy(entropy)
        if hostname:
            init.set_hostname(hostname)
            try:
                init.name_in_hosts(hostname)
            except OSError as exc:
                log.warning("cannot update /etc/hosts: %s", exc)
        if mac:
            try:
                init.set_mac("eth0", mac)
            except OSError as exc:
                log.warning("cannot set the MAC address: %s", exc)
    uname = os.uname()
    try:
        uptime = float(_read("/proc/uptime").split()[0])
    except (IndexError, ValueError):
        uptime = time.monotonic()
    return {
        "agent_version": AGENT_VERSION,
        "protocol": P.PROTOCOL_VERSION,
        "pid": os.getpid(),
        "boot_id": _read("/proc/sys/kernel/random/boot_id"),
        "uptime_s": uptime,
        "kernel": uname.release,
        "hostname": uname.nodename,
        "init": agent.init,
        "clock_set": clock_set,
    }


async def op_shutdown(agent: Agent, stream: Stream, args: dict[str, Any]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, os.sync)
    replied = asyncio.Event()
    stream.on_close(replied.set)  # runs once the final CLOSE is handed to the writer
    agent.background(_power_off_after_reply(agent, replied))
    return {}


async def _power_off_after_reply(agent: Agent, replied: asyncio.Event) -> None:
    # The result must reach the host before the VM (or this process) is gone.
    try:
        async with asyncio.timeout(2.0):
            await replied.wait()
            if agent.mux is not None:
                await agent.mux.flushed()
    except TimeoutError:
        log.warning("shutdown: reply not flushed within 2s")
    # Only PID 1 may power off: --init on a development host must never
    # switch the host itself off.
    if os.getpid() == 1:
        from sietch.agent.guest import init

        init.power_off()
    else:
        log.info("shutdown requested: exiting (not PID 1, so no power off)")
        agent.stopped.set()


async def op_resize_fs(agent: Agent, stream: Stream, args: dict[str, Any]) -> dict[str, Any]:
    if not agent.init:
        raise OpError("permission_denied", "resize_fs: only inside the VM (PID 1 or --init)")
    from sietch.agent.guest import init

    device = init.root_device()
    tool = init.find_tool("resize2fs")
    if tool is None:
        raise OpError("not_found", "resize2fs not found under /run/sietch/{sbin,usr/sbin}")
    code, output = await agent.processes.run([tool, device], timeout=600)
    if code != 0:
        raise OpError("internal", f"{tool} {device} failed ({code}): {output.strip()[-400:]}")
    st = os.statvfs("/")
    return {"size": st.f_blocks * st.f_frsize, "device": device}


async def op_usage(agent: Agent, stream: Stream, args: dict[str, Any]) -> dict[str, Any]:
    """The guest's own view of what it uses: /proc/meminfo, /proc/net/dev, the root fs
    (host metrics ask; a process per question would cost an idle guest far more)."""
    memory = {}
    for line in _read("/proc/meminfo").splitlines():
        key, _, rest = line.partition(":")
        if key in ("MemTotal", "MemAvailable") and rest.split():
            memory[key] = int(rest.split()[0]) * 1024
    net: dict[str, list[int]] = {}
    for line in _read("/proc/net/dev").splitlines():
        name, sep, rest = line.partition(":")
        if sep and rest.split()[0].isdigit():
            values = rest.split()
            net[name.strip()] = [int(values[0]), int(values[8])]
    st = os.statvfs("/")
    return {
        "memory_total": memory.get("MemTotal"),
        "memory_available": memory.get("MemAvailable"),
        "net": net,
        "disk_total": st.f_blocks * st.f_frsize,
        "disk_used": (st.f_blocks - st.f_bfree) * st.f_frsize,
    }
