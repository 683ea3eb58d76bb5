"""One QEMU ``-M microvm`` process, owned by one :class:`QemuMachine`.

Lifecycle after QEMU's own python/qemu: the constructor starts nothing;
``launch()``, ``shutdown()`` (idempotent, escalates QMP ``quit`` -> SIGKILL),
``kill()``, ``wait()``. Every file the process creates lives in the
machine's work directory.

What an idle guest costs, and what woke it (TCG, QEMU 10.0.2, 2 cores, host
busy with other VMs; host CPU of QEMU per idle guest, guest local-timer
interrupts per second):

=====================================================  ==========  ==========
as it was: ``refined-jiffies`` clocksource, 250 Hz tick   30-48 ms/s   245-255/s
``+arat`` and ``tsc=reliable clocksource=tsc``: tickless  7-8 ms/s    7-11/s
(``nohz_mode 2``); QEMU's main loop still woke every 27.5 ms: the firmware
leaves PIT channel 0 in square-wave mode and the guest, which never uses it,
does not stop it
``-M microvm,pit=off``                                     2-3 ms/s    4-5/s
no soft-lockup watchdog, PSI, vmstat every 60 s, no
proactive compaction (kcompactd woke every 0.5 s),
neighbour probes hourly (:data:`QUIET_IDLE`)              1.5-2 ms/s  ~4/s
=====================================================  ==========  ==========

What is left wakes rarely: writeback and the ext4 journal after an exec (relatime
updates), the memcg stats flush every 2 s (``cgroup_disable=memory`` did not stop
it), netdev and neighbour timers every few seconds. Offloading RCU callbacks
(``rcu_nocbs``) only added wakeups of its threads. slirp4netns costs ~0.03 ms/s.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import shlex
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient
from qemu.qmp.error import QMPError

from sietch.errors import BootError, VMError
from sietch.vmm import jail as jails
from sietch.vmm import process
from sietch.vmm.accel import Accel, cpu_model, host_tsc_khz
from sietch.vmm.cgroups import FDS_SHELL
from sietch.vmm.version import readonly_private_ram, version_text

log = logging.getLogger(__name__)

AGENT_PORT = "org.sietch.agent"
ROOT_SERIAL = "sietch-root"
TOOLS_SERIAL = "sietch-tools"
QUIET_IDLE = (
    "nowatchdog nmi_watchdog=0 psi=0 sysctl.vm.stat_interval=60"
    " sysctl.vm.compaction_proactiveness=0"
    " sysctl.net.ipv4.neigh.default.interval_probe_time_ms=3600000"
    " sysctl.net.ipv6.neigh.default.interval_probe_time_ms=3600000"
)
"""Kernel timers an idle guest would wake up for (measured, see the module docstring)."""
TCG_CLOCK = "tsc=reliable clocksource=tsc"
"""With ``+arat``: the TSC is the clocksource, so the tick can stop when idle (under TCG
the TSC follows the host's; the watchdog against refined-jiffies marked it unstable)."""
TCG_UNMITIGATED = "mitigations=off"
"""TCG executes no guest instruction speculatively, so the guest kernel's Spectre defences
(retpolines, RSB filling, barriers) guard against nothing there and only add emulated work
to every syscall and exec: QEMU CPU per ``exec true`` 14.6 vs 17.4 ms with sietch-front,
31.5 vs 33.4 ms with the Python agent (medians of three interleaved pairs, load 4-8).
Under KVM the guest runs on the real CPU and keeps them."""
FIRMWARE = "qboot.rom"
"""Named, not left to QEMU: Debian's 7.2 linked microvm's default firmware to qboot, 10
takes SeaBIOS's ``bios-microvm.bin``, with which our kernel hangs at boot (checksumming a
garbage ACPI table) once a VM has more than three virtio-mmio devices."""


_RECORDED = (
    "kernel", "initramfs", "root_disk", "tools_disk", "memory_path", "memory_shared",
    "mac", "vcpus", "memory_mib", "cmdline", "qemu_binary",
)  # fmt: skip
"""What a running machine was started with that an adopter must know (see write_record)."""


@dataclass
class MachineConfig:
    """Everything needed to start one sandbox's QEMU."""

    name: str
    workdir: Path
    kernel: Path
    initramfs: Path
    root_disk: Path
    tools_disk: Path
    accel: Accel
    vcpus: int = 1
    memory_mib: int = 512
    cmdline: str = f"console=ttyS0 reboot=t panic=-1 quiet cryptomgr.notests {QUIET_IDLE}"
    """cryptomgr.notests: the crypto self-tests cost ~0.5 s of every TCG boot."""
    qemu_binary: str = "qemu-system-x86_64"
    run_as: tuple[int, int] | None = None
    """(uid, gid) QEMU drops to before it starts; None keeps the caller's."""
    persistent: bool = False
    """Outlive the owning process (a server restart re-adopts it) instead of dying with it."""
    mac: str = "52:54:00:12:34:56"
    memory_path: Path | None = None
    """File mapped as guest RAM; default ``workdir/memory`` (a restore maps the snapshot's)."""
    memory_shared: bool = True
    """share=on writes RAM through to the file (what x-ignore-shared snapshots rely on);
    share=off maps it privately, copy-on-write (a restore of an immutable memory file)."""
    incoming: bool = False
    """Start paused with ``-incoming defer``, waiting for a device state to restore."""
    devices_only: bool = False
    """The state to restore has device sections only (no configuration section, no RAM):
    see :func:`sietch.vmm.snapshot.save_devices`."""
    restrict_net: bool = True
    """slirp's ``restrict=on`` (no way out of the VM); off when the network namespace QEMU
    runs in is what confines it (see :mod:`sietch.network.sandbox`)."""
    wrapper: list[str] = field(default_factory=list)
    """Command that runs QEMU, e.g. ``nsenter`` into the sandbox's network namespace."""
    pass_fds: tuple[int, ...] = ()
    """Fds QEMU inherits (the namespace, the uplink's exit pipe)."""
    jail: jails.Jail | None = None
    """Start QEMU in a root, PID and IPC namespace of its own (see :mod:`sietch.vmm.jail`)."""
    extra_args: list[str] = field(default_factory=list)

    @property
    def record_path(self) -> Path:
        return self.workdir / "machine.json"

    def write_record(self) -> None:
        """Note what this machine runs, for whoever adopts it after a restart: its image
        files, RAM mapping and MAC are not in the sandbox's record and can't be guessed."""
        fields = {name: getattr(self, name) for name in _RECORDED}
        record = {k: str(v) if isinstance(v, Path) else v for k, v in fields.items()}
        tmp = self.record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2))
        os.replace(tmp, self.record_path)

    def adopted(self) -> MachineConfig:
        """This config with what :meth:`write_record` noted when the running QEMU started
        (unchanged where no record exists: a VM started by an older Sietch)."""
        try:
            record = json.loads(self.record_path.read_text())
        except (OSError, ValueError):
            return self
        changes = {k: v for k, v in record.items() if k in _RECORDED}
        for name in ("kernel", "initramfs", "root_disk", "tools_disk", "memory_path"):
            if changes.get(name) is not None:
                changes[name] = Path(changes[name])
        return dataclasses.replace(self, **changes)

    @property
    def qmp_socket(self) -> Path:
        return self.workdir / "qmp.sock"

    @property
    def agent_socket(self) -> Path:
        return self.workdir / "agent.sock"

    @property
    def console_log(self) -> Path:
        return self.workdir / "console.log"

    @property
    def qemu_log(self) -> Path:
        return self.workdir / "qemu.log"

    @property
    def memory_file(self) -> Path:
        return self.workdir / "memory"

    @property
    def ram_path(self) -> Path:
        return self.memory_path or self.memory_file

    @property
    def pidfile(self) -> Path:
        return self.workdir / "qemu.pid"

    def jail_view(self, base: Path, netns: int | None) -> jails.Jail:
        """What this machine's QEMU may see when jailed: its work dir, its images and
        their backing chain, a restore's memory file, the binaries, the devices."""
        ro = [self.kernel, self.initramfs, self.tools_disk, *jails.backing_chain(self.root_disk)]
        if self.memory_path is not None:
            ro.append(self.memory_path)
        ro += jails.qemu_files(self.qemu_binary, [FDS_SHELL, process.setpriv_path()])
        devices = [*jails.DEVICES, *(["/dev/kvm"] if self.accel == "kvm" else [])]
        return jails.Jail(base, rw=[self.workdir], ro=ro, devices=devices, netns=netns)

    def kernel_cmdline(self) -> str:
        if self.accel != "tcg":
            return self.cmdline
        tsc_khz = host_tsc_khz()
        clock = f" tsc_early_khz={tsc_khz} {TCG_CLOCK}" if tsc_khz else ""
        return f"{self.cmdline}{clock} {TCG_UNMITIGATED}"

    def machine(self) -> str:
        # No PIT under TCG: the guest never uses it, and the firmware leaves it
        # ticking (see the module docstring). Not tried under KVM, so kept there.
        pit = ",pit=off" if self.accel == "tcg" else ""
        return f"microvm,rtc=on,acpi=on{pit},memory-backend=ram"

    def memory_backend(self) -> str:
        backend = f"memory-backend-file,id=ram,size={self.memory_mib}M,mem-path={self.ram_path}"
        if self.memory_shared:
            return backend + ",share=on"
        if readonly_private_ram(self.qemu_binary):
            # The file is opened O_RDONLY and mapped MAP_PRIVATE: guest writes
            # stay in this process, and the file need not be writable by it.
            return backend + ",share=off,readonly=on,rom=off"
        return backend + ",share=off"

    def argv(self) -> list[str]:
        mem = f"{self.memory_mib}M"
        accel = ["-accel", self.accel, "-cpu", cpu_model(self.accel)]
        return [
            self.qemu_binary,
            "-name", f"sietch-{self.name}",
            "-M", self.machine(),
            "-bios", FIRMWARE,
            *accel,
            "-smp", str(self.vcpus),
            "-m", mem,
            "-object", self.memory_backend(),
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-kernel", str(self.kernel),
            "-initrd", str(self.initramfs),
            "-append", self.kernel_cmdline(),
            "-chardev", f"file,id=console,path={self.console_log}",
            "-serial", "chardev:console",
            "-drive", f"id=root,file={self.root_disk},format=qcow2,if=none,discard=unmap",
            "-device", f"virtio-blk-device,drive=root,serial={ROOT_SERIAL}",
            "-drive", f"id=tools,file={self.tools_disk},format=raw,if=none,readonly=on",
            "-device", f"virtio-blk-device,drive=tools,serial={TOOLS_SERIAL}",
            "-device", "virtio-serial-device,max_ports=2",
            "-chardev", f"socket,id=agent,path={self.agent_socket},server=on,wait=off",
            "-device", f"virtserialport,chardev=agent,name={AGENT_PORT}",
            "-object", "rng-random,id=rng,filename=/dev/urandom",
            "-device", "virtio-rng-device,rng=rng",
            "-netdev", "user,id=net0" + (",restrict=on" if self.restrict_net else ""),
            "-device", f"virtio-net-device,netdev=net0,mac={self.mac}",
            "-qmp", f"unix:{self.qmp_socket},server=on,wait=off",
            "-pidfile", str(self.pidfile),
            "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
            *(["-incoming", "defer"] if self.incoming else []),
            *(["-global", "migration.send-configuration=off"] if self.devices_only else []),
            *self.extra_args,
        ]  # fmt: skip


