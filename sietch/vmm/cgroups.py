"""A cgroup of its own for each sandbox's host processes (QEMU, slirp4netns), v1 or v2.

One interface, two backends chosen at start (:func:`detect`): cgroup v2 where
``/sys/fs/cgroup`` is the unified hierarchy with the controllers, else the v1
controllers mounted one per directory (``/sys/fs/cgroup/{memory,cpu,...}``),
as on these machines. The Sietch group is a child of the cgroup Sietch itself
runs in (per controller on v1), so a service manager's or a container's own
limits still hold over every sandbox; each sandbox is a child of that group,
named by its id.

A process joins before it runs: :meth:`Cgroup.prefix` is a ``sh`` wrapper that
writes its own pid into the cgroup and then execs the command, so QEMU's first
page is already charged to the sandbox (v1 never moves charges of a process
that joins later).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

ROOT = Path("/sys/fs/cgroup")
GROUP = "sietch"
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "blkio")
"""The v1 controllers used; cpuacct and blkio are optional (accounting, I/O weight)."""
V1_REQUIRED = ("memory", "cpu", "pids")
V2_CONTROLLERS = ("memory", "cpu", "pids", "io")
V2_REQUIRED = ("memory", "cpu", "pids")
CFS_PERIOD_US = 100_000
ENTER = 'while [ "$1" != -- ]; do echo $$ >"$1" || exit 125; shift; done; shift; exec "$@"'
"""Join every cgroup named before ``--``, then become the command (same pid)."""
ENTER_FDS = (
    'while [ "$1" != -- ]; do echo $$ >&"$1" || exit 125; eval "exec $1>&-"; shift; done; '
    'shift; exec "$@"'
)
"""The same through inherited fds of ``cgroup.procs`` files, each closed before the exec
(a jailed QEMU sees no /sys; an fd opened by root must not stay with it). bash, not sh:
dash takes only single-digit fds in redirections."""
FDS_SHELL = "/bin/bash"

Mode = Literal["auto", "v1", "v2", "off"]


@dataclass(frozen=True)
class Limits:
    """What one sandbox may use on the host."""

    memory_bytes: int
    cpus: float | None
    """CPU time per wall second, in cores (a CFS quota); None: no cap."""
    cpu_weight: int | None
    """Share against other sandboxes under contention, 1-10000 (v2 scale; 100 = default)."""
    pids_max: int
    io_weight: int | None
    """Block I/O weight, 1-1000 (100 = default); applied where the I/O scheduler has one."""


@dataclass(frozen=True)
class Usage:
    """What a sandbox's host processes use now."""

    memory_bytes: int
    memory_peak_bytes: int | None
    cpu_seconds: float
    pids: int
    oom_kills: int | None


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _read(path: Path) -> str:
    with open(path) as f:
        return f.read().strip()


def _read_int(path: Path) -> int | None:
    try:
        return int(_read(path))
    except (OSError, ValueError):
        return None


def _keyed(path: Path) -> dict[str, int]:
    """A ``key value`` per line file (memory.stat, cpu.stat, memory.events)."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in _read(path).splitlines():
            key, _, value = line.partition(" ")
            with contextlib.suppress(ValueError):
                out[key] = int(value)
    return out


def _pids(procs_file: Path) -> list[int]:
    try:
        return [int(p) for p in _read(procs_file).split()]
    except (OSError, ValueError):
        return []


def _rmdir(path: Path, timeout: float = 2.0) -> None:
    """Remove a cgroup; a process just killed may take a moment to leave it (EBUSY)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                log.warning("could not remove cgroup %s: %s", path, exc)
                return
        time.sleep(0.01)


