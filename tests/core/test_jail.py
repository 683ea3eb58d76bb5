"""QEMU in its jail: its own root, PID and IPC namespaces, no capabilities, and no way to
another sandbox's files; checked from the host through /proc, with real VMs."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from sietch.config import Settings
from sietch.core.live import LiveSandbox
from sietch.core.manager import Manager
from sietch.vmm import jail, process
from tests.conftest import short_tmpdir

pytestmark = pytest.mark.skipif(jail.supported() is not None, reason=str(jail.supported()))


@pytest_asyncio.fixture(scope="module")
async def jailed() -> AsyncIterator[Manager]:
    state = short_tmpdir("stj")
    state.chmod(0o755)
    try:
        async with Manager(Settings(state_dir=state, jail=True)) as manager:
            assert manager.jail_status == "on"
            yield manager
        assert not list(process.find_by_marker(str(state)))
    finally:
        shutil.rmtree(state, ignore_errors=True)


def status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def same_file(a: str, b: str) -> bool:
    sa, sb = os.stat(a), os.stat(b)
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


async def live(manager: Manager) -> LiveSandbox:
    return manager.sandbox((await manager.create()).id)


async def test_qemu_has_its_own_root_pid_and_ipc_namespaces_and_no_capabilities(
    jailed: Manager,
) -> None:
    """From the host: QEMU's root is not the host's, its mount, PID and IPC namespaces are
    its own (it is PID 1 there), and it holds no capability at all; the guest still runs."""
    sb = await live(jailed)
    try:
        pid = sb.machine.pid
        assert pid is not None
        assert not same_file(f"/proc/{pid}/root", "/")
        for ns in ("mnt", "pid", "ipc", "net"):
            assert os.readlink(f"/proc/{pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}")
        st = status(pid)
        assert st["NSpid"].split()[-1] == "1"
        assert int(st["CapEff"], 16) == 0
        assert int(st["CapPrm"], 16) == 0
        assert int(st["CapBnd"], 16) == 0
        assert (await sb.exec("echo jailed")).stdout == b"jailed\n"
    finally:
        await jailed.delete(sb.id)


def jail_view(pid: int, own: LiveSandbox, other: LiveSandbox) -> dict[str, object]:
    """What exists in ``pid``'s root, probed from the host through /proc/PID/root (by real
    paths: an absolute symlink met on the way would be followed in the host's root)."""
    root = f"/proc/{pid}/root"

    def seen(path: Path) -> bool:
        return os.path.exists(root + os.path.realpath(path))

    mounts = Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
    top = next(line.split() for line in mounts if line.split()[4] == "/")
    return {
        "own disk": seen(own.workdir / "disk.qcow2"),
        "kernel": seen(own.machine.config.kernel),
        "other work dir": seen(other.workdir),
        "other disk": seen(other.workdir / "disk.qcow2"),
        "top dirs": set(os.listdir(root)),
        "etc": set(os.listdir(root + "/etc")),
        "root read-only": "ro" in top[5].split(","),
    }


async def test_qemu_sees_only_its_own_files(jailed: Manager) -> None:
    """Inside one QEMU's root: its own work dir and images exist, another sandbox's work dir
    does not, nor /proc, /sys, /home, /root or /etc's files; the root is read-only."""
    a, b = await live(jailed), await live(jailed)
    try:
        assert a.machine.pid is not None
        view = jail_view(a.machine.pid, a, b)
        assert view["own disk"] and view["kernel"] and view["root read-only"]
        assert not view["other work dir"] and not view["other disk"]
        assert {"proc", "sys", "home", "root", "run"}.isdisjoint(view["top dirs"])  # type: ignore[arg-type]
        assert view["etc"] <= {"ld.so.cache", "resolv.conf"}  # type: ignore[operator]
    finally:
        await jailed.delete(a.id)
        await jailed.delete(b.id)


async def test_snapshot_restore_and_metrics_work_jailed(jailed: Manager) -> None:
    """A jailed sandbox snapshots (its written pages read through /proc from the host) and
    restores into a new jailed QEMU with its files; its metrics are read as unjailed."""
    sb = await live(jailed)
    try:
        await sb.exec("echo kept > /root/mark")
        snap = await jailed.snapshot(sb.id)
        back = await jailed.restore(snap.id)
        try:
            copy = jailed.sandbox(back.id)
            assert (await copy.exec("cat /root/mark")).stdout == b"kept\n"
            report = await jailed.metrics(back.id)
            assert report.current.memory_pss_bytes and report.current.guest_memory_used_bytes
        finally:
            await jailed.delete(back.id)
        await jailed.delete_snapshot(snap.id)
    finally:
        await jailed.delete(sb.id)
