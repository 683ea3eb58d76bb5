"""QEMU confined as Firecracker's jailer confines Firecracker: a root, PID and IPC of its own.

Each jailed QEMU starts in a new mount namespace whose root is a small tmpfs
holding only what it needs, each at its host path (so its command line, its
sockets and every path Sietch hands it stay the same):

- read-write: its sandbox's work dir (disk overlay, RAM file, QMP and agent
  sockets, console log: the host reaches the same inodes there);
- read-only: kernel, initramfs, tools disk, the disk's backing chain, a
  restore's memory file, the QEMU binary with its libraries and firmware, and
  the two tools that start it (``bash``, ``setpriv``), the loader's cache and
  ``/etc/resolv.conf`` (slirp forwards the guest's DNS to its nameserver);
- devices: ``/dev/null``, ``/dev/urandom``, ``/dev/kvm`` under KVM.

No /proc, /sys, other files of /etc, nor other sandboxes' files exist there. It is PID 1
of a new PID namespace (it sees no other process) and has an IPC namespace of
its own; ``setpriv`` drops the capability bounding set with the user.

How: a single long-lived thread (:data:`_LAUNCHER`) unshares the namespaces,
builds the root, pivots into it and forks QEMU, then switches itself back to
the host's namespaces. QEMU thus stays a direct child of Sietch (its pid is
the host pid, its exit code is ours to reap) and a parent-death signal
follows Sietch's life, not that of a short-lived thread. The namespaces
live exactly as long as QEMU: nothing is mounted on the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import os
import shutil
import struct
import subprocess
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sietch.errors import VMError

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
    1, 2, 4, 32, 4096, 16384, 1 << 18,
)  # fmt: skip
MNT_DETACH = 2
DEVICES = ("/dev/null", "/dev/urandom")
FIRMWARE_DIR = Path("/usr/share/qemu")
MODULE_DIRS = (Path("/usr/lib/x86_64-linux-gnu/qemu"), Path("/usr/lib/qemu"))
"""QEMU's loadable modules, where distributions put them (Debian: the first)."""

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
_NAMESPACES = {"mnt": CLONE_NEWNS, "pid_for_children": CLONE_NEWPID, "ipc": CLONE_NEWIPC}


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    enc = [None if s is None else s.encode() for s in (source, target, fstype)]
    _check(_libc.mount(*enc, flags, data.encode() or None), f"mount {source} on {target}")


@dataclass
class Jail:
    """What one QEMU may see; built per launch by its sandbox's owner."""

    base: Path
    """An empty host directory the jail's root is mounted on, in the jail's own mount
    namespace only (so one directory serves every jail at once)."""
    rw: list[Path]
    ro: list[Path]
    devices: list[str] = field(default_factory=lambda: list(DEVICES))
    netns: int | None = None
    """An fd of the network namespace QEMU runs in (instead of ``nsenter``)."""


def backing_chain(image: Path) -> list[Path]:
    """The files a qcow2 image's backing chain opens, as QEMU names them (relative backing
    names against the directory of the image that names them, symlinks unresolved)."""
    chain: list[Path] = []
    current: Path | None = image
    while current is not None and len(chain) < 64:
        chain.append(current)
        try:
            with open(current, "rb") as f:
                header = f.read(20)
                if len(header) < 20 or header[:4] != b"QFI\xfb":
                    break
                offset, size = struct.unpack(">QI", header[8:20])
                if not offset or not size:
                    break
                f.seek(offset)
                name = f.read(size).decode()
        except OSError:
            break
        current = Path(name) if os.path.isabs(name) else current.parent / name
    return chain


@functools.cache
def runtime_files(binary: str) -> tuple[Path, ...]:
    """The executable and the shared libraries (and loader) it links, from ``ldd``."""
    path = shutil.which(binary) or binary
    files = [Path(path)]
    out = subprocess.run(["ldd", path], capture_output=True, text=True, check=False).stdout
    for line in out.splitlines():
        words = line.split()
        if "=>" in words and len(words) > words.index("=>") + 1:
            candidate = words[words.index("=>") + 1]
        else:
            candidate = words[0] if words else ""
        if candidate.startswith("/"):
            files.append(Path(candidate))
    return tuple(files)


def qemu_files(qemu_binary: str, helpers: Iterable[str]) -> list[Path]:
    """What running QEMU (and the tools that start it) needs from the host's /usr."""
    files: list[Path] = []
    for binary in (qemu_binary, *helpers):
        files += runtime_files(binary)
    files += [d for d in (FIRMWARE_DIR, *MODULE_DIRS) if d.is_dir()]
    # resolv.conf: slirp forwards the guest's DNS to its nameserver, which the
    # sandbox's namespace redirects to Sietch's resolver (sietch.network.dns).
    files += [f for f in (Path("/etc/ld.so.cache"), Path("/etc/resolv.conf")) if f.exists()]
    return files