class Cgroup:
    """One sandbox's cgroup (a directory per v1 controller, or one v2 directory)."""

    version: int

    def __init__(self, dirs: dict[str, Path]) -> None:
        self.dirs = dirs
        """Controller -> directory (v2: every controller maps to the one directory)."""

    @property
    def paths(self) -> list[Path]:
        return sorted(set(self.dirs.values()))

    def create(self, limits: Limits) -> None:
        """Make the cgroup (again: a left-over one is reused) and set its limits."""
        for path in self.paths:
            path.mkdir(exist_ok=True)
        self.apply(limits)

    def apply(self, limits: Limits) -> None:
        raise NotImplementedError

    def usage(self) -> Usage:
        raise NotImplementedError

    def prefix(self) -> list[str]:
        """A command prefix that joins this cgroup and execs the rest (see module doc)."""
        return ["/bin/sh", "-c", ENTER, "sietch-cgroup", *map(str, self.procs_files()), "--"]

    def prefix_fds(self, fds: list[int]) -> list[str]:
        """:meth:`prefix` through fds from :meth:`open_procs` (to be inherited)."""
        return [FDS_SHELL, "-c", ENTER_FDS, "sietch-cgroup", *map(str, fds), "--"]

    def open_procs(self) -> list[int]:
        """Write-only fds of this cgroup's ``cgroup.procs`` files (the caller closes them)."""
        fds: list[int] = []
        try:
            for procs in self.procs_files():
                fds.append(os.open(procs, os.O_WRONLY | os.O_CLOEXEC))
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return fds

    def procs_files(self) -> list[Path]:
        return [path / "cgroup.procs" for path in self.paths]

    def add(self, pid: int) -> None:
        for procs in self.procs_files():
            _write(procs, str(pid))

    def pids(self) -> list[int]:
        return sorted({pid for procs in self.procs_files() for pid in _pids(procs)})

    def remove(self) -> None:
        """Kill what is left in it (its VM is stopped by now) and remove it."""
        for _ in range(10):
            left = self.pids()
            if not left:
                break
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)
        for path in self.paths:
            _rmdir(path)


