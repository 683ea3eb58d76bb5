"""The process operations: exec, attach, signal, wait, processes.

Where an ``exec true`` goes (QEMU 10.0.2, TCG, a restored sandbox, host busy
with other VMs; medians): 16-20 ms through the manager and as much QEMU CPU.
Of that, any agent round trip (a ``stat``) is ~4.8 ms (7.7 ms of QEMU CPU:
the vCPU and the main loop that serves virtio-serial); ``busybox true``
instead of the image's dynamically linked ``/bin/true`` saves ~5 ms (ld.so and
libc); inside the guest, ``subprocess.Popen`` of ``/bin/true`` takes 7-9 ms
(vfork; a plain ``os.fork`` of the agent takes 11.7 ms: its page tables are
copied, emulated); the agent's own Python is the rest, 3-5 ms. Natively the
agent answers an ``exec true`` in ~1.8 ms. Switching ASLR off in the guest,
which made spawns 4x faster on QEMU 7.2, gains nothing measurable on 10.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from typing import TYPE_CHECKING, Any

from sietch.agent import protocol as P
from sietch.agent.guest import users
from sietch.agent.guest.errors import (
    OpError,
    arg_bool,
    arg_float,
    arg_int,
    arg_str,
    need,
)
from sietch.agent.guest.process import Process, Spec
from sietch.agent.guest.stream import Stream, StreamClosed

if TYPE_CHECKING:
    from sietch.agent.guest.ops import Agent

log = logging.getLogger(__name__)

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BUSYBOX = "/run/sietch/bin/busybox"


def _strings(value: Any, key: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(a, str) for a in value):
        raise OpError("invalid_argument", f"argument {key!r} must be a non-empty list of strings")
    if any("\0" in a for a in value):
        raise OpError("invalid_argument", f"argument {key!r} contains a NUL byte")
    return value


def _shell() -> list[str]:
    # The user's image may have no /bin/sh at all; the tools disk always has busybox.
    if os.path.exists("/bin/sh"):
        return ["/bin/sh", "-c"]
    if os.path.exists(BUSYBOX):
        return [BUSYBOX, "sh", "-c"]
    raise OpError("command_not_found", "command not found: /bin/sh (needed to run cmd)")


def _environment(user: users.User, given: Any, pty: bool) -> dict[str, str]:
    """A clean environment: nothing of the agent's own (PYTHONHOME, ...) leaks in."""
    env = {
        "PATH": PATH,
        "HOME": user.home,
        "USER": user.name,
        "LOGNAME": user.name,
        "SHELL": user.shell,
        "LANG": "C.UTF-8",
    }
    if pty:
        env["TERM"] = "xterm-256color"
    if given is None:
        return env
    if not isinstance(given, dict):
        raise OpError("invalid_argument", "argument 'env' must be an object of strings")
    for key, value in given.items():
        if not key or "=" in key or "\0" in key or not isinstance(value, str) or "\0" in value:
            raise OpError("invalid_argument", f"invalid environment variable {key!r}")
        env[key] = value
    return env


def _cwd(given: str | None, user: users.User) -> str:
    if given is None:
        return user.home if os.path.isdir(user.home) else "/"
    if not given.startswith("/") or "\0" in given:
        raise OpError("invalid_argument", f"cwd {given!r} must be an absolute path")
    if not os.path.exists(given):
        raise OpError("not_found", f"cwd {given}: no such directory")
    if not os.path.isdir(given):
        raise OpError("not_a_directory", f"cwd {given}: not a directory")
    return given


def parse_spec(args: dict[str, Any]) -> Spec:
    has_argv, has_cmd = args.get("argv") is not None, args.get("cmd") is not None
    if has_argv == has_cmd:
        raise OpError("invalid_argument", "exec needs exactly one of 'argv' and 'cmd'")
    cmd = arg_str(args, "cmd")
    if cmd is not None:
        if "\0" in cmd:
            raise OpError("invalid_argument", "argument 'cmd' contains a NUL byte")
        argv = [*_shell(), cmd]
    else:
        argv = _strings(args["argv"], "argv")
    user_arg = args.get("user")
    if user_arg is not None and (
        isinstance(user_arg, bool) or not isinstance(user_arg, str | int) or user_arg == ""
    ):
        raise OpError("invalid_argument", "argument 'user' must be a user name or uid")
    if isinstance(user_arg, int) and user_arg < 0:
        raise OpError("invalid_argument", f"invalid uid {user_arg}")
    user = users.lookup(user_arg)
    switch = (user.uid, user.gid) != (os.geteuid(), os.getegid())
    if switch and os.geteuid() != 0:
        raise OpError(
            "permission_denied", f"running as user {user.name} needs the agent to be root"
        )
    pty = arg_bool(args, "pty", False)
    timeout = arg_float(args, "timeout")
    if timeout is not None and not timeout > 0:
        raise OpError("invalid_argument", "argument 'timeout' must be positive")
    cols, rows = arg_int(args, "cols", 80), arg_int(args, "rows", 24)
    for name, value in (("cols", cols), ("rows", rows)):
        if value is None or not 0 < value < 65536:
            raise OpError("invalid_argument", f"argument {name!r} must be 1..65535")
    return Spec(
        argv=argv,
        cmd=cmd,
        env=_environment(user, args.get("env"), pty),
        cwd=_cwd(arg_str(args, "cwd"), user),
        uid=user.uid if switch else None,
        gid=user.gid if switch else None,
        groups=list(user.groups) if switch else None,
        timeout=timeout,
        stdin=arg_bool(args, "stdin", False),
        pty=pty,
        cols=need(cols, "cols"),
        rows=need(rows, "rows"),
        background=arg_bool(args, "background", False),
        tag=arg_str(args, "tag"),
    )


