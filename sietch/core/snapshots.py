"""Pause, resume, snapshot, restore and fork sandboxes; templates make ``create`` a restore.

How a restored sandbox gets its RAM (measured on this machine: 2 cores, TCG,
512 MiB guest whose memory file holds 112 MiB after booting to a ready agent):

====================================================  ==========
save device state, ``x-ignore-shared`` (share=on VM)     13-24 ms, 76 KB
copy of the 112 MiB RAM file on ext4 (page cache warm)   75-104 ms
reflink of it on the XFS image (clean / 100 MiB dirty)   1.6 / 52 ms
restore: QEMU start / load device state                  57-80 ms / 9-13 ms
save a share=off VM (RAM goes into the stream)           475 ms, 90 MB
PSS of one restored idle VM (share=off / own copy)       89-91 MiB, ~45 anon
====================================================  ==========

So a restore maps the snapshot's memory file privately (``share=off``,
MAP_PRIVATE): no copy, and every restore of one snapshot shares its page
cache, which is what keeps PSS per sandbox down when many run. Copying the
RAM file per sandbox would add ~90 ms to every create and N x 112 MiB of page
cache. The price is paid only when a *restored* sandbox is snapshotted: its
RAM is not "shared" so QEMU puts it into the stream (``ram_in_stream``, ~0.5 s).
Restoring such a snapshot loads that RAM into a fresh share=on file of the
new sandbox's own, so the next generation snapshots the fast way again:
snapshots of snapshots of snapshots all work, at most every other level pays.

End to end (``bench/snapshots.py``, first exec answered): with plain ext4
copies (20 runs) create from template 764 ms median, restore 757 ms,
snapshot 111 ms, fork of 10 in 5.0 s, PSS 53 MiB per idle sandbox with 20
running, cold boot 5.8 s; on the XFS reflink image (10 runs) snapshot 24 ms,
create 610 ms, restore 609 ms, fork of 10 in 3.1 s, PSS 53 MiB, cold 4.2 s.
QEMU is ready in ~60 ms; the rest is the guest agent's first replies while
TCG translates its code afresh (the translation cache is not saved).

Snapshots are directories ``<state>/snapshots/<id>/`` (``state``, ``memory``
unless RAM is in the stream, ``disk.qcow2``, ``console.log``), written under
``.tmp-<id>``, fsynced, renamed into place, and only then recorded in SQLite.
:func:`sweep` removes temp directories and unrecorded directories on start,
and drops records whose directory is gone: a crash never lists a snapshot
that cannot be restored. A restored sandbox's disk is a new qcow2 overlay
chained on the snapshot's frozen disk, so a snapshot cannot be deleted while
a sandbox or a child snapshot still uses it.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import contextlib
import hashlib
import logging
import os
import secrets
import shutil
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sietch.agent.connection import AgentConnection
from sietch.core.live import LiveSandbox
from sietch.core.models import SandboxInfo, SandboxState, SnapshotInfo
from sietch.errors import (
    BootError,
    Conflict,
    InvalidArgument,
    LimitExceeded,
    SietchError,
    SnapshotNotFound,
)
from sietch.network.policy import NetworkPolicy
from sietch.storage import cow, disks, xfs
from sietch.vmm import snapshot as vmsnap
from sietch.vmm.accel import cpu_model
from sietch.vmm.qemu import MachineConfig, read_tail

if TYPE_CHECKING:
    from sietch.core.manager import Manager

log = logging.getLogger(__name__)


def snapshot_id() -> str:
    return "snap-" + secrets.token_hex(6)


def template_key(paths: dict[str, Path], vcpus: int, memory_mib: int, accel: str) -> str:
    """Templates are keyed by what the guest runs: the image files' content-hashed paths."""
    parts = [f"{k}={paths[k]}" for k in sorted(paths)]
    parts += [f"{vcpus}", f"{memory_mib}", accel, cpu_model(accel)]  # type: ignore[arg-type]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def entropy() -> str:
    return base64.b64encode(os.urandom(64)).decode()


