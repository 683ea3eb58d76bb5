"""``python -m sietch.ray._reaper COMMAND...``: run COMMAND for as long as whoever started
this process lives, then end it.

A Ray actor cannot reap its child itself when Ray kills it (SIGKILL runs no cleanup), and
``PR_SET_PDEATHSIG`` needs ``preexec_fn``, unsafe in a process with threads such as a Ray
worker. So the actor starts this small single-threaded process with a pipe as its stdin:
EOF on it means the actor is gone, however it ended, and the command gets SIGTERM, then
SIGKILL after a grace period. The command itself dies with this process (PDEATHSIG is
safe here: one thread). When the command exits on its own, so does this process, with
its status, and the actor learns of it.
"""

from __future__ import annotations

import ctypes
import os
import selectors
import signal
import subprocess
import sys
import types

PR_SET_PDEATHSIG = 1
GRACE_S = 30.0
"""How long the command has to exit after SIGTERM (a server deregisters, closes sockets)."""


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")


def stop(proc: subprocess.Popen[bytes], grace_s: float = GRACE_S) -> int:
    """SIGTERM, a timed wait, then SIGKILL; returns the exit status."""
    if proc.poll() is None:
        proc.terminate()
        try:
            return proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def supervise(argv: list[str]) -> int:
    """Run ``argv`` until it exits or stdin reaches EOF; returns the status to exit with."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)  # noqa: PLW1509 - single-threaded

    def on_signal(signum: int, _frame: types.FrameType | None) -> None:
        stop(proc)
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    exited = os.pidfd_open(proc.pid)
    with selectors.DefaultSelector() as selector:
        selector.register(sys.stdin.fileno(), selectors.EVENT_READ)
        selector.register(exited, selectors.EVENT_READ)
        while True:
            for key, _ in selector.select():
                if key.fd == exited:
                    return proc.wait()
                if not os.read(key.fd, 4096):  # EOF: the owner is gone
                    stop(proc)
                    return 0


if __name__ == "__main__":
    sys.exit(supervise(sys.argv[1:]))