def parse_signal(value: Any) -> int:
    if isinstance(value, str) and not value.isdigit():
        name = value.upper()
        name = name if name.startswith("SIG") else "SIG" + name
        try:
            return int(signal.Signals[name])
        except KeyError:
            raise OpError("invalid_argument", f"unknown signal {value!r}") from None
    if isinstance(value, str):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < signal.NSIG:
        raise OpError("invalid_argument", f"invalid signal {value!r}")
    return value


async def op_exec(agent: Agent, stream: Stream, args: dict[str, Any]) -> dict[str, Any]:
    spec = parse_spec(args)
    proc = agent.processes.spawn(spec)
    stream.send({"type": "started", "pid": proc.pid})
    if spec.background:
        return {"pid": proc.pid}
    result = await _follow(stream, proc, replay=False, follow=True)
    agent.processes.forget(proc)
    return result


async def op_attach(agent: Agent, stream: Stream, args: dict[str, Any]) -> dict[str, Any]:
    proc = agent.processes.get(need(arg_int(args, "pid"), "pid"))
    follow = arg_bool(args, "follow", True)
    result = await _follow(stream, proc, replay=arg_bool(args, "from_start", True), follow=follow)
    if proc.done:
        agent.processes.forget(proc)
    result["running"] = proc.running
    result["dropped"] = {
        "stdout": proc.rings[P.CHANNEL_STDOUT].dropped,
        "stderr": proc.rings[P.CHANNEL_STDERR].dropped,
    }
    return result


async def op_processes(agent: Agent, stream: Stream, args: dict[str, Any]) -> dict[str, Any]:
    return {"processes": agent.processes.listing()}


async def op_signal(agent: Agent, stream: Stream, args: dict[str, Any]) -> dict[str, Any]:
    proc = agent.processes.get(need(arg_int(args, "pid"), "pid"))
    if "signal" not in args:
        raise OpError("invalid_argument", "missing argument 'signal'")
    proc.send_signal(parse_signal(args["signal"]))
    return {}


async def op_wait(agent: Agent, stream: Stream, args: dict[str, Any]) -> dict[str, Any]:
    pid = need(arg_int(args, "pid"), "pid")
    proc = agent.processes.get(pid)
    timeout = arg_float(args, "timeout")
    try:
        await asyncio.wait_for(proc.when_exited(), timeout)
    except TimeoutError:
        raise OpError("timeout", f"process {pid} still running after {timeout}s") from None
    agent.processes.forget(proc)
    return proc.result()


async def _follow(stream: Stream, proc: Process, *, replay: bool, follow: bool) -> dict[str, Any]:
    """Stream the process's output until it is done, feeding it what the host sends."""
    proc.attach(stream, replay=replay, follow=follow)
    inputs = asyncio.get_running_loop().create_task(_inputs(stream, proc))
    try:
        if follow:
            await proc.when_done()
        return proc.result()
    finally:
        inputs.cancel()
        proc.detach(stream)
        if stream.closed and not proc.done:
            # The host went away: the command lives on like a background job.
            proc.background = True


async def _inputs(stream: Stream, proc: Process) -> None:
    with contextlib.suppress(StreamClosed):
        while True:
            event = await stream.recv()
            if event[0] == "data":
                if event[1] == P.CHANNEL_IN:
                    await proc.write_stdin(event[2])
                # Credit returns only once the command took the bytes: backpressure.
                stream.consumed(len(event[2]))
            elif event[0] == "eof":
                await proc.close_stdin()
            elif event[0] == "msg":
                _control(proc, event[1])


def _control(proc: Process, msg: dict[str, Any]) -> None:
    kind = msg.get("type")
    try:
        if kind == "signal":
            proc.send_signal(parse_signal(msg.get("signal")))
        elif kind == "resize":
            cols, rows = msg.get("cols"), msg.get("rows")
            if not (
                isinstance(cols, int)
                and isinstance(rows, int)
                and 0 < cols < 65536
                and 0 < rows < 65536
            ):
                raise OpError("invalid_argument", f"invalid terminal size {cols}x{rows}")
            proc.resize(cols, rows)
        else:
            log.debug("pid %d: ignoring message %r", proc.pid, kind)
    except OpError as exc:
        # There is no reply channel for these mid-stream messages; the final
        # result still tells the truth.
        log.info("pid %d: %s", proc.pid, exc.message)
