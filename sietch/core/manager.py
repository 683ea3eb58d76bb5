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
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sietch.config import MiB, Settings, get_settings
from sietch.core import desktop, kernel_gateway, trust
from sietch.core import images as user_images
from sietch.core.desktop import Desktops
from sietch.core.hostmem import MemoryGuard
from sietch.core.lifecycle import Lifecycle, arm
from sietch.core.live import LiveSandbox, refuse_egress
from sietch.core.models import (
    DEFAULT_TENANT,
    DesktopInfo,
    ImageRecord,
    PortMapping,
    SandboxInfo,
    SandboxSpec,
    SandboxState,
    SnapshotInfo,
    TimeoutAction,
    Timeouts,
)
from sietch.core.pool import WarmPool, is_pooled
from sietch.core.provision import Booted, Plan, Provisioner, record
from sietch.core.quotas import Quota, QuotaGate, Usage, check_snapshot_disk
from sietch.core.snapshots import Snapshots, template_key
from sietch.core.store import Store, labels_match
from sietch.core.usage import SandboxMetrics, UsageSampler
from sietch.errors import (
    Conflict,
    InvalidArgument,
    LimitExceeded,
    NotFound,
    PermissionDenied,
    SandboxNotFound,
    SandboxNotRunning,
    SietchError,
    SnapshotNotFound,
    describe_validation,
)
from sietch.images import rootfs
from sietch.images.store import ImageStore
from sietch.network import ports as netports
from sietch.network.dns import system_resolvers
from sietch.network.parking import Parking
from sietch.network.policy import NetworkPolicy
from sietch.network.relay import RelayHooks
from sietch.storage import disks
from sietch.storage.layout import StateLayout
from sietch.vmm import accel, cgroups, jail, process
from sietch.vmm.qemu import read_tail

log = logging.getLogger(__name__)
SANDBOX_CA = "/etc/sietch/ca-bundle.pem"
"""Where ``SIETCH_SANDBOX_CA_BUNDLE`` goes on a new sandbox's disk."""