class CgroupV1(Cgroup):
    version = 1

    def apply(self, limits: Limits) -> None:
        d = self.dirs
        _write(d["memory"] / "memory.limit_in_bytes", str(limits.memory_bytes))
        quota = -1 if limits.cpus is None else max(1000, int(limits.cpus * CFS_PERIOD_US))
        _write(d["cpu"] / "cpu.cfs_period_us", str(CFS_PERIOD_US))
        _write(d["cpu"] / "cpu.cfs_quota_us", str(quota))
        if limits.cpu_weight is not None:
            # v2's weight 100 is v1's 1024 shares.
            _write(d["cpu"] / "cpu.shares", str(max(2, limits.cpu_weight * 1024 // 100)))
        _write(d["pids"] / "pids.max", str(limits.pids_max))
        if limits.io_weight is not None and "blkio" in d:
            weight = d["blkio"] / "blkio.bfq.weight"
            if weight.exists():
                _write(weight, str(limits.io_weight))

    def usage(self) -> Usage:
        d = self.dirs
        cpu_ns = _read_int(d["cpuacct"] / "cpuacct.usage") if "cpuacct" in d else None
        return Usage(
            memory_bytes=_read_int(d["memory"] / "memory.usage_in_bytes") or 0,
            memory_peak_bytes=_read_int(d["memory"] / "memory.max_usage_in_bytes"),
            cpu_seconds=(cpu_ns or 0) / 1e9,
            pids=_read_int(d["pids"] / "pids.current") or 0,
            oom_kills=_keyed(d["memory"] / "memory.oom_control").get("oom_kill"),
        )


class CgroupV2(Cgroup):
    version = 2

    @property
    def path(self) -> Path:
        return self.paths[0]

    def apply(self, limits: Limits) -> None:
        p = self.path
        _write(p / "memory.max", str(limits.memory_bytes))
        quota = "max" if limits.cpus is None else str(max(1000, int(limits.cpus * CFS_PERIOD_US)))
        _write(p / "cpu.max", f"{quota} {CFS_PERIOD_US}")
        if limits.cpu_weight is not None:
            _write(p / "cpu.weight", str(limits.cpu_weight))
        _write(p / "pids.max", str(limits.pids_max))
        if limits.io_weight is not None and (p / "io.weight").exists():
            _write(p / "io.weight", f"default {limits.io_weight}")

    def usage(self) -> Usage:
        p = self.path
        return Usage(
            memory_bytes=_read_int(p / "memory.current") or 0,
            memory_peak_bytes=_read_int(p / "memory.peak"),
            cpu_seconds=_keyed(p / "cpu.stat").get("usage_usec", 0) / 1e6,
            pids=_read_int(p / "pids.current") or 0,
            oom_kills=_keyed(p / "memory.events").get("oom_kill"),
        )

    def remove(self) -> None:
        kill = self.path / "cgroup.kill"
        if kill.exists():
            with contextlib.suppress(OSError):
                _write(kill, "1")
        super().remove()


class Hierarchy:
    """Where the Sietch group is, and how to make a sandbox's cgroup in it."""

    def __init__(self, version: int, groups: dict[str, Path]) -> None:
        self.version = version
        self.groups = groups
        """Controller -> the Sietch group's directory for it."""

    def describe(self) -> str:
        return f"cgroup v{self.version} at {', '.join(map(str, sorted(set(self.groups.values()))))}"

    def cgroup(self, name: str) -> Cgroup:
        dirs = {ctrl: group / name for ctrl, group in self.groups.items()}
        return CgroupV1(dirs) if self.version == 1 else CgroupV2(dirs)


def _own_paths(proc_cgroup: str) -> dict[str, str]:
    """Controller (v1) or "" (v2) -> the cgroup this process is in, from /proc/self/cgroup."""
    own: dict[str, str] = {}
    for line in proc_cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        for ctrl in controllers.split(",") if controllers else [""]:
            own[ctrl] = path
    return own


def _v1_mounts(mountinfo: str) -> dict[str, Path]:
    """v1 controller -> its mount point, from /proc/self/mountinfo."""
    mounts: dict[str, Path] = {}
    for line in mountinfo.splitlines():
        fields = line.split()
        sep = fields.index("-")
        if fields[sep + 1] != "cgroup":
            continue
        for option in fields[sep + 3].split(","):
            if option in V1_CONTROLLERS:
                mounts[option] = Path(fields[4])
    return mounts


def setup_v1(mountinfo: str, proc_cgroup: str, group: str = GROUP) -> Hierarchy:
    """The Sietch group under this process's own cgroup of each v1 controller."""
    mounts, own = _v1_mounts(mountinfo), _own_paths(proc_cgroup)
    missing = [c for c in V1_REQUIRED if c not in mounts]
    if missing:
        raise OSError(f"cgroup v1 controllers not mounted: {', '.join(missing)}")
    groups: dict[str, Path] = {}
    for ctrl, mount in mounts.items():
        path = mount / own.get(ctrl, "/").lstrip("/") / group
        path.mkdir(exist_ok=True)
        groups[ctrl] = path
    if "memory" in groups:
        # Children account into their parent (always so on recent kernels; 0 on old ones).
        with contextlib.suppress(OSError):
            _write(groups["memory"] / "memory.use_hierarchy", "1")
    return Hierarchy(1, groups)


def setup_v2(root: Path, proc_cgroup: str, group: str = GROUP) -> Hierarchy:
    """The Sietch group under this process's own v2 cgroup, controllers delegated to it.

    v2 lets only leaves hold processes once controllers are enabled below: when
    Sietch runs in a cgroup of its own (a systemd service), it first moves itself
    into a leaf ``<own>/server``, the pattern ``Delegate=yes`` services follow.
    """
    available = set(_read(root / "cgroup.controllers").split())
    missing = [c for c in V2_REQUIRED if c not in available]
    if missing:
        raise OSError(f"cgroup v2 controllers not available: {', '.join(missing)}")
    wanted = " ".join(f"+{c}" for c in V2_CONTROLLERS if c in available)
    own = root / _own_paths(proc_cgroup).get("", "/").lstrip("/")
    if own != root and _pids(own / "cgroup.procs"):
        leaf = own / "server"
        leaf.mkdir(exist_ok=True)
        for pid in _pids(own / "cgroup.procs"):
            with contextlib.suppress(ProcessLookupError):
                _write(leaf / "cgroup.procs", str(pid))
    _write(own / "cgroup.subtree_control", wanted)
    path = own / group
    path.mkdir(exist_ok=True)
    _write(path / "cgroup.subtree_control", wanted)
    return Hierarchy(2, {c: path for c in V2_CONTROLLERS if c in available})


def _is_v2(root: Path) -> bool:
    return (root / "cgroup.controllers").exists()


def detect(mode: Mode = "auto", root: Path = ROOT) -> tuple[Hierarchy | None, str]:
    """The hierarchy to use and a sentence on what was chosen, or why none can be."""
    if mode == "off":
        return None, "per-sandbox cgroups are off (SIETCH_CGROUPS=off)"
    if os.geteuid() != 0:
        return None, "per-sandbox cgroup limits need Sietch to run as root"
    try:
        with open("/proc/self/cgroup") as f:
            proc_cgroup = f.read()
        with open("/proc/self/mountinfo") as f:
            mountinfo = f.read()
        if mode == "v2" or (mode == "auto" and _is_v2(root)):
            hierarchy = setup_v2(root, proc_cgroup)
        else:
            hierarchy = setup_v1(mountinfo, proc_cgroup)
    except (OSError, ValueError) as exc:
        return None, f"per-sandbox cgroup limits are unavailable: {exc}"
    return hierarchy, f"per-sandbox limits in {hierarchy.describe()}"