class _Root:
    """Builds a jail's root under ``base`` (inside the jail's mount namespace)."""

    def __init__(self, base: Path) -> None:
        self.base = str(base)
        self.bound: list[str] = []

    def _inside_bound(self, path: str) -> bool:
        return any(path == b or path.startswith(b.rstrip("/") + "/") for b in self.bound)

    def place(self, path: str, *, readonly: bool, device: bool = False) -> None:
        """Make ``path`` resolve in the jail as it does on the host: each symlink on the
        way recreated, the file or directory it ends at bind-mounted."""
        parts = Path(path).parts[1:]
        current = "/"
        for i, part in enumerate(parts):
            step = os.path.join(current, part)
            if os.path.islink(step):
                target = os.readlink(step)
                link = self.base + step
                if not self._inside_bound(step) and not os.path.lexists(link):
                    os.makedirs(os.path.dirname(link), exist_ok=True)
                    os.symlink(target, link)
                resolved = os.path.normpath(os.path.join(current, target))
                self.place(os.path.join(resolved, *parts[i + 1 :]), readonly=readonly)
                return
            current = step
        if self._inside_bound(current) or not os.path.exists(current):
            return
        self._bind(current, readonly=readonly, device=device)

    def _bind(self, source: str, *, readonly: bool, device: bool) -> None:
        target = self.base + source
        if os.path.isdir(source):
            os.makedirs(target, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "a"):
                pass
        _mount(source, target, None, MS_BIND | MS_REC)
        if readonly or not device:
            flags = MS_REMOUNT | MS_BIND | MS_NOSUID
            flags |= (MS_RDONLY if readonly else 0) | (0 if device else MS_NODEV)
            _mount(None, target, None, flags)
        self.bound.append(source)

    def build(self, jail: Jail) -> None:
        """Mount the tmpfs root, place everything, seal the root read-only, pivot into it."""
        _mount("tmpfs", self.base, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=1m")
        for path in jail.rw:
            self.place(str(path), readonly=False)
        for path in jail.ro:
            self.place(str(path), readonly=True)
        for device in jail.devices:
            self.place(device, readonly=False, device=True)
        # Read-only through a fresh recursive bind of the root, not a remount of the tmpfs:
        # the tmpfs's own mount could still count a writer (an EBUSY seen under load).
        _mount(self.base, self.base, None, MS_BIND | MS_REC)
        _mount(None, self.base, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
        os.chdir(self.base)
        # pivot_root(".", "."): the old root ends up stacked on the new one, and
        # detaching it leaves only the jail (runc's way; no put_old directory needed).
        _check(_libc.syscall(155, b".", b"."), "pivot_root")
        _check(_libc.umount2(b".", MNT_DETACH), "umount old root")
        os.chdir("/")


@contextlib.contextmanager
def _namespaces() -> Iterator[None]:
    """On the launcher thread: new mount (private from here on), PID and IPC namespaces for
    the ``with`` block, then the thread's own again (network too: a jail may enter one)."""
    own = {
        name: os.open(f"/proc/thread-self/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
        for name in (*_NAMESPACES, "net")
    }
    try:
        _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC), "unshare")
        try:
            # Nothing mounted from here on may propagate to the host.
            _mount(None, "/", None, MS_REC | MS_PRIVATE)
            yield
        finally:
            for name, flag in (*_NAMESPACES.items(), ("net", CLONE_NEWNET)):
                _check(_libc.setns(own[name], flag), f"setns back ({name})")
    finally:
        for fd in own.values():
            os.close(fd)


def _spawn(jail: Jail, argv: list[str], options: dict[str, Any]) -> subprocess.Popen[bytes]:
    """On the launcher thread: new namespaces, the root, fork QEMU, come back."""
    with _namespaces():
        if jail.netns is not None:
            _check(_libc.setns(jail.netns, CLONE_NEWNET), "setns(net)")
        _Root(jail.base).build(jail)
        return subprocess.Popen(argv, cwd="/", **options)


def _probe() -> None:
    with _namespaces():
        pass


_LAUNCHER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sietch-jail")
"""One thread that forks every jailed QEMU, for as long as Sietch runs: a parent-death
signal fires when the *thread* that forked the process ends."""


async def spawn(jail: Jail, argv: list[str], **options: Any) -> subprocess.Popen[bytes]:
    """Start ``argv`` jailed (``options`` as for :class:`subprocess.Popen`)."""
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(_LAUNCHER, _spawn, jail, argv, options)
    except OSError as exc:
        raise VMError(f"could not start QEMU in its jail: {exc}") from exc


def supported() -> str | None:
    """None if jails can be made here, else why not."""
    if os.geteuid() != 0:
        return "the QEMU jail needs Sietch to run as root"
    try:
        os.stat("/proc/thread-self/ns/pid_for_children")
    except OSError:
        return "this kernel has no PID namespaces"
    try:  # root in a container may still be refused namespaces or mounts
        _LAUNCHER.submit(_probe).result()
    except OSError as exc:
        return f"the QEMU jail's namespaces are refused here ({exc}); set SIETCH_JAIL=false"
    return None
