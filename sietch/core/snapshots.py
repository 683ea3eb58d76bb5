"""Snapshots of sandboxes and what a restore starts from; templates make ``create`` a restore.

A snapshot is the device state, a memory file and a disk, whatever the sandbox
was (cold-booted, created from a template, restored, any generation deep),
taken the same way while its vCPUs are stopped:

- ``state``: the device sections only (:func:`sietch.vmm.snapshot.save_devices`).
- ``memory``: a sandbox that writes its RAM through to its own file
  (``share=on``, cold-booted) has it frozen by a reflink. A restored one maps
  its parent's memory file privately (``share=off``): the new file is a
  reflink of the parent's with the pages written since copied over it
  (:mod:`sietch.vmm.dirty`), so it costs what changed and shares the rest.
- ``layers/<id>.qcow2``: a reflink of the disk overlay, beside reflinks of
  every layer below it (the parent's ``layers/``). Layers name their backing
  file relatively, so the chain resolves inside one directory: deleting an
  ancestor never breaks a snapshot, and a restore links the layers into its
  work dir and chains its overlay on the top one.

Every restore is then the same as a template's: map ``memory`` privately, load ``state``,
``cont``; the pages a restored VM had read are read into its snapshot's page cache once the
snapshot is published (:mod:`sietch.vmm.readahead`). Where QEMU's memory can't be read (not
root and not our child: an adopted VM under a strict ptrace scope) QEMU writes the whole
RAM into ``memory`` instead (``pmemsave``: slower, and the RAM's full size on disk; logged
once). Not a migration stream with the RAM in it, as before: QEMU 10 aborts an outgoing
migration of a VM started for a device-only state. Snapshots recorded before the device
format restore the way they were made (``ram_in_stream`` ones load their RAM into a
share=on file of their own); so do their disks (``disk.qcow2``, chained on the parent's,
which is then kept while they exist).

Measured on this machine (QEMU 10.0.2, TCG, 2 cores, load 2.7), a sandbox
created from the template with 64 MiB written to a file in its guest, five
snapshots: vCPUs stopped 60-324 ms (median 125; copying the written pages is
most of it, see :mod:`sietch.vmm.dirty`), wall 152-444 ms (median 225), 75 MiB
more used on the XFS image (statvfs), restore to a first exec 645-876 ms
(median 802) against 717-991 ms for the template in the same run. Before,
such a snapshot put its RAM in the stream: 167 ms, 100-176 MB, and its
restore 712 ms median; every other generation paid that.

Snapshots are directories ``<state>/snapshots/<id>/`` (``state``, ``memory``
unless RAM is in the stream, ``layers/``, ``console.log``), written under
``.tmp-<id>``, published (fsynced and renamed into place, see
:mod:`sietch.storage.publish`), and only then recorded in SQLite.
:func:`sweep` removes temp directories and unrecorded directories on start,
and drops records whose directory is gone: a crash never lists a snapshot
that cannot be restored. A snapshot cannot be deleted while a sandbox
restored from it runs.

Templates of built-in images are also published to the machine's template cache, and
a state dir without a template imports it from there before it would boot one
(:mod:`sietch.core.template_cache`; ``SIETCH_TEMPLATE_CACHE=false``: every state dir
boots its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sietch.core.host import SandboxHost
from sietch.core.live import LiveSandbox
from sietch.core.models import (
    DEFAULT_TENANT,
    SandboxInfo,
    SandboxState,
    Screen,
    SnapshotInfo,
    Timeouts,
)
from sietch.core.provision import Plan, Restore, record
from sietch.core.template_cache import SharedTemplates
from sietch.errors import InvalidArgument, SandboxNotRunning, VMError, describe_validation
from sietch.images.templates import TemplateCache
from sietch.network.policy import NetworkPolicy
from sietch.storage import cow
from sietch.storage.layout import StateLayout
from sietch.storage.publish import publish
from sietch.vmm import dirty, readahead
from sietch.vmm import snapshot as vmsnap
from sietch.vmm.accel import Accel
from sietch.vmm.qemu import MachineConfig, QemuMachine, guest_abi
from sietch.vmm.version import seal_memory_file

log = logging.getLogger(__name__)

DYING_S = 2.0
"""How long a snapshot whose pause or save failed waits to see the VM's QEMU end (killed, or
its guest powered off) before it takes the failure for a server fault."""


@cache
def _warn_unreadable(reason: str) -> None:
    log.warning(
        "cannot read a restored sandbox's memory (%s): its snapshots have QEMU write the "
        "whole RAM (slower, bigger); run Sietch as root for incremental snapshots",
        reason,
    )


def snapshot_id() -> str:
    return "snap-" + secrets.token_hex(6)


def template_key(
    paths: dict[str, Path], vcpus: int, memory_mib: int, accel: Accel, qemu_binary: str
) -> str:
    """Templates are keyed by what the guest runs: the image files' content-hashed paths,
    the machine's size, and the QEMU, machine type, CPU and kernel arguments it runs under."""
    parts = [f"{k}={paths[k]}" for k in sorted(paths)]
    parts += [f"{vcpus}", f"{memory_mib}", accel, guest_abi(accel, qemu_binary)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


class Snapshots:
    """Takes snapshots, turns them into restore plans, keeps templates; one per manager."""

    def __init__(self, host: SandboxHost, layout: StateLayout) -> None:
        self.host = host
        self.layout = layout
        self._template_lock = asyncio.Lock()
        self._reading = asyncio.Semaphore(1)
        """One readahead at a time: they queue rather than crowd the disk and the threads."""
        s = host.settings
        self.shared = (
            SharedTemplates(
                TemplateCache(s.template_cache_path),
                layout.snapshots,
                self.adopt,
                fastpath=s.agent_fastpath,
            )
            if s.template_cache
            else None
        )
        """The machine's template cache (None: ``SIETCH_TEMPLATE_CACHE=false``)."""

    @property
    def dir(self) -> Path:
        return self.layout.snapshots

    @property
    def reflink(self) -> bool:
        return self.layout.reflink

    def sweep(self) -> None:
        """Remove what a crash mid-snapshot left; forget records whose files are gone."""
        store = self.host.store
        known = {s.id for s in store.all_snapshots()}
        for entry in self.dir.iterdir():
            if entry.name.startswith(".tmp-") or entry.name not in known:
                log.warning("removing incomplete snapshot directory %s", entry)
                shutil.rmtree(entry, ignore_errors=True)
        for info in store.all_snapshots():
            if not (self.dir / info.id / "state").exists():
                log.warning("forgetting snapshot %s: its files are gone", info.id)
                store.delete_snapshot(info.id)

    def remove(self, snap_id: str) -> None:
        """Forget a snapshot and delete its files (check :meth:`Store.snapshot_users` first)."""
        self.host.store.delete_snapshot(snap_id)
        shutil.rmtree(self.dir / snap_id, ignore_errors=True)

    # -- snapshot ---------------------------------------------------------------

    async def take(
        self,
        sb: LiveSandbox,
        name: str | None = None,
        labels: dict[str, str] | None = None,
        template_key: str | None = None,
        *,
        ttl_s: float | None = None,
        hibernation: bool = False,
        frozen: Callable[[], Awaitable[None]] | None = None,
    ) -> SnapshotInfo:
        """Save the whole machine; it keeps running (or stays paused) afterwards.

        ``ttl_s``: deleted that long from now once nothing uses it; ``hibernation``:
        the saved machine of a sandbox going to sleep, internal to it; ``frozen``: called
        once everything is saved from the VM, before the files are made durable (a
        hibernation ends the VM there rather than after the fsyncs).

        The sandbox's lock is held exclusively only while the VM is stopped
        (device state saved, files frozen); the copies of the lower disk
        layers and the publication run alongside its commands again.
        """
        await sb.settled(self.host.settings.boot_timeout_s)
        sid = snapshot_id()
        tmp = self.dir / f".tmp-{sid}"
        parent = self._parent(sb)
        tmp.mkdir(mode=0o711)
        (tmp / "layers").mkdir(mode=0o711)
        try:
            async with sb.exclusive(self.host.settings.lock_wait_s):
                was_running = sb.info.state is not SandboxState.PAUSED
                try:
                    await vmsnap.pause(sb.machine)
                    await self._freeze(sb, tmp, sid)
                    if frozen is not None:
                        await frozen()
                except VMError:
                    if not await sb.machine.ended(within=DYING_S):
                        raise
                    # Its guest powered off (or QEMU died) before the sandbox's record
                    # caught up: the caller's to fix, not a server fault.
                    raise SandboxNotRunning(
                        f"sandbox {sb.id} is dead (its VM stopped): delete it",
                        state=SandboxState.DEAD,
                    ) from None
                finally:
                    if was_running and sb.machine.running:
                        await vmsnap.resume(sb.machine)
            standalone = sb.info.snapshot_id is None or (parent is not None and parent.standalone)
            snap = self._describe(sb, sid, name, labels, template_key)
            snap.state_format, snap.standalone = "devices", standalone
            snap.hibernation = hibernation
            if ttl_s is not None:
                snap.expires_at = snap.created_at + timedelta(seconds=ttl_s)
            snap.disk = f"layers/{sid}.qcow2"
            if standalone and parent is not None:
                await asyncio.to_thread(self._copy_layers, parent, tmp / "layers")
            await asyncio.to_thread(self._commit, snap, tmp, self.dir / sid)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, tmp, True)
            raise
        self.host.store.put_snapshot(snap)
        sb.log.info("snapshot %s taken (%d bytes)", sid, snap.size_bytes)
        self._read_ahead(sb.machine, self.dir / sid / "memory")
        return snap

    def _read_ahead(self, machine: QemuMachine, memory: Path) -> None:
        """Start reading into the page cache the pages of the snapshot's ``memory`` that its
        VM (still running) has read of its own since its restore: what a restore of the
        snapshot reads first (:mod:`sietch.vmm.readahead`). Not for a cold-booted VM: all
        it ever touched is in memory, more than a restore reads, and reading it delayed a
        restore right after (bench/snapshots.py: 395-398 against 364-368 ms)."""
        pid, ram = machine.pid, machine.config.ram_path
        if pid is None or not machine.running or machine.config.memory_shared:
            return

        def read() -> None:
            try:
                readahead.prefetch(memory, readahead.used(pid, ram))
            except OSError as exc:  # the VM or the snapshot gone meanwhile: it only saves time
                log.debug("no readahead of %s: %s", memory, exc)

        async def queued() -> None:
            async with self._reading:
                await asyncio.to_thread(read)

        self.host.spawn(queued())

    def _parent(self, sb: LiveSandbox) -> SnapshotInfo | None:
        parent_id = sb.info.snapshot_id
        return None if parent_id is None else self.host.store.get_snapshot(parent_id)

    @staticmethod
    def _describe(
        sb: LiveSandbox,
        sid: str,
        name: str | None,
        labels: dict[str, str] | None,
        template_key: str | None,
    ) -> SnapshotInfo:
        info, config = sb.info, sb.machine.config
        return SnapshotInfo(
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
            # A template's ports are its image's (EXPOSE): every create exposes them again.
            ports=[p.guest_port for p in info.ports],
            network=None if template_key else info.network,
            desktop=None if info.desktop is None else Screen(**info.desktop.model_dump()),
            user=info.user,
            cwd=info.cwd,
            accel=info.accel,
            template=template_key is not None,
            template_key=template_key,
            tenant=info.tenant,
            paths={
                "kernel": str(config.kernel),
                "initramfs": str(config.initramfs),
                "tools": str(config.tools_disk),
            },
        )

    async def _freeze(self, sb: LiveSandbox, tmp: Path, sid: str) -> None:
        """Save the stopped VM's device state, memory and disk."""
        machine = sb.machine
        config = machine.config
        t0 = time.monotonic()
        if not config.memory_shared and not await asyncio.to_thread(
            self._copy_memory, machine, tmp
        ):
            # Not a migration stream: QEMU 10 aborts an outgoing migration of a VM that
            # was started with migration.send-configuration=off (every restore).
            await vmsnap.save_ram(machine, tmp / "memory")
        t1 = time.monotonic()
        await vmsnap.save_devices(machine, tmp / "state")
        t2 = time.monotonic()
        await asyncio.to_thread(self._freeze_files, config, tmp, sid)
        sb.log.debug(
            "snapshot %s: memory %.0f ms, state %.0f ms, files %.0f ms",
            sid,
            *(1000 * d for d in (t1 - t0, t2 - t1, time.monotonic() - t2)),
        )

    @staticmethod
    def _copy_memory(machine: QemuMachine, tmp: Path) -> bool:
        """The memory of a VM that maps its parent's file privately: that file plus the
        pages written since; False (and why, logged once) when they can't be read."""
        config, memory = machine.config, tmp / "memory"
        cow.clone(config.ram_path, memory, mode=0o600)
        fd = os.open(memory, os.O_RDONLY | os.O_CLOEXEC)
        try:
            cow.unshare_exactly(fd)
        finally:
            os.close(fd)
        try:
            if machine.pid is None:
                raise ProcessLookupError(f"machine {config.name} has no process")
            started = time.monotonic()
            copied = dirty.copy_written(machine.pid, config.ram_path, memory)
        except OSError as exc:
            memory.unlink()
            _warn_unreadable(str(exc.strerror or exc))
            return False
        log.debug(
            "%s: %d MiB of written pages copied in %.0f ms",
            config.name,
            copied >> 20,
            1000 * (time.monotonic() - started),
        )
        return True

    @staticmethod
    def _freeze_files(config: MachineConfig, tmp: Path, sid: str) -> None:
        """Copy (reflink where possible) the RAM file of a share=on VM and the disk overlay."""
        if config.memory_shared:
            cow.clone(config.ram_path, tmp / "memory", mode=0o600)
        cow.clone(config.root_disk, tmp / "layers" / f"{sid}.qcow2", mode=0o644)
        with contextlib.suppress(OSError):
            shutil.copyfile(config.console_log, tmp / "console.log")

    def _copy_layers(self, parent: SnapshotInfo, layers: Path) -> None:
        """Reflink the layers below the new top one (the parent's) into the snapshot."""
        for layer in (self.dir / parent.id / "layers").iterdir():
            cow.clone(layer, layers / layer.name, mode=0o644)

    def _commit(self, snap: SnapshotInfo, tmp: Path, final: Path) -> None:
        if (tmp / "memory").exists():
            seal_memory_file(tmp / "memory", self.host.run_as, self.host.settings.qemu_binary)
        (tmp / "snapshot.json").write_text(snap.model_dump_json(indent=2))
        snap.size_bytes = cow.disk_usage(tmp)
        publish(tmp, final)

    def adopt(self, tmp: Path) -> SnapshotInfo:
        """Publish a snapshot directory copied from another node (``snapshot.json`` in it)
        under its id, and record it: restorable here from now on."""
        snap = SnapshotInfo.model_validate_json((tmp / "snapshot.json").read_text())
        if self.host.store.get_snapshot(snap.id) is not None:
            shutil.rmtree(tmp, ignore_errors=True)
            return snap
        if (tmp / "memory").exists():
            seal_memory_file(tmp / "memory", self.host.run_as, self.host.settings.qemu_binary)
        snap.size_bytes = cow.disk_usage(tmp)
        publish(tmp, self.dir / snap.id)
        self.host.store.put_snapshot(snap)
        return snap

    # -- restore ---------------------------------------------------------------------

    def plan(
        self,
        snap: SnapshotInfo,
        *,
        labels: dict[str, str] | None = None,
        hostname: str | None = None,
        disk_mib: int | None = None,
        env: dict[str, str] | None = None,
        network: NetworkPolicy | None = None,
        tenant: str = DEFAULT_TENANT,
        **timeouts: Any,
    ) -> Plan:
        """How to make a new sandbox of ``snap`` for ``tenant``; the original is untouched.

        ``timeouts``: the :class:`~sietch.core.models.Timeouts` fields of the new sandbox."""
        disk = disk_mib or snap.disk_mib
        if disk < snap.disk_mib:
            raise InvalidArgument(f"disk_mib must be at least {snap.disk_mib} for this snapshot")
        accel = self.host.accel
        if snap.accel != accel:
            raise InvalidArgument(f"snapshot {snap.id} was taken under {snap.accel}, not {accel}")
        try:
            chosen = Timeouts(**{k: v for k, v in timeouts.items() if v is not None})
        except ValidationError as exc:
            raise InvalidArgument(describe_validation(exc.errors())) from None
        info = record(
            accel,
            image=snap.image,
            vcpus=snap.vcpus,
            memory_mib=snap.memory_mib,
            disk_mib=disk,
            env={**snap.env, **(env or {})},
            labels=labels or {},
            snapshot_id=snap.id,
            network=network or snap.network or self.host.default_network(),
            **chosen.model_dump(),
            tenant=tenant,
            user=snap.user,
            cwd=snap.cwd,
        )
        return self._plan(snap, info, hostname)

    def wake_plan(self, snap: SnapshotInfo, sleeping: SandboxInfo) -> Plan:
        """How a hibernated sandbox comes back from its hibernation snapshot ``snap``: the
        same record (id, labels, network, timeouts), its ports (the record's: unexposed
        while it slept, one stays so) on the same host ports where they are free."""
        info = sleeping.model_copy(
            update={"state": SandboxState.CREATING, "pid": None, "ports": [], "error": None}
        )
        plan = self._plan(snap, info, None)
        assert plan.restore is not None
        plan.restore.ports = [p.guest_port for p in sleeping.ports]
        plan.restore.host_ports = {p.guest_port: p.host_port for p in sleeping.ports}
        plan.previous = sleeping
        return plan

    def _plan(self, snap: SnapshotInfo, info: SandboxInfo, hostname: str | None) -> Plan:
        src = self.dir / snap.id
        paths = {k: Path(v) for k, v in snap.paths.items()}
        paths["rootfs"] = src / snap.disk
        restore = Restore(
            state=src / "state",
            ram_in_stream=snap.ram_in_stream,
            devices_only=snap.state_format == "devices",
            memory=None if snap.ram_in_stream else src / "memory",
            console=src / "console.log",
            ports=snap.ports,
            desktop=snap.desktop,
        )
        return Plan(
            info,
            paths,
            base_mib=snap.disk_mib,
            base_format="qcow2",
            layers=paths["rootfs"].parent if snap.standalone else None,
            restore=restore,
            hostname=hostname,
        )

    # -- templates -----------------------------------------------------------------

    def find_template(self, key: str) -> SnapshotInfo | None:
        for snap in self.host.store.all_snapshots():
            if snap.template and snap.template_key == key:
                return snap
        return None

    @contextlib.asynccontextmanager
    async def template_or_claim(
        self, key: str | None, *, shared: bool
    ) -> AsyncIterator[SnapshotInfo | None]:
        """The template of ``key``: this state dir's, else (``shared``: a built-in image's)
        one imported from the machine's template cache. None: there is none yet, and the
        block is to boot it; for a shared one it then holds the machine-wide claim to
        that boot, so that other servers (and creates here) wait for its template rather
        than boot the same one at once. Without a key: None, nothing claimed."""
        found = self.find_template(key) if key is not None else None
        if key is None or found is not None or not shared or self.shared is None:
            yield found
            return
        cache, waited = self.shared, False
        while True:
            if (found := await self._import(key, cache)) is not None:
                yield found
                return
            with cache.booting(key) as mine:
                if mine:
                    # Claimed: ours to boot, unless a boot published it since the import.
                    if (found := await self._import(key, cache)) is None:
                        yield None
                        return
                    continue
            if not waited:
                log.info("template %s: waiting for the boot under way to publish it", key)
                waited = True
            await asyncio.sleep(1)

    async def _import(self, key: str, shared: SharedTemplates) -> SnapshotInfo | None:
        async with self._template_lock:
            if (found := self.find_template(key)) is not None:
                return found
            try:
                snap = await asyncio.to_thread(shared.fetch, key)
            except Exception:  # the cache only saves time: boot instead
                log.exception("could not import template %s from the template cache", key)
                return None
            if snap is not None:
                self._drop_stale_templates(snap.image, keep=key)
            return snap

    async def make_template(
        self, sandbox: LiveSandbox, key: str, *, shared: bool = False
    ) -> SnapshotInfo | None:
        """Snapshot a freshly booted sandbox as its image's template (once per key);
        ``shared`` (a built-in image's): published to the machine's template cache too."""
        async with self._template_lock:
            if (found := self.find_template(key)) is not None:
                return found
            try:
                snap = await self.take(sandbox, "template", None, key)
            except Exception:  # a template only saves time: never fail the create
                sandbox.log.exception("could not make a template")
                return None
            self._drop_stale_templates(snap.image, keep=key)
            if shared and self.shared is not None:
                try:
                    await asyncio.to_thread(self.shared.publish, snap)
                except Exception:
                    sandbox.log.exception("could not publish its template to the template cache")
            return snap

    def _drop_stale_templates(self, image: str, keep: str) -> None:
        """Templates of an image that changed since: delete those nothing uses any more."""
        store = self.host.store
        for snap in store.all_snapshots():
            stale = snap.template and snap.image == image and snap.template_key != keep
            if stale and not store.snapshot_users(snap.id):
                self.remove(snap.id)
