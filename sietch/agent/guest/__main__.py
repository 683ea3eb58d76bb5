"""Entry point: ``python3 -m sietch.agent.guest [options]``.

In the VM this is PID 1 (after the initramfs switched root), serving the
virtio-serial port. On a development host it is an ordinary process::

    --connect PATH   use the unix socket a host listens on as the port
    --port DEV       use this port device instead of looking it up by name
    --init           do the PID-1 setup even though not PID 1
    --give-up SECS   with --connect: exit after this long without a host
    --debug          log every detail

Start-up order matters on a cold boot under emulation: answer SYNC first,
then mount, name the host and bring up the network in the background.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    # The agent never speaks TLS, and ssl is the costliest part of importing
    # asyncio (about a third of it), which sits on the cold-boot path.
    # asyncio copes with a Python built without ssl. Only in the agent's own
    # process: importing this module elsewhere must not break ssl there.
    sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]

import asyncio
import logging
import os
import time
from dataclasses import dataclass

log = logging.getLogger("sietch.agent.guest")

USAGE = (
    "usage: python3 -m sietch.agent.guest"
    " [--connect PATH | --port DEV] [--init] [--give-up SECS] [--debug]"
)


@dataclass
class Options:
    connect: str | None = None
    port: str | None = None
    init: bool = False
    give_up: float | None = None
    debug: bool = False


def parse_args(argv: list[str]) -> Options:
    # Hand-rolled: argparse costs noticeable time at boot under emulation.
    opts = Options()
    args = list(argv)
    while args:
        arg = args.pop(0)
        try:
            if arg == "--connect":
                opts.connect = args.pop(0)
            elif arg == "--port":
                opts.port = args.pop(0)
            elif arg == "--give-up":
                opts.give_up = float(args.pop(0))
            elif arg == "--init":
                opts.init = True
            elif arg == "--debug":
                opts.debug = True
            else:
                raise SystemExit(f"{USAGE}\nunknown argument {arg!r}")
        except (IndexError, ValueError):
            raise SystemExit(f"{USAGE}\nbad value for {arg}") from None
    return opts


_FORMAT = "sietch-agent: %(levelname)s %(message)s"


class _BootFormatter(logging.Formatter):
    """Stamps console lines with time since boot, like the kernel's own, so a
    slow cold boot can be read off the serial log."""

    def __init__(self) -> None:
        super().__init__("sietch-agent: [%(boottime)8.3f] %(levelname)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.boottime = time.clock_gettime(time.CLOCK_BOOTTIME)
        return super().format(record)


def setup_logging(console: bool, debug: bool) -> None:
    stream = sys.stderr
    if console:
        try:
            # O_NOCTTY: PID 1 must never acquire a controlling terminal.
            fd = os.open("/dev/console", os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
            stream = os.fdopen(fd, "w", buffering=1)
        except OSError:
            pass
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_BootFormatter() if console else logging.Formatter(_FORMAT))
    root = logging.getLogger("sietch")
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    root.propagate = False


def _adopt_orphans() -> None:
    """Off PID 1, become a subreaper so orphaned grandchildren come back to the agent,
    as they do in the VM: same reaping, and nothing escapes a test's cleanup."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except Exception as exc:
        log.warning("cannot become a child subreaper: %s", exc)


class _Port:
    """The virtio port outlives restarts of the loop: it can be opened only once."""

    virtio: object | None = None
    front: int | None = None
    """The socket to sietch-front, when it serves the port (SIETCH_FRONT_FD)."""
    basics_done = False
    """sietch-front did the PID-1 basics before it started us (SIETCH_FRONT_BASICS)."""


def _front_fd() -> int | None:
    # Popped, as is SIETCH_FRONT_BASICS: nothing the agent starts may see them.
    value = os.environ.pop("SIETCH_FRONT_FD", "")
    return int(value) if value.isdigit() else None


async def amain(opts: Options, init: bool) -> None:
    from sietch.agent.guest import ops, transport
    from sietch.agent.guest.mux import Mux
    from sietch.agent.guest.reaper import Reaper

    loop = asyncio.get_running_loop()
    reaper = Reaper(loop)
    reaper.reap()  # children that exited before the handler existed
    agent = ops.Agent(init=init, reaper=reaper)
    mux = Mux(lambda stream, request: ops.serve(agent, stream, request))
    agent.mux = mux
    port: transport.VirtioPort | transport.UnixPort | transport.FrontPort
    if opts.connect is not None:
        _adopt_orphans()
        port = transport.UnixPort(opts.connect, opts.give_up)
    elif _Port.front is not None:
        port = transport.FrontPort(_Port.front)
    else:
        if _Port.virtio is None:
            path = opts.port or await transport.wait_for_port()
            _Port.virtio = transport.VirtioPort(path)
        assert isinstance(_Port.virtio, transport.VirtioPort)
        port = _Port.virtio
    served = loop.create_task(port.serve(mux))
    if init:
        from sietch.agent.guest import init as pid1

        if os.getpid() == 1:
            pid1.ignore_termination(loop)
        agent.background(pid1.setup(agent, basics=not _Port.basics_done))
    else:
        agent.ready.set()
    stopped = loop.create_task(agent.stopped.wait())
    await asyncio.wait([served, stopped], return_when=asyncio.FIRST_COMPLETED)
    for task in (served, stopped):
        task.cancel()


def main() -> None:
    opts = parse_args(sys.argv[1:])
    _Port.front = _front_fd()
    _Port.basics_done = os.environ.pop("SIETCH_FRONT_BASICS", "") == "1"
    pid1 = os.getpid() == 1
    init = pid1 or opts.init
    setup_logging(console=pid1, debug=opts.debug)
    log.info("starting (pid %d%s)", os.getpid(), ", init" if init else "")
    if not pid1:
        asyncio.run(amain(opts, init))
        return
    while True:  # PID 1 must never exit: that is a kernel panic
        try:
            asyncio.run(amain(opts, init))
            log.error("serving stopped; restarting")
        except BaseException:
            log.exception("agent crashed; restarting")
        time.sleep(1)


if __name__ == "__main__":
    main()
