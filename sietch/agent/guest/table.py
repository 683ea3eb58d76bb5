"""Spawning commands, and the table of the processes the agent started."""

from __future__ import annotations

import fcntl
import logging
import os
import termios
from typing import Any

from sietch.agent import protocol as P
from sietch.agent.guest.errors import OpError, from_os_error
from sietch.agent.guest.process import MAX_EXITED, Process, Spec, set_winsize
from sietch.agent.guest.reaper import Reaper

log = logging.getLogger(__name__)


def _controlling_tty() -> None:
    # Runs in the child between fork and exec (after setsid): make the pty,
    # already on fd 0, its controlling terminal so job control and ^C work.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class ProcessTable:
    """Agent-started processes, by pid."""

    def __init__(self, reaper: Reaper) -> None:
        self._reaper = reaper
        self._procs: dict[int, Process] = {}

    def spawn(self, spec: Spec) -> Process:
        import subprocess

        mine: list[int] = []  # parent-side descriptors, closed if the spawn fails
        theirs: list[int] = []  # child-side descriptors, closed in any case
        out: dict[int, int] = {}
        stdin_fd: int | None = None
        master: int | None = None
        preexec = None
        try:
            if spec.pty:
                master, slave = os.openpty()
                mine.append(master)
                theirs.append(slave)
                os.set_blocking(master, False)
                set_winsize(master, spec.cols, spec.rows)
                if spec.uid is not None:
                    os.fchown(slave, spec.uid, -1)
                stdin: int = slave
                stdout, stderr = slave, slave
                out[master] = P.CHANNEL_STDOUT
                stdin_fd = master
                preexec = _controlling_tty
            else:
                if spec.stdin:
                    r, stdin_fd = os.pipe()
                    mine.append(stdin_fd)
                    theirs.append(r)
                    os.set_blocking(stdin_fd, False)
                    stdin = r
                else:
                    stdin = subprocess.DEVNULL
                ends = []
                for channel in (P.CHANNEL_STDOUT, P.CHANNEL_STDERR):
                    r, w = os.pipe()
                    mine.append(r)
                    theirs.append(w)
                    os.set_blocking(r, False)
                    out[r] = channel
                    ends.append(w)
                stdout, stderr = ends
            popen = subprocess.Popen(
                spec.argv,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                cwd=spec.cwd,
                env=spec.env,
                start_new_session=True,
                user=spec.uid,
                group=spec.gid,
                extra_groups=spec.groups,
                # Only for a pty, and it only calls ioctl: no locks that another
                # thread could hold at fork. There is no other way to give the
                # child a controlling terminal.
                preexec_fn=preexec,  # noqa: PLW1509
            )
        except Exception as exc:
            for fd in mine:
                os.close(fd)
            raise _spawn_error(exc, spec) from exc
        finally:
            for fd in theirs:
                os.close(fd)
        proc = Process(
            table=self,
            spec=spec,
            pid=popen.pid,
            popen=popen,
            out=out,
            stdin_fd=stdin_fd,
            master=master,
        )
        self._reaper.watch(popen.pid, proc.on_exit)
        if spec.listed:
            self._procs[proc.pid] = proc
        log.debug("started pid %d: %s", proc.pid, spec.cmd or spec.argv)
        return proc

    def get(self, pid: int) -> Process:
        proc = self._procs.get(pid)
        if proc is None:
            raise OpError("no_such_process", f"no process {pid} started by the agent")
        return proc

    def forget(self, proc: Process) -> None:
        if self._procs.get(proc.pid) is proc:
            del self._procs[proc.pid]

    def listing(self) -> list[dict[str, Any]]:
        return [p.info() for p in self._procs.values()]

    def _on_done(self, proc: Process) -> None:
        exited = [p for p in self._procs.values() if p.done]
        for old in exited[: max(0, len(exited) - MAX_EXITED)]:
            self.forget(old)

    async def run(self, argv: list[str], timeout: float = 30.0) -> tuple[int | None, str]:
        """Run a helper command of the agent's own (not listed); (exit code, output)."""
        spec = Spec(
            argv=argv,
            env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
            cwd="/",
            timeout=timeout,
            listed=False,
        )
        proc = self.spawn(spec)
        await proc.when_done()
        output = proc.rings[P.CHANNEL_STDOUT].text() + proc.rings[P.CHANNEL_STDERR].text()
        return proc.exit_code, output


def _spawn_error(exc: Exception, spec: Spec) -> OpError:
    """Name the command (or cwd) in the error, as the host will show it to a user."""
    if not isinstance(exc, OSError):
        return OpError("internal", f"cannot start {spec.argv[0]}: {exc}")
    if exc.filename == spec.cwd and exc.filename != spec.argv[0]:
        return from_os_error(exc, f"cwd {spec.cwd}")
    if isinstance(exc, FileNotFoundError | NotADirectoryError):
        return OpError("command_not_found", f"command not found: {spec.argv[0]}")
    return from_os_error(exc, spec.argv[0])
