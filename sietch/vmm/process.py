"""Host-process plumbing for hypervisors: confinement, waiting, finding orphans."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path


def confine(argv: list[str], *, run_as: tuple[int, int] | None, die_with_parent: bool) -> list[str]:
    """Wrap ``argv`` in ``setpriv`` to drop privileges and tie its life to ours.

    setpriv applies the parent-death signal *after* changing credentials
    (a credential change clears it, which is why QEMU's own ``-runas`` can't
    be combined with it).
    """
    opts: list[str] = []
    if run_as is not None:
        uid, gid = run_as
        # The user's groups looked up here, not by setpriv: a jailed QEMU has no /etc.
        try:
            groups = os.getgrouplist(pwd.getpwuid(uid).pw_name, gid)
        except KeyError:
            groups = []
        group_opt = f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups"
        opts += [f"--reuid={uid}", f"--regid={gid}", group_opt]
        # No capability can come back, whatever the process executes.
        opts += ["--inh-caps=-all", "--bounding-set=-all"]
    if die_with_parent:
        opts.append("--pdeathsig=KILL")
    if not opts:
        return argv
    return [setpriv_path(), *opts, "--", *argv]


def setpriv_path() -> str:
    return shutil.which("setpriv") or "/usr/bin/setpriv"


def lookup_user(name: str | None) -> tuple[int, int] | None:
    """(uid, gid) of the unprivileged user to run VMs as, when we are root and it exists."""
    if not name or os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


async def wait_exit(pid: int) -> None:
    """Wait until ``pid`` has exited, without reaping it (pidfd, no polling)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def exited() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(fd, exited)
    try:
        if alive(pid):
            await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def find_by_marker(marker: str) -> Iterator[tuple[int, list[str]]]:
    """Live processes whose command line mentions ``marker`` (a state directory)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        args = cmdline(pid)
        if args and any(marker in a for a in args) and alive(pid):
            yield pid, args


def kill_and_forget(pid: int) -> None:
    """SIGKILL a process that is not our child (init reaps it)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def pss_bytes(pid: int) -> int | None:
    """Proportional set size: the process's private pages plus its share of shared ones
    (a template's page cache counts once across all the sandboxes that map it)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None
