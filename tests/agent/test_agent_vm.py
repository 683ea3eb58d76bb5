"""The agent in a real microVM: the virtio-serial transport only exists there.

Boots the ``minimal`` image (busybox, no python3) under TCG with the tools
disk built from this checkout, and drives the agent over QEMU's chardev
socket. Skipped when QEMU or the image cache is missing; slow (a cold boot
under emulation takes seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sietch.agent import protocol as P
from sietch.agent.protocol import Kind
from sietch.vmm.qemu import FIRMWARE

from .hostside import HostConnection, eventually

pytestmark = pytest.mark.slow

CACHE = Path(os.environ.get("SIETCH_CACHE_DIR", "/var/cache/sietch"))


def _tsc_khz() -> int | None:
    # Without it a TCG guest on a busy host may fail TSC calibration and hang.
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("cpu MHz"):
                return round(float(line.partition(":")[2]) * 1000)
    return None


class VM:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.sock = work / "agent.sock"
        self.console = work / "console.log"
        self.qemu: asyncio.subprocess.Process | None = None
        self.conns: list[HostConnection] = []

    async def boot(self) -> None:
        from sietch.images.store import ImageStore

        store = ImageStore(CACHE)
        try:
            # Only the tools disk (this checkout's agent) may be rebuilt here.
            kernel, initramfs, rootfs = store.kernel(), store.initramfs(), store.rootfs("minimal")
            tools = store.tools()
        except Exception as exc:
            pytest.skip(f"images not available: {exc}")
        root = self.work / "root.ext4"
        await asyncio.to_thread(shutil.copyfile, rootfs, root)
        tsc = _tsc_khz()
        cmdline = "console=ttyS0 reboot=t panic=-1 quiet" + (f" tsc_early_khz={tsc}" if tsc else "")
        self.qemu = await asyncio.create_subprocess_exec(
            *("qemu-system-x86_64", "-M", "microvm,rtc=on,acpi=on", "-accel", "tcg"),
            *("-bios", FIRMWARE),
            *("-cpu", "max", "-smp", "2", "-m", "512M", "-nodefaults", "-no-user-config"),
            *("-display", "none", "-no-reboot", "-kernel", str(kernel)),
            *("-initrd", str(initramfs), "-append", cmdline),
            *("-chardev", f"file,id=console,path={self.console}", "-serial", "chardev:console"),
            *("-drive", f"id=root,file={root},format=raw,if=none"),
            *("-device", "virtio-blk-device,drive=root,serial=sietch-root"),
            *("-drive", f"id=tools,file={tools},format=raw,if=none,readonly=on"),
            *("-device", "virtio-blk-device,drive=tools,serial=sietch-tools"),
            *("-device", "virtio-serial-device,max_ports=2"),
            *("-chardev", f"socket,id=agent,path={self.sock},server=on,wait=off"),
            *("-device", f"virtserialport,chardev=agent,name={P.PORT_NAME}"),
            *("-netdev", "user,id=net0,restrict=on", "-device", "virtio-net-device,netdev=net0"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def connect(self, timeout: float = 120) -> HostConnection:
        """Connect to the chardev and SYNC, re-sending while the guest boots."""
        async with asyncio.timeout(timeout):
            while True:
                try:
                    reader, writer = await asyncio.open_unix_connection(str(self.sock))
                    break
                except OSError:
                    await asyncio.sleep(0.05)
        conn = HostConnection(reader, writer)
        self.conns.append(conn)
        await conn.sync(timeout=timeout, resend=0.5)
        return conn

    def console_text(self) -> str:
        return self.console.read_text(errors="replace") if self.console.exists() else ""

    @contextlib.contextmanager
    def evidence(self) -> Iterator[None]:
        """On failure, show the guest's console (kernel and agent log)."""
        try:
            yield
        except BaseException:
            print("--- guest console ---\n" + self.console_text()[-6000:])
            raise

    async def stop(self) -> None:
        for conn in self.conns:
            await conn.close()
        if self.qemu is not None and self.qemu.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.qemu.send_signal(signal.SIGKILL)
            await self.qemu.wait()


def _can_boot() -> bool:
    return bool(shutil.which("qemu-system-x86_64")) and CACHE.is_dir()


@pytest.fixture
async def vm(tmp_path: Path) -> AsyncIterator[VM]:
    if not _can_boot():
        pytest.skip("needs qemu-system-x86_64 and a built image cache")
    machine = VM(tmp_path)
    await machine.boot()
    try:
        yield machine
    finally:
        await machine.stop()


async def test_agent_in_a_microvm(vm: VM) -> None:
    """Port discovery, PID-1 setup, exec, pty, files, host reconnects, torn frames, power off."""
    with vm.evidence():
        host = await vm.connect()
        hello = await host.call("hello", time=time.time(), hostname="sbx-vm", entropy="c2lldGNo")
        assert (hello["pid"], hello["init"], hello["hostname"], hello["clock_set"]) == (
            1,
            True,
            "sbx-vm",
            True,
        )
        # The first command of a cold boot: sietch-front serves it, Python may still be
        # starting, and the PID-1 basics (the front's own) are in place.
        out = await host.run(
            cmd="cat /proc/$PPID/comm; hostname; cat /proc/mounts; ip addr show eth0; ip route;"
            " ls -ld /tmp; cat /etc/resolv.conf; env"
        )
        text = out.stdout.decode()
        assert text.startswith("sietch-front\nsbx-vm\n"), text
        assert " /dev/pts devpts " in text and "ptmxmode=666" in text and " /dev/shm tmpfs " in text
        assert "inet 10.0.2.15/24" in text and "nameserver 10.0.2.3" in text
        assert "default via 10.0.2.2 dev eth0" in text and "drwxrwxrwt" in text
        assert "SIETCH_FRONT" not in text, "the front's variables leaked"
        assert "PYTHON" not in text, "the agent's own environment leaked"
        out = await host.run(cmd="tty; stty size", pty=True, cols=120, rows=40)
        assert out.stdout == b"/dev/pts/0\r\n40 120\r\n"
        data = os.urandom(3 << 20)
        s = host.open("write", path="/root/blob")
        await s.write(data)
        s.eof()
        assert (await s.result())["size"] == len(data)
        assert (await host.open("read", path="/root/blob").outcome()).stdout == data

        # The host goes away and comes back: the guest learns it through SIGIO.
        bg = await host.call("exec", cmd="echo kept; sleep 60", background=True)
        await host.close()
        host = await vm.connect(timeout=20)

        async def kept() -> None:
            out = await host.open("attach", pid=bg["pid"], follow=False).outcome()
            assert out.stdout == b"kept\n" and out.final["running"] is True

        await eventually(kept)

        # Half a frame, then a new connection: the new SYNC must still get through.
        host.send(P.HEADER.pack(Kind.OPEN, 5, 3000) + b'{"op":')
        await host.drain()
        await host.close()
        host = await vm.connect(timeout=20)
        assert (await host.call("hello"))["pid"] == 1

        assert (await host.call("resize_fs"))["device"].startswith("/dev/vd")
        await host.call("shutdown")
        assert vm.qemu is not None
        assert await asyncio.wait_for(vm.qemu.wait(), 30) == 0, (
            "poweroff makes -no-reboot QEMU exit"
        )
