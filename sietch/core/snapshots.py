"""Snapshots of sandboxes and what a restore starts from; templates make ``create`` a restore.

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
``.tmp-<id>``, published (fsynced and renamed into place, see
:mod:`sietch.storage.publish`), and only then recorded in SQLite.
:func:`sweep` removes temp directories and unrecorded directories on start,
and drops records whose directory is gone: a crash never lists a snapshot
that cannot be restored. A restored sandbox's disk is a new qcow2 overlay
chained on the snapshot's frozen disk, so a snapshot cannot be deleted while
a sandbox or a child snapshot still uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import shutil
from datetime import UTC, datetime
from pathlib import Path

from sietch.core.host import SandboxHost
from sietch.core.live import LiveSandbox
from sietch.core.models import SandboxState, SnapshotInfo
from sietch.core.provision import Plan, Restore, record
from sietch.errors import InvalidArgument
from sietch.network.policy import NetworkPolicy
from sietch.storage import cow
from sietch.storage.layout import StateLayout
from sietch.storage.publish import publish
from sietch.vmm import snapshot as vmsnap
from sietch.vmm.accel import cpu_model
from sietch.vmm.qemu import MachineConfig
from sietch.vmm.version import seal_memory_file

log = logging.getLogger(__name__)


def snapshot_id() -> str:
    return "snap-" + secrets.token_hex(6)


def template_key(paths: dict[str, Path], vcpus: int, memory_mib: int, accel: str) -> str:
    """Templates are keyed by what the guest runs: the image files' content-hashed paths."""
    parts = [f"{k}={paths[k]}" for k in sorted(paths)]
    parts += [f"{vcpus}", f"{memory_mib}", accel, cpu_model(accel)]  # type: ignore[arg-type]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


class Snapshots:
    """Takes snapshots, turns them into restore plans, keeps templates; one per manager."""

    def __init__(self, host: SandboxHost, layout: StateLayout) -> None:
        self.host = host
        self.layout = layout
        self._template_lock = asyncio.Lock()

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
    ) -> SnapshotInfo:
        """Save the whole machine; it keeps running (or stays paused) afterwards.

        The sandbox's lock is held exclusively only while the VM is stopped
        (device state saved, files frozen); the publication runs alongside
        its commands again.
        """
        sid = snapshot_id()
        tmp = self.dir / f".tmp-{sid}"
        config = sb.machine.config
        ram_in_stream = not config.memory_shared
        tmp.mkdir(mode=0o711)
        try:
            async with sb.exclusive(self.host.settings.lock_wait_s):
                was_running = sb.info.state is not SandboxState.PAUSED
                try:
                    await vmsnap.save_state(sb.machine, tmp / "state")
                    await asyncio.to_thread(self._freeze, config, tmp, ram_in_stream)
                finally:
                    if was_running and sb.machine.running:
                        await vmsnap.resume(sb.machine)
            snap = self._describe(sb, sid, name, labels, template_key)
            await asyncio.to_thread(self._commit, snap, tmp, self.dir / sid)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, tmp, True)
            raise
        self.host.store.put_snapshot(snap)
        sb.log.info("snapshot %s taken (%d bytes)", sid, snap.size_bytes)
        return snap

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
            ports=[] if template_key else [p.guest_port for p in info.ports],
            network=None if template_key else info.network,
            accel=info.accel,
            ram_in_stream=not config.memory_shared,
            template=template_key is not None,
            template_key=template_key,
            paths={
                "kernel": str(config.kernel),
                "initramfs": str(config.initramfs),
                "tools": str(config.tools_disk),
            },
        )

    def _freeze(self, config: MachineConfig, tmp: Path, ram_in_stream: bool) -> None:
        """Copy (reflink where possible) the stopped VM's RAM file and disk overlay."""
        if not ram_in_stream:
            cow.clone(config.ram_path, tmp / "memory", mode=0o600)
        cow.clone(config.root_disk, tmp / "disk.qcow2", mode=0o644)
        with contextlib.suppress(OSError):
            shutil.copyfile(config.console_log, tmp / "console.log")

    def _commit(self, snap: SnapshotInfo, tmp: Path, final: Path) -> None:
        if not snap.ram_in_stream:
            seal_memory_file(tmp / "memory", self.host.run_as, self.host.settings.qemu_binary)
        (tmp / "snapshot.json").write_text(snap.model_dump_json(indent=2))
        snap.size_bytes = cow.disk_usage(tmp)
        publish(tmp, final)

    # -- restore ---------------------------------------------------------------------

    def plan(
        self,
        snap: SnapshotInfo,
        *,
        labels: dict[str, str] | None = None,
        hostname: str | None = None,
        disk_mib: int | None = None,
        env: dict[str, str] | None = None,
        timeout_s: float | None = None,
        network: NetworkPolicy | None = None,
    ) -> Plan:
        """How to make a new sandbox of ``snap``; the original (if any) is untouched."""
        disk = disk_mib or snap.disk_mib
        if disk < snap.disk_mib:
            raise InvalidArgument(f"disk_mib must be at least {snap.disk_mib} for this snapshot")
        accel = self.host.accel
        if snap.accel != accel:
            raise InvalidArgument(f"snapshot {snap.id} was taken under {snap.accel}, not {accel}")
        src = self.dir / snap.id
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
        )
        paths = {k: Path(v) for k, v in snap.paths.items()}
        paths["rootfs"] = src / "disk.qcow2"
        restore = Restore(
            state=src / "state",
            ram_in_stream=snap.ram_in_stream,
            memory=None if snap.ram_in_stream else src / "memory",
            console=src / "console.log",
            ports=snap.ports,
        )
        return Plan(
            info,
            paths,
            base_mib=snap.disk_mib,
            base_format="qcow2",
            restore=restore,
            hostname=hostname,
            timeout_s=timeout_s,
        )

    # -- templates -----------------------------------------------------------------

    def find_template(self, key: str) -> SnapshotInfo | None:
        for snap in self.host.store.all_snapshots():
            if snap.template and snap.template_key == key:
                return snap
        return None

    async def make_template(self, sandbox: LiveSandbox, key: str) -> SnapshotInfo | None:
        """Snapshot a freshly booted sandbox as its image's template (once per key)."""
        async with self._template_lock:
            if (found := self.find_template(key)) is not None:
                return found
            try:
                snap = await self.take(sandbox, "template", None, key)
            except Exception:  # a template only saves time: never fail the create
                sandbox.log.exception("could not make a template")
                return None
            self._drop_stale_templates(snap.image, keep=key)
            return snap

    def _drop_stale_templates(self, image: str, keep: str) -> None:
        """Templates of an image that changed since: delete those nothing uses any more."""
        store = self.host.store
        for snap in store.all_snapshots():
            stale = snap.template and snap.image == image and snap.template_key != keep
            if stale and not store.snapshot_users(snap.id):
                self.remove(snap.id)