def guest_abi(accel: Accel, binary: str) -> str:
    """What a saved device state depends on besides the image files and the machine's size:
    it restores only into the same QEMU version, machine type, CPU model and kernel arguments
    (a template made under QEMU 7.2, or with a PIT, does not restore into this QEMU 10)."""
    probe = MachineConfig(
        name="", workdir=Path(), kernel=Path(), initramfs=Path(), root_disk=Path(),
        tools_disk=Path(), accel=accel, qemu_binary=binary,
    )  # fmt: skip
    args = f"{probe.cmdline} {TCG_UNMITIGATED}" if accel == "tcg" else probe.cmdline
    return "\n".join([version_text(binary), probe.machine(), cpu_model(accel), args])


class QemuMachine:
    """Owns one QEMU process and its QMP connection."""

    def __init__(self, config: MachineConfig) -> None:
        self.config = config
        self.log = logging.LoggerAdapter(log, {"sandbox": config.name})
        self.pid: int | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        self.qmp: QMPClient | None = None
        self.exitcode: int | None = None

    @classmethod
    async def adopt(cls, config: MachineConfig, pid: int) -> QemuMachine:
        """Take over a QEMU that an earlier Sietch process started; killed if QMP fails."""
        machine = cls(config)
        machine.pid = pid
        try:
            await machine._connect_qmp(timeout=5.0)
        except BaseException:
            await machine.kill()
            raise
        return machine

    @property
    def running(self) -> bool:
        if self.pid is None:
            return False
        if self._popen is not None:
            return self._popen.poll() is None
        return process.alive(self.pid)

    async def launch(self, timeout: float = 10.0) -> None:
        """Start QEMU and connect QMP; raise :class:`BootError` with its output on failure."""
        if self.pid is not None:
            raise VMError(f"machine {self.config.name} was already launched")
        cfg = self.config
        argv = process.confine(cfg.argv(), run_as=cfg.run_as, die_with_parent=not cfg.persistent)
        argv = [*cfg.wrapper, *argv]
        self.log.debug("launching: %s", shlex.join(argv))
        # Popen only forks and execs: quick enough to do on the event loop.
        with open(cfg.qemu_log, "wb") as qemu_log:  # noqa: ASYNC230
            options: dict[str, Any] = {
                "stdin": subprocess.DEVNULL,
                "stdout": qemu_log,
                "stderr": subprocess.STDOUT,
                "start_new_session": True,
                "close_fds": True,
                "pass_fds": cfg.pass_fds,
            }
            if cfg.jail is not None:
                self._popen = await jails.spawn(cfg.jail, argv, **options)
            else:
                self._popen = subprocess.Popen(argv, **options)  # noqa: ASYNC220
        self.pid = self._popen.pid
        try:
            if cfg.persistent:
                cfg.write_record()
            await self._connect_qmp(timeout)
        except BaseException:
            await self.kill()
            raise

    async def _connect_qmp(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        qmp = QMPClient(f"sietch-{self.config.name}")
        while True:
            if not self.running:
                raise self._launch_error("QEMU exited during start-up")
            # Connecting before QEMU has bound the socket makes qemu.qmp log a
            # traceback per attempt; the file appears right before listen().
            if self.config.qmp_socket.exists():
                try:
                    await qmp.connect(str(self.config.qmp_socket))
                    self.qmp = qmp
                    return
                except (QMPError, OSError):
                    pass
            if loop.time() > deadline:
                raise self._launch_error("QMP socket did not come up")
            await asyncio.sleep(0.005)

    def _launch_error(self, what: str) -> BootError:
        if self._popen is not None:
            self.exitcode = self._popen.poll()
        output = read_tail(self.config.qemu_log, 2000).strip()
        return BootError(
            f"{what} (exit code {self.exitcode}): {output or 'no output'}",
            command=shlex.join(self.config.argv()),
            exit_code=self.exitcode,
        )

    async def execute(self, cmd: str, args: dict[str, Any] | None = None) -> Any:
        if self.qmp is None:
            raise VMError(f"machine {self.config.name} has no QMP connection")
        try:
            return await self.qmp.execute(cmd, args)
        except QMPError as exc:
            raise VMError(f"QMP {cmd} failed: {exc}") from exc

    async def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the process to end; returns its exit code (None if not our child)."""
        if self.pid is None:
            return self.exitcode
        await asyncio.wait_for(process.wait_exit(self.pid), timeout)
        if self._popen is not None:
            self.exitcode = self._popen.wait()
        return self.exitcode

    async def ended(self, within: float) -> bool:
        """Whether the process has ended, or does within ``within`` seconds. A QMP error can
        come before :attr:`running` turns False: a dying QEMU's sockets close before the
        kernel has reaped it."""
        try:
            await self.wait(within)
        except TimeoutError:
            return False
        return True

    async def shutdown(self, timeout: float = 3.0) -> None:
        """Ask QEMU to quit; kill it if it does not. Safe to call twice."""
        try:
            if self.running and self.qmp is not None:
                with contextlib.suppress(QMPError, OSError, VMError):
                    await asyncio.wait_for(self.execute("quit"), timeout)
                try:
                    await self.wait(timeout)
                except TimeoutError:
                    self.log.warning("QEMU did not quit within %.1fs; killing it", timeout)
        finally:
            await self.kill()

    async def kill(self) -> None:
        """SIGKILL the process (if any), reap it, close QMP. Idempotent."""
        try:
            if self.running and self.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                await self.wait(5.0)
        finally:
            await self._post_shutdown()

    async def detach(self) -> None:
        """Close QMP and leave the process running, its sockets in place (a persistent VM
        that the next Sietch process adopts)."""
        qmp, self.qmp = self.qmp, None
        if qmp is not None:
            with contextlib.suppress(QMPError, OSError, EOFError):
                await qmp.disconnect()

    async def _post_shutdown(self) -> None:
        # After "quit" the peer is gone and disconnect() re-raises its EOF.
        await self.detach()
        for path in (self.config.qmp_socket, self.config.agent_socket, self.config.pidfile):
            path.unlink(missing_ok=True)

    async def __aenter__(self) -> QemuMachine:
        await self.launch()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()


def read_tail(path: Path, limit: int) -> str:
    """The last ``limit`` bytes of a log file as text (empty if there is none)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(os.fstat(f.fileno()).st_size - limit, 0))
            return f.read().decode(errors="replace")
    except OSError:
        return ""
