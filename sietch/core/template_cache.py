"""A server's side of the machine's template cache (:mod:`sietch.images.templates`).

Only templates of built-in images are shared: a user image is its tenant's and is built
per state dir. What a template holds, and why a copy can serve another server:

- the device state: no paths (QEMU gets the memory file and disks on its command line);
  its NIC's MAC, which every restore replaces (:func:`sietch.core.provision.fixup`), as it
  sets the guest's clock and reseeds its entropy;
- the memory and disk of the guest as it booted: no host-side secret enters a guest
  before its template is taken (E2B access tokens are the server's HMACs, the CA bundle
  and the create's environment are handed in after), and a desktop's VNC password is
  set again on every restore, the booted sandbox's own included once its template is
  taken (so the template's is nobody's);
- the disk layer, whose backing file is the image in the image cache (the same path on
  every server: the key hashes it); the kernel, initramfs and tools disk, also there;
- its record (``snapshot.json``), published as nobody's (tenant ``default``, no sandbox)
  and imported under the same id, as a cluster's nodes hold copies of one snapshot.

The entry's name is the template key (:func:`sietch.core.snapshots.template_key`: image
files, size, QEMU, machine, CPU and kernel arguments) and a digest of what else shapes a
booted guest: the host code that drives its boot (what it runs in the guest before the
template is taken, QEMU's devices) and whether the agent's fast path runs. Servers of
different code (another checkout, an upgrade) never restore each other's templates.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import cache
from pathlib import Path

from sietch.core.models import DEFAULT_TENANT, SnapshotInfo
from sietch.images.templates import CorruptEntry, TemplateCache
from sietch.vmm.jail import backing_chain

log = logging.getLogger(__name__)

ORIGIN_LABEL = "sietch.origin"
"""Label of a template imported from the cache (value :data:`IMPORTED`)."""
IMPORTED = "template-cache"
_SHAPING = ("config.py", "core", "vmm", "agent", "images", "storage", "network")
"""The parts of the package whose code runs while a template boots (or decides what
QEMU runs): a change in any of them makes new entries."""


@cache
def code_fingerprint() -> str:
    """A digest of the package's code that shapes a booted guest (see :data:`_SHAPING`)."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for part in _SHAPING:
        path = root / part
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            h.update(str(file.relative_to(root)).encode() + b"\0" + file.read_bytes())
    return h.hexdigest()


def entry_name(key: str, fastpath: bool) -> str:
    """The cache entry of template ``key`` for servers of this code."""
    variant = hashlib.sha256(f"{code_fingerprint()}\n{fastpath}".encode()).hexdigest()
    return f"{key}-{variant[:8]}"


class SharedTemplates:
    """Imports templates from the machine's cache into one state dir, and publishes them."""

    def __init__(
        self,
        cache: TemplateCache,
        snapshots_dir: Path,
        adopt: Callable[[Path], SnapshotInfo],
        *,
        fastpath: bool,
    ) -> None:
        self.cache = cache
        self.snapshots_dir = snapshots_dir
        self._adopt = adopt
        """Publishes a complete snapshot directory in the state dir and records it."""
        self.fastpath = fastpath

    def booting(self, key: str) -> AbstractContextManager[bool]:
        """Claim the boot of template ``key`` (:meth:`TemplateCache.booting`)."""
        return self.cache.booting(entry_name(key, self.fastpath))

    def fetch(self, key: str) -> SnapshotInfo | None:
        """Template ``key`` imported from the cache and recorded as this server's; None
        if the cache has no complete entry of it."""
        name = entry_name(key, self.fastpath)
        tmp = self.snapshots_dir / f".tmp-{secrets.token_hex(6)}"  # swept if we crash
        tmp.mkdir(mode=0o711)
        try:
            try:
                entry = self.cache.fetch(name, tmp)
            except CorruptEntry as exc:
                log.warning("template %s: a damaged cache entry, booting instead: %s", key, exc)
                return None
            if entry is None:
                return None
            snap = SnapshotInfo.model_validate_json((tmp / "snapshot.json").read_text())
            if snap.template_key != key or not snap.template:
                log.warning("template cache entry %s is not template %s: ignored", name, key)
                return None
            snap.labels = {**snap.labels, ORIGIN_LABEL: IMPORTED}
            (tmp / "snapshot.json").write_text(snap.model_dump_json(indent=2))
            snap = self._adopt(tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("template %s of image %s imported from %s", snap.id, snap.image, entry.path)
        return snap

    def publish(self, snap: SnapshotInfo) -> None:
        """Publish this server's template ``snap`` for the other servers of the machine."""
        assert snap.template_key is not None
        src = self.snapshots_dir / snap.id
        shared = snap.model_copy(
            update={"tenant": DEFAULT_TENANT, "sandbox_id": None, "labels": {}, "size_bytes": 0}
        )
        uses = [Path(p) for p in snap.paths.values()] + backing_chain(src / snap.disk)[1:]
        name = entry_name(snap.template_key, self.fastpath)
        if self.cache.publish(
            name,
            src,
            image=snap.image,
            uses=uses,
            overrides={"snapshot.json": shared.model_dump_json(indent=2).encode()},
        ):
            log.info("template %s of image %s published to %s", snap.id, snap.image, name)
