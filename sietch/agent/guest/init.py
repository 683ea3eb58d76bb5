"""PID-1 duties: what an init system would do before and around user commands.

Only used when the agent is PID 1 (or started with ``--init``); on a
development host none of this may touch the machine. Everything here logs and
carries on when it fails: PID 1 exiting is a kernel panic.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import stat
from typing import TYPE_CHECKING, Any

from sietch.agent.guest.errors import OpError

if TYPE_CHECKING:
    from sietch.agent.guest.ops import Agent

log = logging.getLogger(__name__)

TOOLS = "/run/sietch"
BUSYBOX = f"{TOOLS}/bin/busybox"
GUEST_ADDRESS = "10.0.2.15/24"
GATEWAY = "10.0.2.2"
NAMESERVER = "10.0.2.3"
"""QEMU user-mode networking's fixed addresses."""

MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8
RB_POWER_OFF = 0x4321FEDC
RNDADDENTROPY = 0x40085203  # _IOW('R', 0x03, int[2])
RNDRESEEDCRNG = 0x5207  # _IO('R', 0x07)
SIOCSIFHWADDR = 0x8924
SIOCGIFADDR = 0x8915
ARPHRD_ETHER = 1
ETH_P_ARP = 0x0806


@functools.cache
def libc() -> Any:
    """libc through ctypes, loaded on first use (ctypes is slow to import)."""
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _mount(source: str, target: str, fstype: str, flags: int, data: str) -> None:
    import ctypes

    if libc().mount(source.encode(), target.encode(), fstype.encode(), flags, data.encode()) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype} on {target}: {os.strerror(err)}")


def mount_basics() -> None:
    """/dev/pts for terminals, /dev/shm for POSIX shared memory, /tmp for everyone."""
    from sietch.agent.guest import users

    # ismount, not /proc/mounts: a mount hidden under a later /dev is listed there too.
    if not os.path.ismount("/dev/pts"):
        os.makedirs("/dev/pts", exist_ok=True)
        tty = users.group_id("tty")
        options = "ptmxmode=0666,mode=0620" + (f",gid={tty}" if tty is not None else "")
        _mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, options)
    if not os.path.ismount("/dev/shm"):
        os.makedirs("/dev/shm", exist_ok=True)
        _mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    if not os.path.isdir("/tmp"):
        os.makedirs("/tmp", exist_ok=True)
        os.chmod("/tmp", 0o1777)


def check_hostname(name: str) -> None:
    if not 0 < len(name) <= 64 or any(c in name for c in "/\0 \n\t"):
        raise OpError("invalid_argument", f"invalid hostname {name!r}")


def set_hostname(name: str) -> None:
    with open("/proc/sys/kernel/hostname", "w") as f:
        f.write(name)


def name_in_hosts(name: str, path: str = "/etc/hosts") -> None:
    """Point 127.0.1.1 at ``name`` (Debian's convention), so a new hostname resolves too.

    Written in place, not renamed over: /etc/hosts may be a bind mount.
    """
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        lines = ["127.0.0.1\tlocalhost"]
    kept = [line for line in lines if line.split()[:1] != ["127.0.1.1"]]
    kept.insert(1 if kept else 0, f"127.0.1.1\t{name}")
    with open(path, "w") as f:
        f.write("\n".join(kept) + "\n")


def hostname_from_etc() -> str:
    try:
        with open("/etc/hostname") as f:
            name = f.readline().strip()
    except OSError:
        name = ""
    return name or "sietch"


def ensure_resolv_conf() -> None:
    """Point DNS at slirp's resolver, unless the image configured its own."""
    path = "/etc/resolv.conf"
    try:
        if os.path.getsize(path) > 0:
            return
    except OSError:
        if os.path.islink(path):  # dangling, e.g. to systemd-resolved's stub
            os.unlink(path)
    with open(path, "w") as f:
        f.write(f"nameserver {NAMESERVER}\n")


def _network_steps() -> list[list[str]]:
    if not os.path.exists(BUSYBOX):
        log.warning("no %s: network left down", BUSYBOX)
        return []
    steps = [["link", "set", "lo", "up"]]
    if os.path.exists("/sys/class/net/eth0"):
        steps += [
            ["link", "set", "eth0", "up"],
            ["addr", "add", GUEST_ADDRESS, "dev", "eth0"],
            ["route", "add", "default", "via", GATEWAY],
        ]
    return steps


async def network_up(agent: Agent) -> None:
    for step in _network_steps():
        code, output = await agent.processes.run([BUSYBOX, "ip", *step], timeout=10)
        if code != 0 and "File exists" not in output:
            log.warning("ip %s: exit %s: %s", " ".join(step), code, output.strip())


SETUP_GRACE = 0.5
"""Seconds setup waits for the host's first SYNC before starting anyway."""


async def setup(agent: Agent, *, basics: bool = True) -> None:
    """Runs while the port already serves SYNC and hello; other ops wait for it.

    ``basics=False``: sietch-front did the mounts, hostname, resolv.conf and network
    (its init.c) before it started this process; only the image's services are left.
    """
    if basics:
        await _basics(agent)
    else:  # the front niced our start: what we run from here on runs at the usual priority
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, 0)
    from sietch.agent.guest import services

    try:
        await services.start(agent)  # the image's own (a desktop): up before we report ready
    except Exception:
        log.exception("starting the image's services failed")
    agent.ready.set()
    log.info("ready")


