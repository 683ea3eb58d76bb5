"""Spawning commands, and the table of the processes the agent started."""

from __future__ import annotations

import fcntl
import logging
import os
import stat
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


class _Stdio:
    """The descriptors of one spawn, recorded as they are made so a failure closes them all."""

    def __init__(self) -> None:
        self.mine: list[int] = []
        """Our ends (non-blocking), closed if the spawn fails."""
        self.theirs: list[int] = []
        """The child's ends, closed once it has them (or failed to start)."""
        self.child: tuple[int | None, int | None, int | None] = (None, None, None)
        """The child's stdin, stdout and stderr; None is /dev/null."""
        self.out: dict[int, int] = {}
        """Our read ends, by the output channel each carries."""
        self.stdin_fd: int | None = None
        self.master: int | None = None

    def _pair(self, ours: int, theirs: int) -> None:
        self.mine.append(ours)
        self.theirs.append(theirs)
        os.set_blocking(ours, False)

    def terminal(self, spec: Spec) -> None:
        """A pty: its slave end is all three of the child's, its master our input and output."""
        master, slave = os.openpty()
        self._pair(master, slave)
        set_winsize(master, spec.cols, spec.rows)
        if spec.uid is not None:
            os.fchown(slave, spec.uid, -1)
        self.child = (slave, slave, slave)
        self.out[master] = P.CHANNEL_STDOUT
        self.stdin_fd = self.master = master

    def pipes(self, stdin: bool) -> None:
        """A pipe per output channel, and one for input if the caller will send any."""
        child_in = None
        if stdin:
            child_in, self.stdin_fd = os.pipe()
            self._pair(self.stdin_fd, child_in)
        ends = []
        for channel in (P.CHANNEL_STDOUT, P.CHANNEL_STDERR):
            r, w = os.pipe()
            self._pair(r, w)
            self.out[r] = channel
            ends.append(w)
        self.child = (child_in, ends[0], ends[1])

    @staticmethod
    def close(fds: list[int]) -> None:
        for fd in fds:
            os.close(fd)


class ProcessTable:
    """Agent-started processes, by pid."""

    def __init__(self, reaper: Reaper) -> None:
        self._reaper = reaper
        self._procs: dict[int, Process] = {}

    def spawn(self, spec: Spec) -> Process:
        import subprocess

        stdio = _Stdio()
        try:
            if spec.pty:
                stdio.terminal(spec)
            else:
                stdio.pipes(spec.stdin)
            stdin, stdout, stderr = (subprocess.DEVNULL if fd is None else fd for fd in stdio.child)
            popen = subprocess.Popen(
                spec.argv,
                executable=_program(spec.argv[0], spec.env),
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
                preexec_fn=_controlling_tty if spec.pty else None,  # noqa: PLW1509
            )
        except Exception as exc:
            stdio.close(stdio.mine)
            raise _spawn_error(exc, spec) from exc
        finally:
            stdio.close(stdio.theirs)
        proc = Process(
            table=self,
            spec=spec,
            pid=popen.pid,
            popen=popen,
            out=stdio.out,
            stdin_fd=stdio.stdin_fd,
            master=stdio.master,
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


def _program(name: str, env: dict[str, str]) -> str | None:
    """The file a command name runs, found with stat (None: leave the search to exec).

    exec's own search tries execve in each PATH entry in turn, and every miss sets up and
    tears down an address space with argv and the environment copied in: 0.2-1 ms
    emulated each, against ~10 us for a stat (`true` misses three entries). Anything but
    an executable regular file first in PATH is left to exec, which then words the error.
    """
    if "/" in name:
        return None
    for entry in os.get_exec_path(env):
        if not os.path.isabs(entry):  # relative to the command's cwd, not ours
            return None
        path = os.path.join(entry, name)
        try:
            mode = os.stat(path).st_mode
        except OSError:
            continue
        return path if stat.S_ISREG(mode) and mode & 0o111 else None
    return None


def _spawn_error(exc: Exception, spec: Spec) -> OpError:
    """Name the command (or cwd) in the error, as the host will show it to a user."""
    if not isinstance(exc, OSError):
        return OpError("internal", f"cannot start {spec.argv[0]}: {exc}")
    if exc.filename == spec.cwd and exc.filename != spec.argv[0]:
        return from_os_error(exc, f"cwd {spec.cwd}")
    if isinstance(exc, FileNotFoundError | NotADirectoryError):
        return OpError("command_not_found", f"command not found: {spec.argv[0]}")
    return from_os_error(exc, spec.argv[0])
