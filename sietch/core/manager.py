"""Sandbox lifecycle: create, find, list, delete; state kept in SQLite.

The manager owns every QEMU it starts. In the default (library) mode those
die with the owning process (parent-death signal) and any that survive a
crash are reaped by the next :meth:`Manager.start`. In *persistent* mode (the
server) they outlive a restart and are adopted again.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import secrets
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sietch.agent.connection import AgentConnection
from sietch.config import MiB, Settings, get_settings
from sietch.core.live import LiveSandbox
from sietch.core.models import (
    PortMapping,
    SandboxInfo,
    SandboxSpec,
    SandboxState,
    SnapshotInfo,
)
from sietch.core.pool import WarmPool, is_pooled
from sietch.core.snapshots import Snapshots, entropy, new_mac, template_key
from sietch.core.store import Store, labels_match
from sietch.errors import (
    AgentUnavailable,
    BootError,
    InvalidArgument,
    LimitExceeded,
    NetworkError,
    NotFound,
    SandboxNotFound,
    SandboxNotRunning,
    SietchError,
)
from sietch.images.store import ImageStore
from sietch.network import ports as netports
from sietch.network.dns import system_resolvers
from sietch.network.policy import NetworkPolicy
from sietch.network.relay import HOST
from sietch.network.sandbox import SandboxNetwork
from sietch.storage import disks
from sietch.vmm import accel, process
from sietch.vmm.qemu import MachineConfig, QemuMachine, read_tail

log = logging.getLogger(__name__)


class Manager:
    """Creates and tracks sandboxes. Use as ``async with Manager() as m: ...``."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        images: ImageStore | None = None,
        persistent: bool = False,
    ) -> None:
        self.settings = settings or get_settings()
        self.images = images or ImageStore(self.settings.cache_dir)
        self.persistent = persistent
        self.accel = accel.resolve(self.settings.accel)
        self.sandboxes_dir = self.settings.state_dir / "sandboxes"
        self._store: Store | None = None
        self._live: dict[str, LiveSandbox] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._run_as = process.lookup_user(self.settings.qemu_user)
        self._isolate = os.geteuid() == 0
        """Network namespaces need root; without, sandboxes get no way out at all."""
        self._upstreams = self.settings.dns_servers or system_resolvers()
        self.snapshots = Snapshots(self)
        self.pool = WarmPool(self, self.settings.pool_size)

    # -- start and stop ---------------------------------------------------------

    async def start(self) -> None:
        """Open the database, then reap or adopt what an earlier run left behind."""
        await asyncio.to_thread(self.snapshots.prepare_storage)
        self.sandboxes_dir.mkdir(parents=True, exist_ok=True)
        if self._run_as is not None:
            # QEMU runs as another user: it must be able to reach its work dir.
            for path in (self.settings.state_dir, self.sandboxes_dir):
                path.chmod(path.stat().st_mode | 0o111)
        self._store = Store(self.settings.state_dir / "sietch.db")
        await asyncio.to_thread(self.snapshots.sweep)
        await self._recover()

    async def close(self) -> None:
        """Stop every sandbox we own (persistent ones keep running)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        # Let them unwind (a cancelled pool restore removes its half-made VM)
        # before the sandboxes and the database go.
        await asyncio.gather(*tasks, return_exceptions=True)
        # VMs that run on (persistent, not pooled) still use the storage.
        keep_storage = self.persistent and any(not is_pooled(sb.info) for sb in self._live.values())
        for sb in list(self._live.values()):
            await sb.agent.close()
            if not self.persistent or is_pooled(sb.info):  # a pooled VM is never adopted
                await self._destroy(sb.id)
            else:
                if sb.network is not None:
                    await sb.network.detach()
                if sb.machine.qmp is not None:
                    with contextlib.suppress(Exception):
                        await sb.machine.qmp.disconnect()
        self._live.clear()
        if not keep_storage:
            with contextlib.suppress(SietchError):
                await asyncio.to_thread(self.snapshots.release_storage)
        if self._store is not None:
            self._store.close()
            self._store = None

    async def __aenter__(self) -> Manager:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def store(self) -> Store:
        if self._store is None:
            raise SietchError("the manager is not started; call start() or use 'async with'")
        return self._store

    async def _recover(self) -> None:
        marker = str(self.sandboxes_dir) + os.sep
        running = {p: args for p, args in process.find_by_marker(marker)}
        by_id: dict[str, int] = {}
        for pid, args in running.items():
            sandbox_id = _sandbox_id_from_args(args, marker)
            if sandbox_id:
                by_id[sandbox_id] = pid
        for info in self.store.all():
            vm_pid = by_id.pop(info.id, None)
            if is_pooled(info):  # never handed out: not worth adopting
                if vm_pid is not None:
                    process.kill_and_forget(vm_pid)
                await self._discard(info.id, None)
                continue
            if info.state in (SandboxState.RUNNING, SandboxState.PAUSED) and vm_pid is not None:
                if self.persistent:
                    with contextlib.suppress(SietchError):
                        await self._adopt(info, vm_pid)
                        continue
                process.kill_and_forget(vm_pid)
            if info.state is not SandboxState.DEAD or info.ports:
                info.state, info.pid, info.ports = SandboxState.DEAD, None, []
                info.error = info.error or "its VM stopped while Sietch was not running"
                self.store.put(info)
        for sandbox_id, pid in by_id.items():
            log.warning("reaping orphaned VM %s (pid %d)", sandbox_id, pid)
            process.kill_and_forget(pid)
        for pid in running:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait_exit(pid), 5.0)

    async def _adopt(self, info: SandboxInfo, pid: int) -> None:
        config = self._machine_config(info)
        machine = await QemuMachine.adopt(config, pid)
        agent = AgentConnection(config.agent_socket, name=info.id)
        network = None
        try:
            await agent.connect(timeout=10.0)
            if self._isolate:
                network = await SandboxNetwork.adopt(pid, info.network, self._upstreams)
                # The relays died with the old Sietch: the same host ports if still free.
                inner = await netports.forwards(machine)
                for mapping in list(info.ports):
                    if mapping.guest_port not in inner:
                        info.ports.remove(mapping)
                        continue
                    port = inner[mapping.guest_port]
                    try:
                        mapping.host_port = await network.open_relay(port, mapping.host_port)
                    except OSError:
                        mapping.host_port = await network.open_relay(port)
                self.store.put(info)
        except BaseException:
            await agent.close()
            if network is not None:
                await network.close()
            raise
        self._register(LiveSandbox(info, config.workdir, machine, agent, network))
        log.info("adopted running sandbox %s (pid %d)", info.id, pid)

    # -- create -----------------------------------------------------------------

    def _resolve(self, spec: SandboxSpec) -> tuple[str, int, int, int]:
        s = self.settings
        image = spec.image or s.default_image
        vcpus = spec.vcpus or s.default_vcpus
        memory = spec.memory_mib or s.default_memory_mib
        disk = spec.disk_mib or s.default_disk_mib
        if not 1 <= vcpus <= s.max_vcpus:
            raise InvalidArgument(f"vcpus must be between 1 and {s.max_vcpus}, not {vcpus}")
        if not s.min_memory_mib <= memory <= s.max_memory_mib:
            raise InvalidArgument(
                f"memory_mib must be between {s.min_memory_mib} and {s.max_memory_mib}, "
                f"not {memory}"
            )
        if not 1 <= disk <= s.max_disk_mib:
            raise InvalidArgument(f"disk_mib must be between 1 and {s.max_disk_mib}, not {disk}")
        for key in spec.env:
            if not key or "=" in key or "\0" in key:
                raise InvalidArgument(f"invalid environment variable name {key!r}")
        return image, vcpus, memory, disk

    async def create(self, spec: SandboxSpec | None = None, **fields: Any) -> SandboxInfo:
        """Boot a new sandbox and wait until its agent answers."""
        if spec is None:
            try:
                spec = SandboxSpec(**fields)
            except ValidationError as exc:
                raise InvalidArgument(_describe(exc)) from None
        image, vcpus, memory, disk = self._resolve(spec)
        network = spec.network or self.default_network()
        self.check_capacity()
        paths = await asyncio.to_thread(self._image_paths, image)
        base_mib = -(-disks.image_size(paths["rootfs"]) // MiB)
        if disk < base_mib:
            raise InvalidArgument(f"disk_mib must be at least {base_mib} for image {image!r}")
        if spec.template not in ("auto", None):
            raise InvalidArgument(f"template must be 'auto' or null, not {spec.template!r}")
        key = None
        if spec.template == "auto" and self.settings.templates:
            key = template_key(paths, vcpus, memory, self.accel) + f"-{disk}"
            if (template := self.snapshots.find_template(key)) is not None:
                taken = await self.pool.take(key, spec)
                self.pool.refill(key, template.id)
                if taken is not None:
                    if taken.network != network:
                        return await self.set_network(taken.id, network)
                    return taken
                return await self.snapshots.restore(
                    template.id,
                    metadata=spec.metadata,
                    env=spec.env,
                    timeout_s=spec.timeout_s,
                    network=network,
                )
        now = datetime.now(UTC)
        info = SandboxInfo(
            id="sb-" + secrets.token_hex(6),
            state=SandboxState.CREATING,
            image=image,
            vcpus=vcpus,
            memory_mib=memory,
            disk_mib=disk,
            env=spec.env,
            metadata=spec.metadata,
            created_at=now,
            expires_at=now + timedelta(seconds=spec.timeout_s) if spec.timeout_s else None,
            accel=self.accel,
            network=network,
        )
        config = self._machine_config(info, paths)
        self.store.put(info)
        try:
            await asyncio.to_thread(self._prepare_workdir, config, paths["rootfs"], disk)
            sandbox = await self._boot(info, config)
        except BaseException:
            await asyncio.shield(self._discard(info.id, config))
            raise
        # Booted from scratch once: save it, pristine, so later creates restore it;
        # once the agent is ready, which includes the image's services (a desktop).
        if key is not None:
            with contextlib.suppress(SietchError):
                await sandbox.agent.call("ready")
        if key is not None and (template := await self.snapshots.make_template(sandbox, key)):
            self.pool.refill(key, template.id)
        if disk > base_mib:
            with contextlib.suppress(SietchError):
                await sandbox.agent.call("resize_fs")
        info.state, info.pid = SandboxState.RUNNING, sandbox.machine.pid
        self.store.put(info)
        self._register(sandbox)
        if spec.timeout_s:
            self._spawn(self._expire(info.id, spec.timeout_s))
        return info.model_copy()

    def check_capacity(self) -> None:
        if len(self._live) >= self.settings.max_sandboxes:
            raise LimitExceeded(
                f"{len(self._live)} sandboxes are running, the limit is "
                f"{self.settings.max_sandboxes} (SIETCH_MAX_SANDBOXES)"
            )

    def _image_paths(self, image: str) -> dict[str, Path]:
        return {
            "kernel": self.images.kernel(),
            "initramfs": self.images.initramfs(),
            "tools": self.images.tools(),
            "rootfs": self.images.rootfs(image),
        }

    def _machine_config(
        self, info: SandboxInfo, paths: dict[str, Path] | None = None
    ) -> MachineConfig:
        paths = paths or {"kernel": Path(), "initramfs": Path(), "tools": Path(), "rootfs": Path()}
        workdir = self.sandboxes_dir / info.id
        return MachineConfig(
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
            run_as=self._run_as,
            persistent=self.persistent,
            mac=new_mac(),
        )

    def _prepare_workdir(self, config: MachineConfig, rootfs: Path, disk_mib: int) -> None:
        config.workdir.mkdir(mode=0o750)
        disks.create_overlay(rootfs, config.root_disk, disk_mib)
        if self._run_as is not None:
            uid, gid = self._run_as
            for path in (config.workdir, config.root_disk):
                os.chown(path, uid, gid)

    def default_network(self) -> NetworkPolicy:
        return NetworkPolicy(internet=self.settings.internet and self._isolate)

    @staticmethod
    def _refuse_egress(policy: NetworkPolicy) -> None:
        """Without a namespace (not root) a sandbox has no way out: a policy can't give one."""
        if policy.internet or policy.allow:
            raise NetworkError(
                "sandbox egress needs Sietch to run as root (it uses network namespaces)"
            )

    async def _launch(
        self, info: SandboxInfo, config: MachineConfig
    ) -> tuple[QemuMachine, SandboxNetwork | None]:
        """Start QEMU inside the sandbox's own network, which is wired while QEMU starts."""
        if not self._isolate:
            self._refuse_egress(info.network)
            machine = QemuMachine(config)
            await machine.launch()
            return machine, None
        network = await SandboxNetwork.prepare(info.network, self._upstreams)
        config.restrict_net = False
        config.wrapper = network.launch_prefix()
        config.pass_fds = network.pass_fds()
        machine = QemuMachine(config)
        try:
            results = await asyncio.gather(
                machine.launch(), network.connect(config.workdir / "uplink.log"),
                return_exceptions=True,
            )  # fmt: skip
            for result in results:
                if isinstance(result, BaseException):
                    raise result
        except BaseException:
            await machine.kill()
            await network.close()
            raise
        network.launched()
        return machine, network

    async def _boot(self, info: SandboxInfo, config: MachineConfig) -> LiveSandbox:
        agent = AgentConnection(config.agent_socket, name=info.id)
        machine, network = await self._launch(info, config)
        sandbox = LiveSandbox(info, config.workdir, machine, agent, network)
        try:
            connect = asyncio.ensure_future(
                agent.connect(self.settings.boot_timeout_s, entropy=entropy())
            )
            died = asyncio.ensure_future(machine.wait())
            done, _ = await asyncio.wait({connect, died}, return_when=asyncio.FIRST_COMPLETED)
            if connect not in done:
                connect.cancel()
                with contextlib.suppress(asyncio.CancelledError, SietchError):
                    await connect
                raise BootError(
                    f"the VM exited during boot (code {machine.exitcode})",
                    console=read_tail(config.console_log, 4000),
                )
            died.cancel()
            try:
                connect.result()
            except AgentUnavailable as exc:
                raise BootError(
                    f"sandbox {info.id} did not boot: {exc.message}",
                    console=read_tail(config.console_log, 4000),
                ) from exc
        except BaseException:
            await sandbox.stop()
            raise
        return sandbox

    def _register(self, sandbox: LiveSandbox) -> None:
        self._live[sandbox.id] = sandbox
        self._spawn(self._watch(sandbox))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self, sandbox: LiveSandbox) -> None:
        """Mark a sandbox dead when its QEMU exits on its own."""
        await sandbox.machine.wait()
        if self._live.pop(sandbox.id, None) is None:
            return
        await sandbox.stop()
        info = self.store.get(sandbox.id)
        if info is not None:
            info.state, info.pid, info.ports = SandboxState.DEAD, None, []
            info.error = f"the VM exited unexpectedly (code {sandbox.machine.exitcode})"
            self.store.put(info)
            log.warning("sandbox %s died: %s", sandbox.id, info.error)

    async def _expire(self, sandbox_id: str, after: float) -> None:
        await asyncio.sleep(after)
        with contextlib.suppress(SandboxNotFound):
            await self.delete(sandbox_id)

    # -- query and delete -------------------------------------------------------

    async def get(self, sandbox_id: str) -> SandboxInfo:
        info = self.store.get(sandbox_id)
        if info is None:
            raise SandboxNotFound(f"no sandbox with id {sandbox_id!r}")
        return info

    async def list(self, labels: dict[str, str] | None = None) -> list[SandboxInfo]:
        return [i for i in self.store.all() if labels_match(i, labels) and not is_pooled(i)]

    def sandbox(self, sandbox_id: str) -> LiveSandbox:
        """The live sandbox, for running commands and moving files."""
        sandbox = self._live.get(sandbox_id)
        if sandbox is not None:
            if sandbox.info.state is SandboxState.PAUSED:
                # Its agent cannot answer: refuse now rather than hang.
                raise SandboxNotRunning(
                    f"sandbox {sandbox_id} is paused", state=SandboxState.PAUSED
                )
            return sandbox
        info = self.store.get(sandbox_id)
        if info is None:
            raise SandboxNotFound(f"no sandbox with id {sandbox_id!r}")
        raise SandboxNotRunning(f"sandbox {sandbox_id} is {info.state.value}", state=info.state)

    def _live_sandbox(self, sandbox_id: str) -> LiveSandbox:
        """The live sandbox whether running or paused (snapshot, pause, resume)."""
        sandbox = self._live.get(sandbox_id)
        if sandbox is None:
            self.sandbox(sandbox_id)  # raises the right error
            raise SandboxNotFound(f"no sandbox with id {sandbox_id!r}")
        return sandbox

    # -- ports (see sietch.network.ports) ----------------------------------------

    async def expose(self, sandbox_id: str, guest_port: int) -> PortMapping:
        """Make a guest TCP port reachable on a free 127.0.0.1 port (again: the same one)."""
        netports.check_port(guest_port)
        sb = self._live_sandbox(sandbox_id)
        async with self.snapshots._lock(sandbox_id):
            for mapping in sb.info.ports:
                if mapping.guest_port == guest_port:
                    return mapping.model_copy()
            mapping = await self._forward(sb.machine, sb.network, guest_port)
            sb.info.ports.append(mapping)
            self.store.put(sb.info)
        sb.log.info("guest port %d exposed on %s:%d", guest_port, mapping.host, mapping.host_port)
        return mapping.model_copy()

    @staticmethod
    async def _forward(
        machine: QemuMachine, network: SandboxNetwork | None, guest_port: int
    ) -> PortMapping:
        """QEMU forwards the guest port to its namespace's loopback; a relay brings it out."""
        port = await netports.forward(machine, guest_port)
        if network is not None:
            try:
                port = await network.open_relay(port)
            except BaseException:
                await netports.unforward(machine, port)
                raise
        return PortMapping(guest_port=guest_port, host=HOST, host_port=port)

    async def unexpose(self, sandbox_id: str, guest_port: int) -> None:
        """Close the host port of an exposed guest port (NotFound if it was not exposed)."""
        netports.check_port(guest_port)
        sb = self._live_sandbox(sandbox_id)
        async with self.snapshots._lock(sandbox_id):
            mapping = self._mapping(sb.info, guest_port)
            inner = (await netports.forwards(sb.machine)).get(guest_port)
            if inner is not None:
                await netports.unforward(sb.machine, inner)
            if sb.network is not None:
                await sb.network.close_relay(mapping.host_port)
            sb.info.ports.remove(mapping)
            self.store.put(sb.info)

    # -- network policy (see sietch.network.policy) --------------------------------

    async def set_network(self, sandbox_id: str, policy: NetworkPolicy) -> SandboxInfo:
        """Replace a running sandbox's egress policy; it applies to new connections at once."""
        sb = self._live_sandbox(sandbox_id)
        async with self.snapshots._lock(sandbox_id):
            if sb.network is not None:
                await sb.network.apply(policy)
            else:
                self._refuse_egress(policy)
            sb.info.network = policy
            self.store.put(sb.info)
        sb.log.info("network policy: internet=%s allow=%s", policy.internet, policy.allow)
        return sb.info.model_copy()

    async def ports(self, sandbox_id: str) -> builtins.list[PortMapping]:
        return [p.model_copy() for p in (await self.get(sandbox_id)).ports]

    def port(self, sandbox_id: str, guest_port: int) -> PortMapping:
        """The host address of an exposed port of a running sandbox (for the proxy)."""
        netports.check_port(guest_port)
        return self._mapping(self.sandbox(sandbox_id).info, guest_port).model_copy()

    @staticmethod
    def _mapping(info: SandboxInfo, guest_port: int) -> PortMapping:
        for mapping in info.ports:
            if mapping.guest_port == guest_port:
                return mapping
        raise NotFound(f"port {guest_port} of sandbox {info.id} is not exposed", port=guest_port)

    # -- snapshots (see sietch.core.snapshots) ---------------------------------

    async def pause(self, sandbox_id: str) -> SandboxInfo:
        """Stop the sandbox's vCPUs; its memory and processes stay as they are."""
        return await self.snapshots.pause(sandbox_id)

    async def resume(self, sandbox_id: str) -> SandboxInfo:
        return await self.snapshots.resume(sandbox_id)

    async def snapshot(
        self, sandbox_id: str, name: str | None = None, labels: dict[str, str] | None = None
    ) -> SnapshotInfo:
        """Save memory, processes and disk; the sandbox keeps running."""
        return await self.snapshots.snapshot(sandbox_id, name, labels)

    async def restore(self, snapshot_id: str, **options: Any) -> SandboxInfo:
        """A new running sandbox from a snapshot (as often as wanted, concurrently)."""
        return await self.snapshots.restore(snapshot_id, **options)

    async def fork(
        self, sandbox_id: str, count: int, metadata: dict[str, str] | None = None
    ) -> builtins.list[SandboxInfo]:
        """``count`` running copies of a sandbox, from one snapshot of it."""
        return await self.snapshots.fork(sandbox_id, count, metadata)

    async def list_snapshots(self, templates: bool = False) -> builtins.list[SnapshotInfo]:
        return self.snapshots.list(templates)

    async def get_snapshot(self, snapshot_id: str) -> SnapshotInfo:
        return self.snapshots.get(snapshot_id)

    async def delete_snapshot(self, snapshot_id: str) -> None:
        """Refused (Conflict) while a sandbox or child snapshot still builds on it."""
        await self.snapshots.delete(snapshot_id)

    def console_log(self, sandbox_id: str, limit: int = 256 * 1024) -> str:
        """The tail of a sandbox's serial console; kept after its VM died, to show why."""
        info = self.store.get(sandbox_id)
        if info is None:
            raise SandboxNotFound(f"no sandbox with id {sandbox_id!r}")
        return read_tail(self._machine_config(info).console_log, limit)

    async def delete(self, sandbox_id: str) -> None:
        """Stop the sandbox's VM and remove everything it had."""
        if self.store.get(sandbox_id) is None:
            raise SandboxNotFound(f"no sandbox with id {sandbox_id!r}")
        await self._destroy(sandbox_id)

    async def _destroy(self, sandbox_id: str) -> None:
        sandbox = self._live.pop(sandbox_id, None)
        if sandbox is not None:
            await sandbox.stop()
        await self._discard(sandbox_id, None)

    async def _discard(self, sandbox_id: str, config: MachineConfig | None) -> None:
        workdir = config.workdir if config else self.sandboxes_dir / sandbox_id
        await asyncio.to_thread(shutil.rmtree, workdir, True)
        if self._store is not None:
            self._store.delete(sandbox_id)


def _sandbox_id_from_args(args: list[str], marker: str) -> str | None:
    for arg in args:
        at = arg.find(marker)
        if at >= 0:
            rest = arg[at + len(marker) :]
            return rest.split(os.sep, 1)[0] or None
    return None


def _describe(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'request'}: {e['msg']}" for e in exc.errors()
    )