class Manager:
    """Creates and tracks sandboxes. Use as ``async with Manager() as m: ...``.

    Callers drive a sandbox's agent through :meth:`use`, which holds the
    sandbox's lock shared; snapshot, pause, resume and port or network
    changes take it exclusively (waiting at most ``SIETCH_LOCK_WAIT_S`` for
    what is in flight, then :class:`Conflict`); delete does not wait: it stops
    the VM, which ends every call in flight, then removes the files.

    Every sandbox and snapshot belongs to a tenant. The query methods take
    ``tenant``: a tenant's name sees only that tenant's (another's is "not
    found", as an unknown id), None sees all. Creates, restores and forks are
    admitted by :attr:`quotas` against the owning tenant's ``quota_of``.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        images: ImageStore | None = None,
        persistent: bool = False,
        quota_of: Callable[[str], Quota] | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.images = images or ImageStore(self.settings.cache_dir)
        self.persistent = persistent
        self.accel = accel.resolve(self.settings.accel)
        self.layout = StateLayout(self.settings.state_dir, self.settings.cow_image_gib)
        self.sandboxes_dir = self.layout.sandboxes
        self.run_as = process.lookup_user(self.settings.qemu_user)
        self._store: Store | None = None
        self._live: dict[str, LiveSandbox] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._isolate = os.geteuid() == 0
        """Network namespaces need root; without, sandboxes get no way out at all."""
        upstreams = self.settings.dns_servers or system_resolvers()
        self.cgroups_status = "not started"
        """One sentence on the per-sandbox cgroups: where they are, or why there are none."""
        self.jail_status = "not started"
        """Whether QEMUs run jailed, or why not."""
        self._provisioner = Provisioner(
            self.settings,
            self.sandboxes_dir,
            accel=self.accel,
            run_as=self.run_as,
            persistent=persistent,
            upstreams=upstreams if self._isolate else None,
        )
        self.snapshots = Snapshots(self, self.layout)
        self.sampler = UsageSampler(
            self._live.values, self.settings.metrics_interval_s, self.settings.metrics_history
        )
        self.memory_guard = MemoryGuard(
            self.settings.memory_reserve_mib * MiB,
            lambda: [s.memory_pss_bytes for s in self.sampler.latest().values()],
        )
        parallel = min(self.settings.restore_concurrency, os.cpu_count() or 1)
        self.pool = WarmPool(self, self.settings.pool_size, parallel)
        self.lifecycle = Lifecycle(self)
        self.activity = self.lifecycle.activity
        """Front ends that keep a sandbox busy (relays, viewers) hold its leases here."""
        self.desktops = Desktops()
        """The host's VNC connections to desktop sandboxes (screenshots)."""
        self.parking = Parking(self.awake)
        """Hibernated sandboxes' exposed host ports: a connection wakes them."""
        self._provisioner.relay_hooks = self._relay_hooks
        self.quotas = QuotaGate(quota_of or (lambda _tenant: Quota()), self.usage)

    # -- start and stop ---------------------------------------------------------

    async def start(self) -> None:
        """Open the database, then reap or adopt what an earlier run left behind."""
        await asyncio.to_thread(self.layout.prepare, self.run_as)
        found, self.cgroups_status = cgroups.detect(self.settings.cgroups)
        self._provisioner.cgroups = found
        (log.info if found is not None else log.warning)("%s", self.cgroups_status)
        self.jail_status = "off (SIETCH_JAIL=false)"
        if self.settings.jail:
            if (why_not := jail.supported()) is not None:
                self.jail_status = why_not
                log.warning("QEMU runs unjailed: %s", why_not)
            else:
                self._provisioner.jail_dir = self.settings.state_dir / "jail"
                self._provisioner.jail_dir.mkdir(mode=0o755, exist_ok=True)
                self.jail_status = "on"
        self._store = Store(self.settings.state_dir / "sietch.db")
        await asyncio.to_thread(self.snapshots.sweep)
        await self._recover()
        self.spawn(self.lifecycle.run())
        self.spawn(self.sampler.run())

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
            if self.persistent and not is_pooled(sb.info):  # a pooled VM is never adopted
                await sb.detach()
            else:
                await self.destroy(sb.id)
        self._live.clear()
        await self.desktops.close()
        await self.parking.close()
        if not keep_storage:
            with contextlib.suppress(SietchError):
                await asyncio.to_thread(self.layout.release)
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
        """Adopt (persistent) or kill the VMs an earlier run left; wait only for the killed."""
        marker = str(self.sandboxes_dir) + os.sep
        found: dict[str, int] = {}
        for vm_pid, args in process.find_by_marker(marker):
            if sandbox_id := _sandbox_id_from_args(args, marker):
                found[sandbox_id] = vm_pid
        killed: builtins.list[int] = []
        ended: builtins.list[str] = []
        """Sandboxes whose VM is not adopted: their cgroups go once the VMs are gone."""
        for info in self.store.all():
            pid = found.pop(info.id, None)
            if self._sleeping(info):  # nothing runs: the record and its snapshot wait
                killed += _kill(pid)
                await self._park(info)
                continue
            if is_pooled(info):  # never handed out: not worth adopting
                killed += _kill(pid)
                await self._provisioner.discard(info.id, self.store)
                continue
            live = info.state in (SandboxState.RUNNING, SandboxState.PAUSED)
            if pid is not None and live and self.persistent and await self._adopt(info, pid):
                continue
            killed += _kill(pid)
            ended.append(info.id)
            if info.state is not SandboxState.DEAD or info.ports:
                self._mark_dead(info, "its VM stopped while Sietch was not running")
        for sandbox_id, pid in found.items():
            log.warning("reaping orphaned VM %s (pid %d)", sandbox_id, pid)
            killed += _kill(pid)
            ended.append(sandbox_id)
        await asyncio.gather(*(_gone(pid) for pid in killed))
        if (hierarchy := self._provisioner.cgroups) is not None:
            for sandbox_id in ended:
                await asyncio.to_thread(hierarchy.cgroup(sandbox_id).remove)

    async def _adopt(self, info: SandboxInfo, pid: int) -> bool:
        """Take over a persistent VM; one that can't be driven is ended and its files go."""
        provisioner = self._provisioner
        sandbox = provisioner.live(info, provisioner.machine_config(info).adopted())
        try:
            await sandbox.adopt(pid, self._provisioner.upstreams)
        except SietchError as exc:
            log.warning("could not adopt sandbox %s (pid %d): %s", info.id, pid, exc)
            await self._provisioner.discard(info.id, None)
            info.error = f"its VM could not be taken over after a restart: {exc.message}"
            return False
        self.store.put(info)
        self._register(sandbox)
        log.info("adopted running sandbox %s (pid %d)", info.id, pid)
        return True

    def _sleeping(self, info: SandboxInfo) -> bool:
        """Hibernated; or caught mid-wake by a crash, so hibernated again."""
        if info.state is SandboxState.HIBERNATED:
            return True
        snap = self.store.get_snapshot(info.snapshot_id) if info.snapshot_id else None
        if info.state is SandboxState.CREATING and snap is not None and snap.hibernation:
            info.state, info.pid = SandboxState.HIBERNATED, None
            self.store.put(info)
            return True
        return False

    def _mark_dead(self, info: SandboxInfo, reason: str) -> None:
        info.state, info.pid, info.ports = SandboxState.DEAD, None, []
        info.error = info.error or reason
        self.store.put(info)

    # -- create -----------------------------------------------------------------

    def _resolve(self, spec: SandboxSpec) -> tuple[str, int, int, int]:
        s = self.settings
        image = spec.image or s.default_image
        vcpus = spec.vcpus or s.default_vcpus
        memory = spec.memory_mib or max(s.default_memory_mib, rootfs.MEMORY_MIB.get(image, 0))
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
        if spec.template not in ("auto", None):
            raise InvalidArgument(f"template must be 'auto' or null, not {spec.template!r}")
        return image, vcpus, memory, disk

    async def create(self, spec: SandboxSpec | None = None, **fields: Any) -> SandboxInfo:
        """A new sandbox: from the warm pool, by restoring its image's template, or (the first
        time) booted, and then saved as that template. A desktop's ``resolution`` and ``dpi``
        resize its running X server: every size shares the one template."""
        if spec is None:
            try:
                spec = SandboxSpec(**fields)
            except ValidationError as exc:
                raise InvalidArgument(describe_validation(exc.errors())) from None
        _, vcpus, memory, _ = self._resolve(spec)
        with self.quotas.admit(spec.tenant, Usage(1, vcpus, memory)):
            info = await self._create(spec)
        if self.settings.sandbox_ca_bundle or self.settings.sandbox_proxy_env:
            info = await self._trusting(info)
        await self._kernel_env(info)
        if spec.resolution is None and spec.dpi is None:
            return info
        width, height = spec.resolution or (None, None)
        async with self._deleted_on_failure(info.id):
            await self.resize_desktop(info.id, width, height, spec.dpi)
        return await self.get(info.id)

    @asynccontextmanager
    async def _deleted_on_failure(self, sandbox_id: str) -> AsyncIterator[None]:
        """A new sandbox that could not be made what its caller asked for is deleted."""
        try:
            yield
        except BaseException:
            with contextlib.suppress(SietchError):
                await self.delete(sandbox_id)
            raise

    async def _trusting(self, info: SandboxInfo) -> SandboxInfo:
        """Hand a new sandbox the configured CA bundle and proxy variables (its snapshots,
        restores and forks keep them); deleted again if that fails."""
        s = self.settings
        async with self._deleted_on_failure(info.id), self.use(info.id) as sb:
            env = await trust.hand_in(sb, s.sandbox_ca_bundle, SANDBOX_CA, s.sandbox_proxy_env)
            sb.info.env = {**env, **sb.info.env}  # what the caller gave wins
            self.store.put(sb.info)
            return sb.info.model_copy()

    async def _kernel_env(self, info: SandboxInfo) -> None:
        """A new code interpreter's kernels get its environment, as its commands do (the
        kernel ran before: in the template); deleted again if that fails."""
        if info.env:
            async with self._deleted_on_failure(info.id), self.use(info.id) as sb:
                await kernel_gateway.hand_env(sb, info.env)

    async def _create(self, spec: SandboxSpec) -> SandboxInfo:
        image, vcpus, memory, disk = self._resolve(spec)
        network = spec.network or self.default_network()
        self.check_capacity()
        custom = user_images.find(self.store, image, spec.tenant)  # another's: unknown
        if custom is not None:  # a user image: its config under what the caller gave
            spec = spec.model_copy(update={"env": {**custom.config.env, **spec.env}})
        paths = await asyncio.to_thread(self._image_paths, image, custom)
        base_mib = custom.disk_mib if custom else -(-disks.image_size(paths["rootfs"]) // MiB)
        if not spec.disk_mib:  # unless told otherwise, the image's own size at least
            disk = max(disk, base_mib)
        if disk < base_mib:
            raise InvalidArgument(f"disk_mib must be at least {base_mib} for image {image!r}")
        key = None
        if spec.template == "auto" and self.settings.templates:
            key = (
                template_key(paths, vcpus, memory, self.accel, self.settings.qemu_binary)
                + f"-{disk}"
                + (f"-{custom.key[:12]}" if custom else "")  # its start command, ports, ...
            )
        async with self.snapshots.template_or_claim(key, shared=custom is None) as template:
            if template is not None:
                assert key is not None
                return await self._from_template(template, key, spec, network)
            info = record(
                self.accel,
                image=image,
                vcpus=vcpus,
                memory_mib=memory,
                disk_mib=disk,
                env=spec.env,
                labels=spec.labels,
                network=network,
                **_timeouts(spec).model_dump(),
                tenant=spec.tenant,
                user=custom.config.user if custom else None,
                cwd=custom.config.workdir if custom else None,
            )
            plan = Plan(
                info,
                paths,
                base_mib,
                base_format=custom.format if custom else "raw",
                booted=self._booted(key, custom),
            )
            return await self._provision(plan)

    async def boot_disk(
        self,
        rootfs: Path,
        *,
        base_format: str,
        base_mib: int,
        disk_mib: int,
        network: NetworkPolicy,
        labels: dict[str, str],
    ) -> SandboxInfo:
        """Cold-boot a sandbox over any disk (``base_mib`` big), with no template: the image
        builder's steps run in one (``sietch.builder``)."""
        info = record(
            self.accel,
            image="(build)",
            vcpus=self.settings.default_vcpus,
            memory_mib=self.settings.default_memory_mib,
            disk_mib=max(disk_mib, base_mib),
            labels=labels,
            network=network,
        )
        paths = {**await asyncio.to_thread(self._image_paths, None, None), "rootfs": rootfs}
        return await self._provision(Plan(info, paths, base_mib, base_format=base_format))

    async def _from_template(
        self, template: SnapshotInfo, key: str, spec: SandboxSpec, network: NetworkPolicy
    ) -> SandboxInfo:
        """A sandbox from the pool of ``key``, else a restore of its template."""
        taken = await self.pool.take(key, spec, template.id)
        if taken is not None:
            if taken.network != network:
                return await self.set_network(taken.id, network)
            return taken
        plan = self._plan(
            template,
            spec.tenant,
            labels=spec.labels,
            env=spec.env,
            network=network,
            **_timeouts(spec).model_dump(),
        )
        return await self._provision(plan)

    def _booted(self, key: str | None, custom: ImageRecord | None) -> Booted | None:
        """Once booted from scratch: a user image's start command (ready, ports exposed),
        then (``key``) saved as the template later creates restore."""
        if key is None and custom is None:
            return None

        async def booted(sandbox: LiveSandbox) -> None:
            # Once the agent is ready, which includes the image's services (a desktop).
            ready: dict[str, Any] = {}
            with contextlib.suppress(SietchError):
                ready = await sandbox.agent.call("ready")
            if custom is not None:
                await user_images.start(sandbox, custom.config, self.settings.boot_timeout_s)
            if key is None:
                return
            # Services that failed to come up (a loaded host's deadline) stay this state
            # dir's trouble: every server of the machine would restore them failed.
            shared = custom is None and ready.get("services") != "failed"
            template = await self.snapshots.make_template(sandbox, key, shared=shared)
            if template is not None:
                if template.desktop is not None:  # the template keeps the password it had
                    await desktop.personalize(sandbox, template.desktop)
                self.pool.refill(key, template.id)

        return booted

    async def _provision(self, plan: Plan) -> SandboxInfo:
        self.check_capacity(f"resuming {plan.previous.id}" if plan.previous else "a new sandbox")
        sandbox = await self._provisioner.provision(plan, self.store)
        self._register(sandbox, fresh=True)
        return sandbox.info.model_copy()

    def memory_overhead_mib(self) -> int:
        """Host memory each sandbox's cgroup allows beyond its guest RAM."""
        return self._provisioner.memory_overhead_mib()

    def check_capacity(self, what: str = "a new sandbox") -> None:
        """Refuse ``what`` over the sandbox count limit (429) or the memory reserve (503)."""
        if len(self._live) >= self.settings.max_sandboxes:
            raise LimitExceeded(
                f"{len(self._live)} sandboxes are running, the limit is "
                f"{self.settings.max_sandboxes} (SIETCH_MAX_SANDBOXES)"
            )
        self.memory_guard.check(what)

    def _image_paths(self, image: str | None, custom: ImageRecord | None) -> dict[str, Path]:
        paths = {
            "kernel": self.images.kernel(),
            "initramfs": self.images.initramfs(),
            "tools": self.images.tools(),
        }
        if image is not None:
            paths["rootfs"] = Path(custom.rootfs) if custom else self.images.rootfs(image)
        return paths

    def default_network(self) -> NetworkPolicy:
        return NetworkPolicy(internet=self.settings.internet and self._isolate)

    def _register(self, sandbox: LiveSandbox, *, fresh: bool = False) -> None:
        """Track a live sandbox; a ``fresh`` one (made or woken now) starts its timeout."""
        self._live[sandbox.id] = sandbox
        self.spawn(self._watch(sandbox))
        if fresh and sandbox.info.timeout_s:
            arm(sandbox.info)
            self.store.put(sandbox.info)
        self.lifecycle.changed()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in the background until it ends or the manager closes."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def set_timeouts(self, info: SandboxInfo, timeouts: Timeouts) -> None:
        """Give a sandbox handed out now these timeouts (``timeout_s`` counts from now)."""
        for name in Timeouts.model_fields:
            setattr(info, name, getattr(timeouts, name))
        arm(info)
        self.lifecycle.changed()

    async def _watch(self, sandbox: LiveSandbox) -> None:
        """Mark a sandbox dead when its QEMU exits on its own."""
        await sandbox.machine.wait()
        if self._live.pop(sandbox.id, None) is None:
            return
        await sandbox.stop()
        info = self.store.get(sandbox.id)
        if info is not None:
            self._mark_dead(info, f"the VM exited unexpectedly (code {sandbox.machine.exitcode})")
            log.warning("sandbox %s died: %s", sandbox.id, info.error)

    # -- query and delete -------------------------------------------------------

    async def get(self, sandbox_id: str, tenant: str | None = None) -> SandboxInfo:
        info = self.store.get(sandbox_id)
        if info is None or not _sees(tenant, info):
            raise SandboxNotFound(f"no sandbox with id {sandbox_id!r}")
        return info

    async def list(
        self, labels: dict[str, str] | None = None, tenant: str | None = None
    ) -> builtins.list[SandboxInfo]:
        return [
            i
            for i in self.store.all()
            if labels_match(i, labels) and not is_pooled(i) and _sees(tenant, i)
        ]

    def check_tenant(self, sandbox_id: str, tenant: str | None) -> None:
        """SandboxNotFound, as for an unknown id, unless ``tenant`` may see the sandbox
        (None: an admin, who may see any). Cheap for a live sandbox: no database read."""
        if tenant is None:
            return
        live = self._live.get(sandbox_id)
        info = live.info if live is not None else self.store.get(sandbox_id)
        if info is None or not _sees(tenant, info):
            raise SandboxNotFound(f"no sandbox with id {sandbox_id!r}")

    def usage(self, tenant: str) -> Usage:
        """What ``tenant``'s live sandboxes (running or paused) hold."""
        held = [
            sb.info
            for sb in self._live.values()
            if sb.info.tenant == tenant and not is_pooled(sb.info)
        ]
        return Usage(len(held), sum(i.vcpus for i in held), sum(i.memory_mib for i in held))

    def snapshot_bytes(self, tenant: str) -> int:
        """Host disk that ``tenant``'s snapshots take (templates are nobody's)."""
        return sum(
            s.size_bytes
            for s in self.store.all_snapshots()
            if s.tenant == tenant and not s.template
        )

    def sandbox(self, sandbox_id: str) -> LiveSandbox:
        """The running sandbox without its lock: prefer :meth:`use` (tests call this)."""
        sandbox = self._live.get(sandbox_id)
        if sandbox is not None:
            if sandbox.info.state is SandboxState.PAUSED:
                # Its agent cannot answer: refuse now rather than hang.
                raise not_running(sandbox.info)
            return sandbox
        info = self.store.get(sandbox_id)
        if info is None:
            raise SandboxNotFound(f"no sandbox with id {sandbox_id!r}")
        raise not_running(info)

    def check_reachable(self, sandbox_id: str) -> None:
        """404 unknown, 409 unless it runs or a request would wake it (``auto_resume``): for
        what hands out a link to it (the IDE) without driving it yet."""
        info = self.store.get(sandbox_id)
        if info is None:
            raise SandboxNotFound(f"no sandbox with id {sandbox_id!r}")
        asleep = info.state in (SandboxState.PAUSED, SandboxState.HIBERNATED)
        if not (info.state is SandboxState.RUNNING or (asleep and info.auto_resume)):
            raise not_running(info)

    def _hibernated(self, sandbox_id: str) -> SandboxInfo | None:
        """The record of a hibernated sandbox (not waking): what changes only its record."""
        if sandbox_id in self._live or self.lifecycle.transition(sandbox_id).locked():
            return None
        info = self.store.get(sandbox_id)
        return info if info is not None and info.state is SandboxState.HIBERNATED else None

    async def _woken(self, sandbox_id: str) -> LiveSandbox:
        """The live sandbox (running or paused) for what needs its VM but not its agent
        (snapshot, fork, expose): a hibernated one is woken first (``auto_resume``; else
        :class:`SandboxNotRunning`), a paused one stays paused."""
        if sandbox_id not in self._live:
            info = self.store.get(sandbox_id)
            if info is not None and info.auto_resume:
                async with self.lifecycle.transition(sandbox_id):
                    info = await self.get(sandbox_id)
                    if info.state is SandboxState.HIBERNATED:
                        await self._wake(info)
        return self._live_sandbox(sandbox_id)

    @asynccontextmanager
    async def use(self, sandbox_id: str) -> AsyncIterator[LiveSandbox]:
        """The running sandbox, its lock held shared while the caller drives its agent.

        For one command, one file transfer, one process call: not for a whole
        streaming session, which would hold off snapshots for as long as it lasts.
        A paused or hibernated sandbox is woken first (``auto_resume``); the call
        counts as activity for the idle timeout while it lasts.
        """
        sandbox = await self.awake(sandbox_id)
        with self.activity.busy(sandbox_id):
            async with sandbox.lock.shared():
                if self.sandbox(sandbox_id) is not sandbox:  # ended or paused while we waited
                    raise SandboxNotFound(f"no sandbox with id {sandbox_id!r}")
                yield sandbox

    async def awake(self, sandbox_id: str) -> LiveSandbox:
        """The running sandbox, resumed first if it is paused, hibernated or waking and its
        ``auto_resume`` is on (else :class:`SandboxNotRunning`, as :meth:`sandbox`)."""
        sandbox = self._live.get(sandbox_id)
        if sandbox is None or sandbox.info.state is not SandboxState.RUNNING:
            info = self.store.get(sandbox_id)
            if info is not None and info.auto_resume:
                asleep = info.state in (SandboxState.PAUSED, SandboxState.HIBERNATED)
                if asleep or self.lifecycle.transition(sandbox_id).locked():
                    await self.resume(sandbox_id)
        return self.sandbox(sandbox_id)

    def live_sandboxes(self) -> builtins.list[LiveSandbox]:
        """The live sandboxes handed out (not the warm pool's)."""
        return [sb for sb in self._live.values() if not is_pooled(sb.info)]

    def live(self, sandbox_id: str) -> LiveSandbox | None:
        """The live sandbox (running or paused), without taking its lock."""
        return self._live.get(sandbox_id)

    def _live_sandbox(self, sandbox_id: str) -> LiveSandbox:
        """The live sandbox whether running or paused (snapshot, pause, resume)."""
        sandbox = self._live.get(sandbox_id)
        if sandbox is None:
            self.sandbox(sandbox_id)  # raises the right error
            raise SandboxNotFound(f"no sandbox with id {sandbox_id!r}")
        return sandbox

    def console_log(self, sandbox_id: str, limit: int = 256 * 1024) -> str:
        """The tail of a sandbox's serial console; kept after its VM died, to show why."""
        info = self.store.get(sandbox_id)
        if info is None:
            raise SandboxNotFound(f"no sandbox with id {sandbox_id!r}")
        return read_tail(self._provisioner.machine_config(info).console_log, limit)

    async def delete(self, sandbox_id: str) -> None:
        """Stop the sandbox's VM and remove everything it had."""
        if self.store.get(sandbox_id) is None:
            raise SandboxNotFound(f"no sandbox with id {sandbox_id!r}")
        await self.destroy(sandbox_id)

    async def destroy(self, sandbox_id: str) -> None:
        """Stop the sandbox (if live) and remove its files and record.

        Stopping first ends every agent call in flight (a long command included),
        so the files go once those have let go of the lock, without a long wait.
        """
        info = self._store.get(sandbox_id) if self._store is not None else None
        sandbox = self._live.pop(sandbox_id, None)
        if sandbox is not None:
            await sandbox.stop()
            await sandbox.lock.idle(self.settings.lock_wait_s)
        await self._provisioner.discard(sandbox_id, self._store)
        self.parking.release(sandbox_id)
        self.lifecycle.forget(sandbox_id)
        if info is not None and info.snapshot_id is not None:
            await self._drop_hibernation(info.snapshot_id)
        self.lifecycle.changed()  # an expired snapshot it used may go now

    async def _drop_hibernation(self, snapshot_id: str) -> None:
        """Delete a hibernation snapshot once no sandbox runs from it or sleeps in it."""
        snap = self.store.get_snapshot(snapshot_id)
        if snap is not None and snap.hibernation and not self.store.snapshot_users(snap.id):
            await asyncio.to_thread(self.snapshots.remove, snap.id)

    # -- desktop (see sietch.core.desktop) ----------------------------------------

    def desktop(self, sandbox_id: str) -> DesktopInfo:
        """A desktop sandbox's screen and VNC password (:class:`NoDesktop` if it has none)."""
        info = self.store.get(sandbox_id)
        if info is None:
            raise SandboxNotFound(f"no sandbox with id {sandbox_id!r}")
        return desktop.require(info).model_copy()

    async def resize_desktop(
        self, sandbox_id: str, width: int | None, height: int | None, dpi: int | None = None
    ) -> DesktopInfo:
        """Resize a running desktop's screen (RandR: no restart, VNC viewers follow)."""
        async with self.use(sandbox_id) as sb:
            await desktop.resize(sb, width, height, dpi)
            self.store.put(sb.info)
        return self.desktop(sandbox_id)

    # -- ports (see sietch.network.ports) ----------------------------------------

    async def expose(self, sandbox_id: str, guest_port: int) -> PortMapping:
        """Make a guest TCP port reachable on a free 127.0.0.1 port (again: the same one)."""
        netports.check_port(guest_port)
        sb = await self._woken(sandbox_id)
        async with sb.exclusive(self.settings.lock_wait_s):
            for mapping in sb.info.ports:
                if mapping.guest_port == guest_port:
                    return mapping.model_copy()
            mapping = await sb.forward(guest_port)
            sb.info.ports.append(mapping)
            self.store.put(sb.info)
        sb.log.info("guest port %d exposed on %s:%d", guest_port, mapping.host, mapping.host_port)
        return mapping.model_copy()

    async def unexpose(self, sandbox_id: str, guest_port: int) -> None:
        """Close the host port of an exposed guest port (NotFound if it was not exposed); a
        hibernated sandbox's record lets it go, and it wakes without it."""
        netports.check_port(guest_port)
        if (asleep := self._hibernated(sandbox_id)) is not None:
            mapping = self._mapping(asleep, guest_port)
            asleep.ports.remove(mapping)
            self.store.put(asleep)
            self.parking.release(sandbox_id, [mapping.host_port])
            return
        sb = self._live_sandbox(sandbox_id)
        async with sb.exclusive(self.settings.lock_wait_s):
            mapping = self._mapping(sb.info, guest_port)
            await sb.unforward(mapping)
            sb.info.ports.remove(mapping)
            self.store.put(sb.info)

    async def ports(self, sandbox_id: str) -> builtins.list[PortMapping]:
        return [p.model_copy() for p in (await self.get(sandbox_id)).ports]

    def port(self, sandbox_id: str, guest_port: int) -> PortMapping:
        """The host address of an exposed port of a running sandbox (for the proxy)."""
        netports.check_port(guest_port)
        return self._mapping(self.sandbox(sandbox_id).info, guest_port).model_copy()

    async def service_socket(self, sandbox_id: str, guest_port: int) -> Path:
        """A unix socket that reaches a guest port of a running sandbox without exposing it
        (for the server's desktop viewer and IDE; see ``LiveSandbox.service_socket``); a
        paused or hibernated one is woken first (``auto_resume``)."""
        netports.check_port(guest_port)
        return await (await self.awake(sandbox_id)).service_socket(guest_port)

    @staticmethod
    def _mapping(info: SandboxInfo, guest_port: int) -> PortMapping:
        for mapping in info.ports:
            if mapping.guest_port == guest_port:
                return mapping
        raise NotFound(f"port {guest_port} of sandbox {info.id} is not exposed", port=guest_port)

    # -- network policy (see sietch.network.policy) --------------------------------

    async def set_network(self, sandbox_id: str, policy: NetworkPolicy) -> SandboxInfo:
        """Replace a sandbox's egress policy; it applies to new connections at once (a
        hibernated sandbox's record takes it, for when it wakes)."""
        if (asleep := self._hibernated(sandbox_id)) is not None:
            if not self._isolate:
                refuse_egress(policy)
            asleep.network = policy
            self.store.put(asleep)
            return asleep.model_copy()
        sb = self._live_sandbox(sandbox_id)
        async with sb.exclusive(self.settings.lock_wait_s):
            if sb.network is not None:
                await sb.network.apply(policy)
            else:
                refuse_egress(policy)
            sb.info.network = policy
            self.store.put(sb.info)
        sb.log.info("network policy: internet=%s allow=%s", policy.internet, policy.allow)
        return sb.info.model_copy()

    # -- pause, snapshots (see sietch.core.snapshots) ------------------------------

    async def pause(self, sandbox_id: str) -> SandboxInfo:
        """Stop the sandbox's vCPUs; its memory and processes stay as they are."""
        return await self._set_paused(sandbox_id, True)

    async def resume(self, sandbox_id: str) -> SandboxInfo:
        """Let a paused sandbox run on, or restore a hibernated one into its own id; either
        way its ``timeout_s`` starts again."""
        async with self.lifecycle.transition(sandbox_id):
            info = await self.get(sandbox_id)
            if info.state is SandboxState.HIBERNATED:
                return await self._wake(info)
            return await self._set_paused(sandbox_id, False)

    async def _set_paused(self, sandbox_id: str, paused: bool) -> SandboxInfo:
        sb = self._live_sandbox(sandbox_id)
        async with sb.exclusive(self.settings.lock_wait_s):
            if paused and sb.info.state is SandboxState.RUNNING:
                await sb.pause()
                self.store.put(sb.info)
            elif not paused and sb.info.state is SandboxState.PAUSED:
                self.memory_guard.check(f"resuming {sandbox_id}")
                await sb.resume()
                arm(sb.info)
                self.store.put(sb.info)
                self.lifecycle.changed()
        return sb.info.model_copy()

    async def metrics(self, sandbox_id: str) -> SandboxMetrics:
        """What a live sandbox uses now (host and guest) and its recent host-side history."""
        return await self.sampler.report(self._live_sandbox(sandbox_id))

    # -- hibernation and timeouts (see sietch.core.lifecycle) ----------------------

    async def hibernate(self, sandbox_id: str) -> SandboxInfo:
        """Save the sandbox (memory, processes, disk) and end its QEMU: it holds no RAM or
        CPU until :meth:`resume` (or a request, with ``auto_resume``) restores it."""
        async with self.lifecycle.transition(sandbox_id):
            if (await self.get(sandbox_id)).state is SandboxState.HIBERNATED:
                return await self.get(sandbox_id)
            sb = self._live_sandbox(sandbox_id)
            was_running = sb.info.state is SandboxState.RUNNING
            async with sb.exclusive(self.settings.lock_wait_s):
                if was_running:  # stopped from here on: nothing it does after the save is lost
                    await sb.pause()

            ended: builtins.list[bool] = []

            async def end_vm() -> None:  # saved: its QEMU goes before the files' fsyncs
                ended.append(self._live.pop(sandbox_id, None) is not None)  # not a death
                await sb.machine.kill()

            try:
                snap = await self.snapshots.take(
                    sb, f"hibernation of {sb.id}", hibernation=True, frozen=end_vm
                )
            except BaseException as exc:
                if any(ended):  # saved, not made durable, and its VM gone
                    await sb.stop()
                    self._mark_dead(sb.info, f"its hibernation could not be saved: {exc}")
                elif was_running and sb.machine.running:
                    await self._set_paused(sandbox_id, False)
                raise
            before = sb.info.snapshot_id
            self._live.pop(sandbox_id, None)
            await sb.stop()
            await sb.lock.idle(self.settings.lock_wait_s)
            info = sb.info
            info.state, info.pid, info.snapshot_id = SandboxState.HIBERNATED, None, snap.id
            info.expires_at = None
            self.store.put(info)
            await self._provisioner.discard(sandbox_id, None)  # the snapshot has its disk
            await self._park(info)
            if before is not None:
                await self._drop_hibernation(before)
            sb.log.info("hibernated into %s", snap.id)
            return info.model_copy()

    async def _wake(self, info: SandboxInfo) -> SandboxInfo:
        assert info.snapshot_id is not None
        snap = await self.get_snapshot(info.snapshot_id)
        # Waking is one more sandbox for the tenant's quota (429) and for the host's memory
        # reserve (_provision's check_capacity, 503); refused, it stays hibernated as it was.
        try:
            with self.quotas.admit(info.tenant, Usage(1, info.vcpus, info.memory_mib)):
                woken = await self._provision(self.snapshots.wake_plan(snap, info))
        except BaseException:
            await self._park(info)  # what its failed relays had taken over and closed
            raise
        self.parking.release(info.id)  # ports it came back without
        self.activity.touch(info.id)  # waking counts: its idle time starts now
        log.info("sandbox %s woke from %s", info.id, snap.id)
        return woken

    async def _park(self, info: SandboxInfo) -> None:
        """Keep a hibernated sandbox's exposed host ports, so a connection wakes it; only
        relays can hand them back (without a namespace QEMU's own forward holds them)."""
        if self._isolate and info.ports:
            await self.parking.park(info.id, [p.host_port for p in info.ports])

    def _relay_hooks(self, sandbox_id: str) -> RelayHooks:
        """A sandbox's relays keep it busy while a connection is open, and take over the
        host ports its hibernation kept."""
        return RelayHooks(
            hold=lambda: self.activity.busy(sandbox_id),
            listener=lambda port: self.parking.take(sandbox_id, port),
        )

    async def set_timeout(self, sandbox_id: str, **changes: Any) -> SandboxInfo:
        """Change a sandbox's :class:`Timeouts` fields; a ``timeout_s`` given counts from now
        (None: no timeout)."""
        unknown = set(changes) - set(Timeouts.model_fields)
        if unknown:
            raise InvalidArgument(f"not a timeout setting: {', '.join(sorted(unknown))}")
        live = self._live.get(sandbox_id)
        info = live.info if live is not None else await self.get(sandbox_id)
        try:
            merged = Timeouts(**{**_timeouts(info).model_dump(), **changes})
        except ValidationError as exc:
            raise InvalidArgument(describe_validation(exc.errors())) from None
        for name in changes:
            setattr(info, name, getattr(merged, name))
        if "timeout_s" in changes and info.state is not SandboxState.HIBERNATED:
            arm(info)
        self.store.put(info)
        self.lifecycle.changed()
        return info.model_copy()

    async def timed_out(self, sandbox_id: str, action: TimeoutAction, why: str) -> None:
        """What the lifecycle does when a timeout is due: kill, pause or hibernate."""
        log.info("sandbox %s: %s reached: %s", sandbox_id, why, action)
        if action == "kill":
            with contextlib.suppress(SandboxNotFound):
                await self.delete(sandbox_id)
            return
        if action == "pause":
            await self.pause(sandbox_id)
        else:
            await self.hibernate(sandbox_id)
        info = self.store.get(sandbox_id)
        live = self._live.get(sandbox_id)
        if live is not None:
            live.info.expires_at = None
            info = live.info
        if info is not None:
            info.expires_at = None
            self.store.put(info)

    async def snapshot(
        self,
        sandbox_id: str,
        name: str | None = None,
        labels: dict[str, str] | None = None,
        ttl_s: float | None = None,
    ) -> SnapshotInfo:
        """Save memory, processes and disk; the sandbox keeps running. ``ttl_s``: delete the
        snapshot that long from now, once no sandbox or child snapshot uses it."""
        if ttl_s is not None and ttl_s <= 0:
            raise InvalidArgument("ttl_s must be positive")
        sb = await self._woken(sandbox_id)
        tenant = sb.info.tenant
        check_snapshot_disk(tenant, self.quotas.quota_of(tenant), self.snapshot_bytes(tenant))
        with self.activity.busy(sandbox_id):
            snap = await self.snapshots.take(sb, name, labels, ttl_s=ttl_s)
        if ttl_s is not None:
            self.lifecycle.changed()
        return snap

    async def restore(
        self, snapshot_id: str, *, tenant: str | None = None, **options: Any
    ) -> SandboxInfo:
        """A new running sandbox from a snapshot (as often as wanted, concurrently).

        ``options``: labels, hostname, disk_mib, env, network, and the :class:`Timeouts`
        fields (timeout_s, on_timeout, idle_timeout_s, on_idle, auto_resume). It belongs to
        the snapshot's tenant; restored from a template (shared), to ``tenant``.
        """
        snap = await self.get_snapshot(snapshot_id)
        if snap.hibernation:
            raise InvalidArgument(
                f"snapshot {snapshot_id} is a hibernated sandbox's: resume {snap.sandbox_id}"
            )
        plan = self._plan(snap, tenant, **options)
        if is_pooled(plan.info):  # the pool's own: nobody's until handed out
            return await self._provision(plan)
        info = plan.info
        with self.quotas.admit(info.tenant, Usage(1, info.vcpus, info.memory_mib)):
            restored = await self._provision(plan)
        if options.get("env"):
            await self._kernel_env(restored)
        return restored

    def _plan(self, snap: SnapshotInfo, tenant: str | None, **options: Any) -> Plan:
        owner = (tenant or DEFAULT_TENANT) if snap.template else snap.tenant
        return self.snapshots.plan(snap, tenant=owner, **options)

    async def fork(
        self, sandbox_id: str, count: int, labels: dict[str, str] | None = None
    ) -> builtins.list[SandboxInfo]:
        """``count`` running copies of a sandbox, all restored from one new snapshot of it;
        returns once all answer. ``restore_concurrency`` restores run at once."""
        limit = self.settings.max_sandboxes
        if not 1 <= count <= limit:
            raise InvalidArgument(f"count must be between 1 and {limit}")
        if len(self._live) + count > limit:
            raise LimitExceeded(
                f"forking {count} would exceed {limit} sandboxes (SIETCH_MAX_SANDBOXES)"
            )
        source = (await self._woken(sandbox_id)).info
        each = Usage(1, source.vcpus, source.memory_mib)
        with self.quotas.admit(source.tenant, each.times(count)):
            return await self._fork(sandbox_id, count, labels)

    async def _fork(
        self, sandbox_id: str, count: int, labels: dict[str, str] | None
    ) -> builtins.list[SandboxInfo]:
        snap = await self.snapshot(sandbox_id, name=f"fork of {sandbox_id}")
        slots = asyncio.Semaphore(self.settings.restore_concurrency)

        async def copy() -> SandboxInfo:
            async with slots:
                return await self._provision(self._plan(snap, None, labels=labels))

        results = await asyncio.gather(*(copy() for _ in range(count)), return_exceptions=True)
        made = [r for r in results if isinstance(r, SandboxInfo)]
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            for info in made:
                with contextlib.suppress(SietchError):
                    await self.delete(info.id)
            raise errors[0]
        return made

    async def list_snapshots(
        self, templates: bool = False, tenant: str | None = None
    ) -> builtins.list[SnapshotInfo]:
        """The user's snapshots (and templates) that ``tenant`` sees (None: all);
        hibernation snapshots are internal."""
        return [
            s
            for s in self.store.all_snapshots()
            if (templates or not s.template)
            and not s.hibernation
            and _sees_snapshot(tenant, s, self.store)
        ]

    async def get_snapshot(self, snapshot_id: str, tenant: str | None = None) -> SnapshotInfo:
        """The snapshot; a template (shared) is seen by every tenant (a user image's: by its
        tenant's)."""
        snap = self.store.get_snapshot(snapshot_id)
        if snap is None or not _sees_snapshot(tenant, snap, self.store):
            raise SnapshotNotFound(f"no snapshot with id {snapshot_id!r}")
        return snap

    async def delete_snapshot(
        self, snapshot_id: str, subtree: bool = False, tenant: str | None = None
    ) -> builtins.list[str]:
        """Delete a snapshot, or with ``subtree`` it and every snapshot descended from it;
        the ids deleted. Refused (Conflict, nothing deleted) while a sandbox or a snapshot
        outside them still builds on one of them."""
        snap = await self.get_snapshot(snapshot_id, tenant)
        if snap.template and tenant is not None:
            raise PermissionDenied(
                "templates are shared by every tenant: only an admin deletes one"
            )
        doomed = self._subtree(snapshot_id) if subtree else [snapshot_id]
        users = [u for s in doomed for u in self.store.snapshot_users(s) if u not in doomed]
        if users:
            raise Conflict(
                f"snapshot {snapshot_id} is still used by {', '.join(users)}; delete those first",
                users=users,
            )
        for snap_id in reversed(doomed):  # children first
            await asyncio.to_thread(self.snapshots.remove, snap_id)
        return doomed

    def _subtree(self, snapshot_id: str) -> builtins.list[str]:
        """``snapshot_id`` and its descendants, parents before children."""
        children: dict[str | None, builtins.list[str]] = {}
        for snap in self.store.all_snapshots():
            children.setdefault(snap.parent_id, []).append(snap.id)
        found = [snapshot_id]
        for snap_id in found:
            found += children.get(snap_id, [])
        return found

    async def expire_snapshot(self, snapshot_id: str) -> None:
        """A snapshot's ``ttl_s`` has passed: delete it unless a sandbox or child uses it."""
        if not self.store.snapshot_users(snapshot_id):
            log.info("snapshot %s expired (ttl_s)", snapshot_id)
            await asyncio.to_thread(self.snapshots.remove, snapshot_id)


def not_running(info: SandboxInfo) -> SandboxNotRunning:
    """409 ``sandbox_not_running`` (``details.state``) saying what to do about it."""
    what = {
        SandboxState.PAUSED: "is paused: resume it first",
        SandboxState.HIBERNATED: "is hibernated (saved to disk, no VM runs): resume it first",
        SandboxState.DEAD: f"is dead ({info.error or 'its VM stopped'}): delete it",
    }.get(info.state, f"is {info.state.value}")
    if info.state in (SandboxState.PAUSED, SandboxState.HIBERNATED) and not info.auto_resume:
        what += " (its auto_resume is off)"
    return SandboxNotRunning(f"sandbox {info.id} {what}", state=info.state)


def _timeouts(source: Timeouts) -> Timeouts:
    """Only the :class:`Timeouts` fields of a spec or record."""
    return Timeouts.model_validate(source.model_dump(include=set(Timeouts.model_fields)))


def _sees(tenant: str | None, info: SandboxInfo) -> bool:
    """Whether ``tenant`` (None: an admin) may see the sandbox; a pooled one is nobody's."""
    return tenant is None or (info.tenant == tenant and not is_pooled(info))


def _sees_snapshot(tenant: str | None, snap: SnapshotInfo, store: Store) -> bool:
    """A template is everyone's, but one of a user image only its tenant's (restoring it
    would run an image that tenant may not name)."""
    if tenant is None or snap.tenant == tenant:
        return True
    if not snap.template:
        return False
    image = store.get_image(snap.image)  # None: a built-in image's
    return image is None or image.tenant == tenant


def _kill(pid: int | None) -> builtins.list[int]:
    """SIGKILL a VM an earlier run left (not our child); the pids to wait for."""
    if pid is None:
        return []
    process.kill_and_forget(pid)
    return [pid]


async def _gone(pid: int) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(process.wait_exit(pid), 5.0)


def _sandbox_id_from_args(args: builtins.list[str], marker: str) -> str | None:
    for arg in args:
        at = arg.find(marker)
        if at >= 0:
            rest = arg[at + len(marker) :]
            return rest.split(os.sep, 1)[0] or None
    return None
