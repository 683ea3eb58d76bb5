"""The one place that calls waitpid.

As PID 1 the agent inherits every orphan in the VM and must reap them all, but
a per-child waitpid(pid) next to a waitpid(-1) loop would race for the same
statuses. So there is a single waitpid(-1, WNOHANG) loop, run on SIGCHLD, that
hands each status to whoever registered for that pid and drops the rest.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable

log = logging.getLogger(__name__)


def decode_status(status: int) -> tuple[int | None, int | None]:
    """(exit_code, signal) of a wait status: exactly one of them is set."""
    if os.WIFSIGNALED(status):
        return None, os.WTERMSIG(status)
    return os.WEXITSTATUS(status), None


class Reaper:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._watchers: dict[int, Callable[[int], None]] = {}
        loop.add_signal_handler(signal.SIGCHLD, self.reap)
        self.reaped_orphans = 0

    def watch(self, pid: int, callback: Callable[[int], None]) -> None:
        """Register right after fork, before the loop runs again, so no status is missed."""
        self._watchers[pid] = callback

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            callback = self._watchers.pop(pid, None)
            if callback is None:
                self.reaped_orphans += 1
                continue
            try:
                callback(status)
            except Exception:
                log.exception("exit handler for pid %d failed", pid)