def new_mac() -> str:
    return "52:54:00:" + ":".join(f"{b:02x}" for b in os.urandom(3))


class Snapshots:
    """The manager's snapshot operations; one instance per :class:`Manager`."""

    def __init__(self, manager: Manager) -> None:
        self.m = manager
        self.dir = manager.settings.state_dir / "snapshots"
        self._locks: dict[str, asyncio.Lock] = {}
        self._template_lock = asyncio.Lock()
        self.reflink = False
        self.mounted = False

    def _lock(self, sandbox_id: str) -> asyncio.Lock:
        return self._locks.setdefault(sandbox_id, asyncio.Lock())

    # -- start-up ---------------------------------------------------------------

    def prepare_storage(self) -> None:
        """Put sandboxes and snapshots where files can reflink (see :mod:`sietch.storage.xfs`).

        A state dir that already holds sandboxes keeps its layout; a new one on a
        filesystem without reflink gets the XFS image when we are root, and
        ``<state>/sandboxes`` and ``<state>/snapshots`` become symlinks into it,
        so every path (QEMU command lines, orphan markers) stays what it was.
        """
        settings = self.m.settings
        state = settings.state_dir
        state.mkdir(parents=True, exist_ok=True)
        cow_dir = state / "cow"
        legacy = (state / "sandboxes").is_dir() and not (state / "sandboxes").is_symlink()
        wanted = (
            settings.cow_image_gib > 0
            and os.geteuid() == 0
            and not legacy
            and not cow.can_reflink(state)
        )
        if wanted and xfs.mounted_at(cow_dir) is None:
            try:
                xfs.mount_image(state / "cow.xfs", cow_dir, settings.cow_image_gib)
                self.mounted = True
            except SietchError as exc:
                log.warning("no XFS reflink image, snapshots will copy files: %s", exc)
        elif wanted:
            self.mounted = True  # left mounted by an earlier run that crashed
        if xfs.mounted_at(cow_dir) is not None:
            for name in ("sandboxes", "snapshots"):
                (cow_dir / name).mkdir(mode=0o711, exist_ok=True)
                link = state / name
                if not link.is_symlink():
                    link.symlink_to(cow_dir / name)
        self.m.sandboxes_dir = state / "sandboxes"
        self.dir = state / "snapshots"

    def release_storage(self) -> None:
        """Unmount the XFS image we mounted (only once no VM of ours uses it)."""
        if self.mounted:
            self.mounted = False
            xfs.unmount(self.m.settings.state_dir / "cow")

    def sweep(self) -> None:
        """Remove what a crash mid-snapshot left; forget records whose files are gone."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.m._run_as is not None:
            self.dir.chmod(0o711)
        self.reflink = cow.can_reflink(self.dir)
        if not self.reflink:
            log.warning(
                "%s cannot reflink: snapshots copy RAM and disk files (no shared extents)",
                self.dir,
            )
        store = self.m.store
        known = {s.id for s in store.all_snapshots()}
        for entry in self.dir.iterdir():
            if entry.name.startswith(".tmp-") or entry.name not in known:
                log.warning("removing incomplete snapshot directory %s", entry)
                shutil.rmtree(entry, ignore_errors=True)
        for info in store.all_snapshots():
            if not (self.dir / info.id / "state").exists():
                log.warning("forgetting snapshot %s: its files are gone", info.id)
                store.delete_snapshot(info.id)

    # -- pause / resume ----------------------------------------------------------

    async def pause(self, sandbox_id: str) -> SandboxInfo:
        sb = self.m._live_sandbox(sandbox_id)
        async with self._lock(sandbox_id):
            if sb.info.state is SandboxState.RUNNING:
                await vmsnap.pause(sb.machine)
                sb.info.state = SandboxState.PAUSED
                self.m.store.put(sb.info)
        return sb.info.model_copy()

    async def resume(self, sandbox_id: str) -> SandboxInfo:
        sb = self.m._live_sandbox(sandbox_id)
        async with self._lock(sandbox_id):
            if sb.info.state is SandboxState.PAUSED:
                await vmsnap.resume(sb.machine)
                sb.info.state = SandboxState.RUNNING
                self.m.store.put(sb.info)
        return sb.info.model_copy()

    # -- snapshot ---------------------------------------------------------------

    async def snapshot(
        self,
        sandbox_id: str,
        name: str | None = None,
        labels: dict[str, str] | None = None,
        *,
        template_key: str | None = None,
    ) -> SnapshotInfo:
        """Save the whole machine; it keeps running (or stays paused) afterwards."""
        sb = self.m._live_sandbox(sandbox_id)
        return await self._take(sb, name, labels, template_key)

    async def _take(
        self,
        sb: LiveSandbox,
        name: str | None,
        labels: dict[str, str] | None,
        template_key: str | None,
    ) -> SnapshotInfo:
        info = sb.info
        sid = snapshot_id()
        tmp = self.dir / f".tmp-{sid}"
        final = self.dir / sid
        config = sb.machine.config
        ram_in_stream = not config.memory_shared
        tmp.mkdir(mode=0o711)
        try:
            async with self._lock(sb.id):
                was_running = info.state is not SandboxState.PAUSED
                try:
                    await vmsnap.save_state(sb.machine, tmp / "state")
                    await asyncio.to_thread(self._freeze, config, tmp, ram_in_stream)
                finally:
                    if was_running and sb.machine.running:
                        await vmsnap.resume(sb.machine)
            snap = SnapshotInfo(
                id=sid,
                name=name,
                labels=labels or {},
                created_at=datetime.now(UTC),
                parent_id=info.snapshot_id,
                sandbox_id=info.id,
                image=info.image,
                vcpus=info.vcpus,
                memory_mib=info.memory_mib,
                disk_mib=info.disk_mib,
                env={} if template_key else info.env,
                ports=[] if template_key else [p.guest_port for p in info.ports],
                network=None if template_key else info.network,
                accel=info.accel,
                ram_in_stream=ram_in_stream,
                template=template_key is not None,
                template_key=template_key,
                paths={
                    "kernel": str(config.kernel),
                    "initramfs": str(config.initramfs),
                    "tools": str(config.tools_disk),
                },
            )
            await asyncio.to_thread(self._commit, snap, tmp, final)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, tmp, True)
            raise
        self.m.store.put_snapshot(snap)
        sb.log.info("snapshot %s taken (%d bytes)", sid, snap.size_bytes)
        return snap

    def _freeze(self, config: MachineConfig, tmp: Path, ram_in_stream: bool) -> None:
        """Copy (reflink where possible) the stopped VM's RAM file and disk overlay."""
        if not ram_in_stream:
            cow.clone(config.ram_path, tmp / "memory", mode=0o600)
        cow.clone(config.root_disk, tmp / "disk.qcow2", mode=0o644)
        with contextlib.suppress(OSError):
            shutil.copyfile(config.console_log, tmp / "console.log")

    def _commit(self, snap: SnapshotInfo, tmp: Path, final: Path) -> None:
        if self.m._run_as is not None and not snap.ram_in_stream:
            # QEMU 7.2 opens a share=off memory file read-write even though
            # MAP_PRIVATE never writes it (readonly=on would map it read-only).
            os.chown(tmp / "memory", *self.m._run_as)
        (tmp / "snapshot.json").write_text(snap.model_dump_json(indent=2))
        for entry in tmp.iterdir():
            cow.fsync_path(entry)
        cow.fsync_path(tmp)
        snap.size_bytes = cow.disk_usage(tmp)
        os.rename(tmp, final)
        cow.fsync_path(self.dir)

    # -- query / delete -------------------------------------------------------------

    def get(self, snap_id: str) -> SnapshotInfo:
        snap = self.m.store.get_snapshot(snap_id)
        if snap is None:
            raise SnapshotNotFound(f"no snapshot with id {snap_id!r}")
        return snap

    def list(self, templates: bool = False) -> list[SnapshotInfo]:
        return [s for s in self.m.store.all_snapshots() if templates or not s.template]

    def users(self, snap_id: str) -> builtins.list[str]:
        """Sandboxes and snapshots whose disk (or RAM) still depends on ``snap_id``."""
        found = [s.id for s in self.m.store.all_snapshots() if s.parent_id == snap_id]
        found += [i.id for i in self.m.store.all() if i.snapshot_id == snap_id]
        return found

    async def delete(self, snap_id: str) -> None:
        self.get(snap_id)
        users = self.users(snap_id)
        if users:
            raise Conflict(
                f"snapshot {snap_id} is still used by {', '.join(users)}; delete those first",
                users=users,
            )
        self.m.store.delete_snapshot(snap_id)
        await asyncio.to_thread(shutil.rmtree, self.dir / snap_id, True)

    # -- restore / fork ------------------------------------------------------------

    async def restore(
        self,
        snap_id: str,
        *,
        metadata: dict[str, str] | None = None,
        hostname: str | None = None,
        disk_mib: int | None = None,
        env: dict[str, str] | None = None,
        timeout_s: float | None = None,
        network: NetworkPolicy | None = None,
    ) -> SandboxInfo:
        """Start a new sandbox from a snapshot; the original (if any) is untouched."""
        snap = self.get(snap_id)
        m = self.m
        m.check_capacity()
        disk = disk_mib or snap.disk_mib
        if disk < snap.disk_mib:
            raise InvalidArgument(f"disk_mib must be at least {snap.disk_mib} for this snapshot")
        now = datetime.now(UTC)
        info = SandboxInfo(
            id="sb-" + secrets.token_hex(6),
            state=SandboxState.CREATING,
            image=snap.image,
            vcpus=snap.vcpus,
            memory_mib=snap.memory_mib,
            disk_mib=disk,
            env={**snap.env, **(env or {})},
            metadata=metadata or {},
            created_at=now,
            expires_at=None,
            accel=m.accel,
            snapshot_id=snap.id,
            network=network or snap.network or m.default_network(),
        )
        if timeout_s:
            from datetime import timedelta

            info.expires_at = now + timedelta(seconds=timeout_s)
        if snap.accel != m.accel:
            raise InvalidArgument(f"snapshot {snap.id} was taken under {snap.accel}, not {m.accel}")
        src = self.dir / snap.id
        paths = {k: Path(v) for k, v in snap.paths.items()}
        paths["rootfs"] = src / "disk.qcow2"
        config = m._machine_config(info, paths)
        config.mac = new_mac()
        config.incoming = True
        if not snap.ram_in_stream:
            config.memory_path, config.memory_shared = src / "memory", False
        m.store.put(info)
        try:
            await asyncio.to_thread(self._prepare, config, src, disk)
            sandbox = await self._start(
                info, config, src / "state", snap.ram_in_stream, hostname, ports=snap.ports
            )
        except BaseException:
            await asyncio.shield(m._discard(info.id, config))
            raise
        if disk > snap.disk_mib:
            with contextlib.suppress(SietchError):
                await sandbox.agent.call("resize_fs")
        info.state, info.pid = SandboxState.RUNNING, sandbox.machine.pid
        m.store.put(info)
        m._register(sandbox)
        if timeout_s:
            m._spawn(m._expire(info.id, timeout_s))
        return info.model_copy()

    def _prepare(self, config: MachineConfig, src: Path, disk_mib: int) -> None:
        config.workdir.mkdir(mode=0o750)
        disks.create_overlay(src / "disk.qcow2", config.root_disk, disk_mib, "qcow2")
        with contextlib.suppress(OSError):
            shutil.copyfile(src / "console.log", config.console_log)
        if self.m._run_as is not None:
            uid, gid = self.m._run_as
            for path in (config.workdir, config.root_disk, config.console_log):
                with contextlib.suppress(FileNotFoundError):
                    os.chown(path, uid, gid)

    async def _start(
        self,
        info: SandboxInfo,
        config: MachineConfig,
        state: Path,
        ram_in_stream: bool,
        hostname: str | None,
        *,
        ports: Sequence[int] = (),
    ) -> LiveSandbox:
        agent = AgentConnection(config.agent_socket, name=info.id)
        hello: dict[str, Any] = {"entropy": entropy(), "mac": config.mac}
        if hostname:
            hello["hostname"] = hostname
        machine, network = await self.m._launch(info, config)
        sandbox = LiveSandbox(info, config.workdir, machine, agent, network)
        try:
            t1 = time.monotonic()
            await vmsnap.load_state(machine, state, ram_in_stream=ram_in_stream)
            t2 = time.monotonic()
            await vmsnap.resume(machine)
            t3 = time.monotonic()
            await agent.connect(self.m.settings.boot_timeout_s, **hello)
            t4 = time.monotonic()
            # A fresh QEMU has none of the original's forwards: the snapshot's
            # exposed guest ports get new host ports of this copy's own.
            for port in ports:
                info.ports.append(await self.m._forward(machine, network, port))
            log.debug(
                "restore %s: load %.0f ms, cont %.0f ms, agent %.0f ms",
                info.id,
                *(1000 * d for d in (t2 - t1, t3 - t2, t4 - t3)),
            )
        except BaseException as exc:
            await sandbox.stop()
            if isinstance(exc, SietchError) and not isinstance(exc, BootError):
                raise BootError(
                    f"restore of {info.snapshot_id} failed: {exc.message}",
                    console=read_tail(config.qemu_log, 2000),
                ) from exc
            raise
        return sandbox

    async def fork(
        self, sandbox_id: str, count: int, metadata: dict[str, str] | None = None
    ) -> builtins.list[SandboxInfo]:
        """N running copies of a running sandbox, all restored from one new snapshot."""
        if not 1 <= count <= self.m.settings.max_sandboxes:
            raise InvalidArgument(f"count must be between 1 and {self.m.settings.max_sandboxes}")
        if len(self.m._live) + count > self.m.settings.max_sandboxes:
            raise LimitExceeded(
                f"forking {count} would exceed {self.m.settings.max_sandboxes} sandboxes "
                "(SIETCH_MAX_SANDBOXES)"
            )
        snap = await self.snapshot(sandbox_id, name=f"fork of {sandbox_id}")
        results = await asyncio.gather(
            *(self.restore(snap.id, metadata=metadata) for _ in range(count)),
            return_exceptions=True,
        )
        made = [r for r in results if isinstance(r, SandboxInfo)]
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            for info in made:
                with contextlib.suppress(SietchError):
                    await self.m.delete(info.id)
            raise errors[0]
        return made

    # -- templates -----------------------------------------------------------------

    def find_template(self, key: str) -> SnapshotInfo | None:
        for snap in self.m.store.all_snapshots():
            if snap.template and snap.template_key == key:
                return snap
        return None

    async def make_template(self, sandbox: LiveSandbox, key: str) -> SnapshotInfo | None:
        """Snapshot a freshly booted sandbox as its image's template (once per key)."""
        async with self._template_lock:
            if (found := self.find_template(key)) is not None:
                return found
            try:
                snap = await self._take(sandbox, "template", None, key)
            except Exception:  # a template only saves time: never fail the create
                sandbox.log.exception("could not make a template")
                return None
            self._drop_stale_templates(snap.image, keep=key)
            return snap

    def _drop_stale_templates(self, image: str, keep: str) -> None:
        """Templates of an image that changed since: delete those nothing uses any more."""
        for snap in self.m.store.all_snapshots():
            stale = snap.template and snap.image == image and snap.template_key != keep
            if stale and not self.users(snap.id):
                self.m.store.delete_snapshot(snap.id)
                shutil.rmtree(self.dir / snap.id, ignore_errors=True)
