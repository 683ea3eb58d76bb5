"""The machine's template cache: templates of built-in images, shared by every Sietch on it.

A template (:mod:`sietch.core.snapshots`) is the snapshot of an image's first cold
boot; under TCG a desktop's takes minutes, and every server with a new state dir (a
test directory's, a cluster node's, a user's fresh start) booted each template again.
The first server to boot one now publishes a copy here, ``<cache_dir>/templates/<name>/``,
and the others import that copy into their own state dirs (:mod:`sietch.core.template_cache`
names entries and says what in a template is whose).

An entry is published as image artefacts are (:mod:`._cache`): copied under ``tmp/``,
fsynced and renamed into place under the entry's lock, so a crash never leaves a part
of one under its final name. Beside the snapshot's files it holds ``manifest.json``:
each file's size, mode and content digest, and the image files (kernel, disks) it runs
on. An entry without a readable manifest, with a file of another size, or whose image
files are gone, is ignored, and the next publication replaces it; an import checks each
copied file's digest before the copy may be restored, and removes an entry that fails.
A cold boot of a template claims its entry (:meth:`TemplateCache.booting`), and a server
that finds no entry while a claim is held waits for that boot's entry instead of booting
the same template; should two boot it all the same, both publish, and the second finds the
first's entry complete and drops its copy. Entries are read and written by their owner
only (mode 0700): a template's memory is a guest's RAM.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from sietch.images._cache import Cache, make_dir
from sietch.storage import cow
from sietch.storage.publish import publish

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
KEEP_PER_IMAGE = 8
"""Entries kept per image, the most recently used: one per size a sandbox of it is made
with, and per code version (servers of different code each publish their own)."""
_CHUNK = 1 << 20
_RESERVED = {"tmp", "locks"}


def content_digest(path: Path) -> str:
    """SHA-256 of a file's content, read only where it has data (a RAM file is mostly
    holes). Chunks of zeros count as holes, so a sparse copy whose extents fall elsewhere
    (another filesystem) has the same digest."""
    h = hashlib.sha256()
    zeros = bytes(_CHUNK)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        pos = 0
        for data, end in cow.data_extents(fd):
            pos = max(pos, data - data % _CHUNK)
            while pos < end:
                block = os.pread(fd, _CHUNK, pos)
                if not block:
                    break
                if block != zeros[: len(block)]:
                    h.update(pos.to_bytes(8, "little"))
                    h.update(block)
                pos += len(block)
        h.update(os.fstat(fd).st_size.to_bytes(8, "little"))
    finally:
        os.close(fd)
    return h.hexdigest()


@dataclass(frozen=True)
class FileRecord:
    size: int
    mode: int
    digest: str


@dataclass(frozen=True)
class Entry:
    """A complete entry: where it is and what its manifest says."""

    name: str
    path: Path
    image: str
    files: dict[str, FileRecord]
    uses: tuple[Path, ...]
    """The image files its snapshot runs on: without them it can't be restored."""


def _read(path: Path) -> Entry:
    """The entry at ``path``; OSError, ValueError or KeyError if it has no usable manifest."""
    raw = json.loads((path / MANIFEST).read_text())
    return Entry(
        name=path.name,
        path=path,
        image=str(raw["image"]),
        files={
            k: FileRecord(int(v["size"]), int(v["mode"]), str(v["digest"]))
            for k, v in raw["files"].items()
        },
        uses=tuple(Path(p) for p in raw["uses"]),
    )


def _complete(entry: Entry) -> bool:
    """Every file there at its size, every image file it uses there (its content is
    checked when it is copied out)."""
    try:
        sizes = {rel: (entry.path / rel).stat().st_size for rel in entry.files}
    except OSError:
        return False
    return all(sizes[rel] == f.size for rel, f in entry.files.items()) and _runnable(entry)


def _runnable(entry: Entry) -> bool:
    """Whether the image files the entry runs on are all there."""
    return all(p.exists() for p in entry.uses)


class CorruptEntry(Exception):
    """A copied file differs from its entry's manifest (the entry has been removed)."""


