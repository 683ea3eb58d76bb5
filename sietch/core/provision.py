"""The one way a sandbox comes to life: cold boot, template or snapshot restore, fork, pool.

Every new sandbox goes through :meth:`Provisioner.provision`, in this order:
a record (state ``creating``), its work dir (a disk overlay over the image or
the snapshot's frozen disk), boot or restore, the fix-up that makes it its
own (clock, entropy, MAC, hostname), the disk grown to the asked size, then
the record ``running``. A failure anywhere stops what was started and
removes the work dir and the record; registration and expiry are the
manager's (:meth:`sietch.core.manager.Manager.provision`). A hibernated
sandbox wakes the same way, into its own record (:attr:`Plan.previous`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import secrets
import shutil
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sietch.config import MiB, Settings
from sietch.core import desktop
from sietch.core.live import LiveSandbox
from sietch.core.models import SandboxInfo, SandboxState, Screen
from sietch.core.store import Store
from sietch.errors import AgentUnavailable, BootError, SietchError
from sietch.images.tools import FASTPATH_OFF
from sietch.network.relay import RelayHooks
from sietch.storage import disks
from sietch.vmm import snapshot as vmsnap
from sietch.vmm.cgroups import Hierarchy, Limits
from sietch.vmm.qemu import MachineConfig, read_tail

log = logging.getLogger(__name__)

Booted = Callable[[LiveSandbox], Awaitable[None]]
"""Called once a cold-booted sandbox answers, before anything changes it (templates)."""


def new_id() -> str:
    return "sb-" + secrets.token_hex(6)


def new_mac() -> str:
    return "52:54:00:" + ":".join(f"{b:02x}" for b in os.urandom(3))


def fixup(*, mac: str | None = None, hostname: str | None = None) -> dict[str, Any]:
    """``hello`` parameters that make a guest its own: fresh entropy, and after a restore its
    new MAC and hostname (every hello also sets the guest's clock)."""
    params: dict[str, Any] = {"entropy": base64.b64encode(os.urandom(64)).decode()}
    if mac is not None:
        params["mac"] = mac
    if hostname:
        params["hostname"] = hostname
    return params


def record(accel: str, **fields: Any) -> SandboxInfo:
    """A new sandbox's record (a fresh id, state ``creating``), not yet stored."""
    return SandboxInfo(
        id=new_id(),
        state=SandboxState.CREATING,
        created_at=datetime.now(UTC),
        accel=accel,
        **fields,
    )


@dataclass
class Restore:
    """A snapshot to restore instead of booting."""

    state: Path
    """The device state (``migrate-incoming``)."""
    ram_in_stream: bool
    devices_only: bool
    """``state`` holds device sections only (the RAM is ``memory``)."""
    memory: Path | None
    """The snapshot's RAM file, mapped privately; None when the RAM is in the stream."""
    console: Path
    ports: Sequence[int] = ()
    """Guest ports the snapshot had exposed: this copy gets host ports of its own."""
    host_ports: dict[int, int] = field(default_factory=dict)
    """Host ports to take again where still free (a hibernated sandbox's), by guest port."""
    desktop: Screen | None = None
    """The snapshot's desktop screen: this copy gets a VNC password of its own."""


@dataclass
class Plan:
    """What a new sandbox is made of; built by create, restore (fork, pool) alike."""

    info: SandboxInfo
    paths: dict[str, Path]
    """kernel, initramfs, tools, and rootfs: the base under the sandbox's disk overlay."""
    base_mib: int
    """The base disk's size: a bigger ``info.disk_mib`` is grown once the guest runs."""
    base_format: str = "raw"
    layers: Path | None = None
    """A standalone snapshot's disk layers: linked into the work dir, where their relative
    backing names find each other (see :mod:`sietch.core.snapshots`)."""
    restore: Restore | None = None
    """None: a cold boot."""
    hostname: str | None = None
    booted: Booted | None = field(default=None, repr=False)
    previous: SandboxInfo | None = None
    """A hibernated sandbox's record, put back if its resume fails (else it is dropped)."""


class Provisioner:
    """Builds sandboxes for one manager; owns their work dirs and ``creating`` records."""

    def __init__(
        self,
        settings: Settings,
        sandboxes_dir: Path,
        *,
        accel: str,
        run_as: tuple[int, int] | None,
        persistent: bool,
        upstreams: list[str] | None,
        cgroups: Hierarchy | None = None,
    ) -> None:
        self.settings = settings
        self.sandboxes_dir = sandboxes_dir
        self.accel = accel
        self.run_as = run_as
        self.persistent = persistent
        self.upstreams = upstreams
        """Resolvers for sandbox DNS; None: no network namespaces (not root)."""
        self.cgroups = cgroups
        """Where sandboxes' cgroups go; None: none can be made here (see the server info)."""
        self.jail_dir: Path | None = None
        """Set (by the manager) when QEMUs run jailed (see :mod:`sietch.vmm.jail`)."""
        self.relay_hooks: Callable[[str], RelayHooks] | None = None
        """Set (by the manager): what a sandbox's port relays hold and take over, by id."""

    def limits(self, info: SandboxInfo) -> Limits:
        """What a sandbox of this size may use on the host."""
        s = self.settings
        return Limits(
            memory_bytes=(info.memory_mib + self.memory_overhead_mib()) * MiB,
            cpus=info.vcpus * s.cgroup_cpus_per_vcpu or None,
            cpu_weight=s.cgroup_cpu_weight,
            pids_max=s.cgroup_pids_max,
            io_weight=s.cgroup_io_weight,
        )

    def memory_overhead_mib(self) -> int:
        if self.settings.cgroup_memory_overhead_mib is not None:
            return self.settings.cgroup_memory_overhead_mib
        return 384 + (1024 if self.accel == "tcg" else 0)

    def live(self, info: SandboxInfo, config: MachineConfig) -> LiveSandbox:
        """The owner of a sandbox's live parts, with the cgroup it runs in (if any)."""
        cgroup = None
        if self.cgroups is not None:
            cgroup = (self.cgroups.cgroup(info.id), self.limits(info))
        hooks = self.relay_hooks(info.id) if self.relay_hooks is not None else None
        return LiveSandbox(info, config, cgroup, self.jail_dir, hooks)

    def machine_config(
        self, info: SandboxInfo, paths: dict[str, Path] | None = None
    ) -> MachineConfig:
        paths = paths or {"kernel": Path(), "initramfs": Path(), "tools": Path(), "rootfs": Path()}
        workdir = self.sandboxes_dir / info.id
        config = MachineConfig(
            name=info.id,
            workdir=workdir,
            kernel=paths["kernel"],
            initramfs=paths["initramfs"],
            root_disk=workdir / "disk.qcow2",
            tools_disk=paths["tools"],
            accel=self.accel,  # type: ignore[arg-type]
            vcpus=info.vcpus,
            memory_mib=info.memory_mib,
            qemu_binary=self.settings.qemu_binary,
            run_as=self.run_as,
            persistent=self.persistent,
            mac=new_mac(),
        )
        if not self.settings.agent_fastpath:
            config.cmdline = f"{config.cmdline} {FASTPATH_OFF}"
        return config

    async def provision(self, plan: Plan, store: Store) -> LiveSandbox:
        """Make the planned sandbox and return it running, recorded as such."""
        info = plan.info
        config = self.machine_config(info, plan.paths)
        if plan.restore is not None:
            config.incoming, config.devices_only = True, plan.restore.devices_only
            if plan.restore.memory is not None:
                config.memory_path, config.memory_shared = plan.restore.memory, False
        store.put(info)
        sandbox = self.live(info, config)
        try:
            await asyncio.to_thread(self._prepare_workdir, config, plan)
            await self._start(sandbox, plan)
            info.state, info.pid = SandboxState.RUNNING, sandbox.machine.pid
            store.put(info)
        except BaseException:
            # Even a sandbox that came up is ended if it can't be recorded as running:
            # nobody would own its QEMU otherwise. stop() is a no-op for one never launched.
            await asyncio.shield(sandbox.stop())
            await asyncio.shield(self.discard(info.id, None if plan.previous else store))
            if plan.previous is not None:
                store.put(plan.previous)
            raise
        return sandbox

    def _prepare_workdir(self, config: MachineConfig, plan: Plan) -> None:
        config.workdir.mkdir(mode=0o750)
        base = plan.paths["rootfs"]
        if plan.layers is not None:
            for layer in plan.layers.iterdir():
                (config.workdir / layer.name).symlink_to(layer)
            base = Path(base.name)  # relative, as the layers name each other
        disks.create_overlay(base, config.root_disk, plan.info.disk_mib, plan.base_format)
        if plan.restore is not None:
            with contextlib.suppress(OSError):  # the boot messages of the snapshot's VM
                shutil.copyfile(plan.restore.console, config.console_log)
        if self.run_as is not None:
            for path in (config.workdir, config.root_disk, config.console_log):
                with contextlib.suppress(FileNotFoundError):
                    os.chown(path, *self.run_as)

    async def _start(self, sandbox: LiveSandbox, plan: Plan) -> None:
        """Launch, boot or restore, fix up, grow the disk; on failure stop what started."""
        await sandbox.launch(self.upstreams)
        try:
            if plan.restore is None:
                await self._boot(sandbox)
                sandbox.settle()
                if (screen := await desktop.detect(sandbox)) is not None:
                    await desktop.personalize(sandbox, screen, booted=True)
                if plan.booted is not None:
                    await plan.booted(sandbox)
            else:
                await self._restore(sandbox, plan.restore, plan.hostname, plan.previous is None)
                if plan.restore.desktop is not None:
                    await desktop.personalize(sandbox, plan.restore.desktop)
            if plan.info.disk_mib > plan.base_mib:
                with contextlib.suppress(SietchError):
                    await sandbox.agent.call("resize_fs")
        except BaseException:
            await sandbox.stop()
            raise

    async def _boot(self, sandbox: LiveSandbox) -> None:
        """Wait for the agent of a cold-booted VM, or for the VM's death, whichever is first."""
        try:
            await self._agent_while_alive(
                sandbox, fixup(), "during boot", sandbox.machine.config.console_log
            )
        except AgentUnavailable as exc:
            raise BootError(
                f"sandbox {sandbox.id} did not boot: {exc.message}",
                console=read_tail(sandbox.machine.config.console_log, 4000),
            ) from exc

    async def _agent_while_alive(
        self, sandbox: LiveSandbox, hello: dict[str, Any], when: str, log_path: Path
    ) -> None:
        """Connect to the agent, unless the VM exits first: then a :class:`BootError` at
        once (with ``log_path``'s tail), rather than an answer only after the whole boot
        timeout."""
        machine = sandbox.machine
        connect = asyncio.ensure_future(
            sandbox.agent.connect(self.settings.boot_timeout_s, **hello)
        )
        died = asyncio.ensure_future(machine.wait())
        try:
            done, _ = await asyncio.wait({connect, died}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            died.cancel()
            if not connect.done():
                connect.cancel()
                with contextlib.suppress(asyncio.CancelledError, SietchError):
                    await connect
        if connect not in done:
            raise BootError(
                f"the VM exited {when} (code {machine.exitcode})",
                console=read_tail(log_path, 4000),
            )
        connect.result()

    async def _restore(
        self, sandbox: LiveSandbox, source: Restore, hostname: str | None, new_mac: bool
    ) -> None:
        """Load the snapshot and fix the copy up; a copy (not a sandbox waking) gets a MAC of
        its own. A waking one keeps its MAC (the device state brings it back): changed, the
        guest would answer slirp's ARP with the old one in a race with the change, after
        which slirp sends every packet for the guest to a MAC its NIC drops."""
        machine, info = sandbox.machine, sandbox.info
        try:
            t1 = time.monotonic()
            await vmsnap.load_state(machine, source.state, ram_in_stream=source.ram_in_stream)
            t2 = time.monotonic()
            await vmsnap.resume(machine)
            t3 = time.monotonic()
            hello = fixup(mac=machine.config.mac if new_mac else None, hostname=hostname)
            await self._agent_while_alive(
                sandbox, hello, "during its restore", machine.config.qemu_log
            )
            t4 = time.monotonic()
            # A fresh QEMU has none of the original's forwards: the snapshot's
            # exposed guest ports get new host ports of this copy's own.
            for port in source.ports:
                info.ports.append(await sandbox.forward(port, source.host_ports.get(port, 0)))
        except SietchError as exc:
            if isinstance(exc, BootError):
                raise
            raise BootError(
                f"restore of {info.snapshot_id} failed: {exc.message}",
                console=read_tail(machine.config.qemu_log, 2000),
            ) from exc
        log.debug(
            "restore %s: load %.0f ms, cont %.0f ms, agent %.0f ms",
            info.id,
            *(1000 * d for d in (t2 - t1, t3 - t2, t4 - t3)),
        )

    async def discard(self, sandbox_id: str, store: Store | None) -> None:
        """Remove a sandbox's work dir, cgroup and record (its VM must be stopped already)."""
        await asyncio.to_thread(shutil.rmtree, self.sandboxes_dir / sandbox_id, True)
        if self.cgroups is not None:  # one its VM left when it died while we were down
            await asyncio.to_thread(self.cgroups.cgroup(sandbox_id).remove)
        if store is not None:
            store.delete(sandbox_id)