async def _basics(agent: Agent) -> None:
    # The host's SYNC is usually already waiting in the port. Setup's first
    # steps block the loop (ctypes import, mounts: tenths of a second under
    # TCG), so let that SYNC be answered first.
    if agent.mux is not None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(agent.mux.synced(), SETUP_GRACE)
    for name, step in (
        ("mounts", mount_basics),
        ("hostname", lambda: set_hostname(hostname_from_etc())),
        ("resolv.conf", ensure_resolv_conf),
    ):
        try:
            step()
        except Exception as exc:
            log.warning("setup %s: %s", name, exc)
    try:
        await network_up(agent)
    except Exception:
        log.exception("network setup failed")


def ignore_termination(loop: asyncio.AbstractEventLoop) -> None:
    """PID 1 stops only through the shutdown op; these signals are logged, not obeyed.

    A handler rather than SIG_IGN, because ignored signals stay ignored across
    exec and every command would inherit that.
    """
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, log.info, "ignoring %s as PID 1", sig.name)


def set_clock(now: float) -> bool:
    import time

    try:
        time.clock_settime(time.CLOCK_REALTIME, now)
    except OSError as exc:
        log.warning("cannot set the clock: %s", exc)
        return False
    return True


def add_entropy(data: bytes) -> None:
    """Mix the host's bytes in and credit them, so a restored clone's RNG diverges."""
    import fcntl
    import struct

    try:
        fd = os.open("/dev/urandom", os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        log.warning("cannot open /dev/urandom: %s", exc)
        return
    try:
        try:
            fcntl.ioctl(fd, RNDADDENTROPY, struct.pack("ii", len(data) * 8, len(data)) + data)
        except OSError:
            os.write(fd, data)  # mixed in, though not credited
        # Mixing in is not enough: the kernel's CRNG reseeds from the pool only
        # every few seconds to a minute, and until then two clones of one
        # snapshot hand out the same /dev/urandom bytes. Force it now.
        try:
            fcntl.ioctl(fd, RNDRESEEDCRNG)
        except OSError as exc:
            log.warning("cannot reseed the CRNG: %s", exc)
    finally:
        os.close(fd)


def set_mac(interface: str, mac: str) -> None:
    """Give a restored clone its own MAC (virtio-net applies it live)."""
    import fcntl
    import socket
    import struct

    raw = bytes.fromhex(mac.replace(":", ""))
    if len(raw) != 6:
        raise OpError("invalid_argument", f"invalid MAC address {mac!r}")
    if not os.path.exists(f"/sys/class/net/{interface}"):
        return
    req = struct.pack("16sH6s8x", interface.encode(), ARPHRD_ETHER, raw)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock.fileno(), SIOCSIFHWADDR, req)
        try:
            ip = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, struct.pack("40s", interface.encode()))
        except OSError:
            return  # no address yet: nobody has learnt the old MAC for one
    # The guest ran between the restore and this change, and may have told slirp its old
    # MAC (an ARP reply or request); slirp keeps that, so every packet for the guest would
    # go to a MAC its NIC now drops. A gratuitous ARP makes slirp learn the new one.
    addr = ip[20:24]
    arp = struct.pack("!HHBBH", ARPHRD_ETHER, 0x0800, 6, 4, 1) + raw + addr + bytes(6) + addr
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as packet:
        packet.bind((interface, 0))
        packet.send(b"\xff" * 6 + raw + struct.pack("!H", ETH_P_ARP) + arp)


def power_off() -> None:
    os.sync()
    try:
        import ctypes

        libc().reboot(RB_POWER_OFF)
        log.error("reboot(RB_POWER_OFF) failed: %s", os.strerror(ctypes.get_errno()))
    except Exception as exc:
        log.error("reboot(RB_POWER_OFF) failed: %s", exc)
    if os.path.exists(BUSYBOX):
        os.execv(BUSYBOX, [BUSYBOX, "poweroff", "-f"])


def root_device() -> str:
    """The block device mounted on /, for resize2fs."""
    device = ""
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 2 and fields[1] == "/" and fields[0].startswith("/dev/"):
                    device = fields[0]
    except OSError:
        pass
    if device and os.path.exists(device) and device != "/dev/root":
        return device
    # "/dev/root" is the kernel's placeholder name: find the real node by number.
    st = os.stat("/")
    try:
        with open(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/uevent") as f:
            for line in f:
                if line.startswith("DEVNAME="):
                    node = "/dev/" + line.strip().split("=", 1)[1]
                    if stat.S_ISBLK(os.stat(node).st_mode):
                        return node
    except OSError:
        pass
    raise OpError("not_found", f"cannot find the block device of / (mounts say {device!r})")


def find_tool(name: str) -> str | None:
    for directory in ("sbin", "usr/sbin", "bin", "usr/bin"):
        path = f"{TOOLS}/{directory}/{name}"
        if os.access(path, os.X_OK):
            return path
    return None