class TemplateCache:
    """Template entries under ``root``; every method is safe across processes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache = Cache(root)

    def entries(self) -> list[Entry]:
        """The entries with a readable manifest (complete or not)."""
        found = []
        if self.root.is_dir():
            for path in sorted(self.root.iterdir()):
                if path.name in _RESERVED or not path.is_dir():
                    continue
                try:
                    found.append(_read(path))
                except (OSError, ValueError, KeyError, TypeError):
                    continue
        return found

    def find(self, name: str) -> Entry | None:
        """The complete entry ``name``; None if there is none or it is incomplete."""
        try:
            entry = _read(self.root / name)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return entry if _complete(entry) else None

    def booting(self, name: str) -> AbstractContextManager[bool]:
        """Claim the boot of entry ``name`` while the block runs (yields False, and holds
        nothing, if another boot holds it): a server that finds no entry and can't claim
        its boot waits for that boot's entry instead of booting the same template."""
        return self._cache.claim(f"boot-{name}")

    def fetch(self, name: str, dst: Path) -> Entry | None:
        """Copy the files of entry ``name`` into the empty directory ``dst`` (reflinked
        where the filesystem can); None if there is no complete entry. Raises
        :class:`CorruptEntry` (after removing the entry) if a copy differs from it."""
        with self._cache.lock(name):
            entry = self.find(name)
            if entry is None:
                return None
            for rel, record in entry.files.items():
                target = dst / rel
                target.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
                cow.clone(entry.path / rel, target, mode=record.mode)
                if content_digest(target) != record.digest:
                    shutil.rmtree(entry.path, ignore_errors=True)
                    raise CorruptEntry(f"{entry.path / rel} differs from its manifest: removed")
            os.utime(entry.path / MANIFEST)  # its last use, for eviction
            return entry

    def publish(
        self,
        name: str,
        src: Path,
        *,
        image: str,
        uses: Iterable[Path],
        overrides: Mapping[str, bytes] | None = None,
    ) -> bool:
        """Publish a copy of the directory ``src`` (``overrides``: files by relative name
        written instead) as entry ``name``, unless a complete one is there; True if this
        call published it. Replaces an incomplete entry; then evicts the least recently
        used entries of ``image`` beyond :data:`KEEP_PER_IMAGE`."""
        overrides = overrides or {}
        with self._cache.lock(name):
            if self.find(name) is not None:
                return False
            tmp_root = make_dir(self._cache.tmp)
            for stale in tmp_root.glob(f"{name}.*"):
                shutil.rmtree(stale, ignore_errors=True)
            work = Path(tempfile.mkdtemp(prefix=f"{name}.", dir=tmp_root))
            try:
                files = self._copy(src, work, overrides)
                manifest = {"image": image, "files": files, "uses": [str(p) for p in uses]}
                (work / MANIFEST).write_text(json.dumps(manifest, indent=2))
                final = self.root / name
                if final.exists():
                    log.warning("replacing the incomplete template cache entry %s", final)
                    shutil.rmtree(final)
                publish(work, final)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        self._evict(image)
        return True

    @staticmethod
    def _copy(src: Path, work: Path, overrides: Mapping[str, bytes]) -> dict[str, object]:
        files: dict[str, object] = {}
        for path in sorted(p for p in src.rglob("*") if p.is_file()):
            rel = str(path.relative_to(src))
            target = work / rel
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            mode = path.stat().st_mode & 0o777
            if rel in overrides:
                target.write_bytes(overrides[rel])
            else:
                cow.clone(path, target, mode=0o600)
            files[rel] = {
                "size": target.stat().st_size,
                "mode": mode,
                "digest": content_digest(target),
            }
        return files

    def remove(self, name: str) -> None:
        with self._cache.lock(name):
            shutil.rmtree(self.root / name, ignore_errors=True)
        log.info("removed template cache entry %s", name)

    def _evict(self, image: str) -> None:
        """Remove ``image``'s entries whose image files are gone, and the least recently
        used beyond :data:`KEEP_PER_IMAGE`."""
        mine = [e for e in self.entries() if e.image == image]
        gone = [e for e in mine if not _runnable(e)]
        alive = sorted(
            (e for e in mine if _runnable(e)), key=lambda e: _last_use(e.path), reverse=True
        )
        for entry in gone + alive[KEEP_PER_IMAGE:]:
            self.remove(entry.name)

    def prune(self) -> list[Path]:
        """Remove entries whose image files are gone (rebuilt images: keys no longer
        made) and those without a readable manifest; returns what went."""
        live = {e.name: e for e in self.entries()}
        removed = []
        if self.root.is_dir():
            for path in sorted(self.root.iterdir()):
                if path.name in _RESERVED or not path.is_dir():
                    continue
                entry = live.get(path.name)
                if entry is None or not _runnable(entry):
                    self.remove(path.name)
                    removed.append(path)
        return removed


def _last_use(path: Path) -> float:
    try:
        return (path / MANIFEST).stat().st_mtime
    except OSError:
        return 0.0
