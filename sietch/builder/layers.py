"""The layer cache: one qcow2 file per disk-changing build step, named by its cache key.

It lives in the state dir (``<state>/images``, on the XFS reflink image where
there is one), beside the sandboxes whose overlays become layers and with the
database whose image records name them: a prune knows every user of a layer.
``layers/<key>.qcow2`` holds what the build sandbox's disk
had changed since it booted, over the layer it booted from (its backing file,
an absolute path in the cache; ``<key>.json`` names it too). A layer is
written under a temp name and renamed into place, so a crash never leaves a
half one under a key. Imported OCI images are raw ext4 files here as well
(``<key>.ext4``). :meth:`LayerCache.prune` removes the files no image needs.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from sietch.storage import cow
from sietch.storage.publish import fsync_path

log = logging.getLogger(__name__)


class LayerCache:
    def __init__(self, root: Path) -> None:
        self.dir = root / "layers"
        self.tmp = root / "tmp"

    def prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o711)  # QEMU's user reads layers
        self.tmp.mkdir(parents=True, exist_ok=True, mode=0o700)

    def path(self, key: str, suffix: str = ".qcow2") -> Path:
        return self.dir / f"{key}{suffix}"

    def find(self, key: str) -> Path | None:
        for suffix in (".qcow2", ".ext4"):
            if (path := self.path(key, suffix)).exists():
                return path
        return None

    def put(self, key: str, disk: Path, parent: Path) -> Path:
        """Copy a stopped sandbox's disk overlay (backed by ``parent``) in as ``key``."""
        final = self.path(key)
        tmp = self.dir / f".tmp-{key}-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        if disk.stat().st_dev == self.dir.stat().st_dev:
            cow.clone(disk, tmp, mode=0o644)
        else:  # the sandboxes' XFS image and the cache: copy_file_range can't cross them
            shutil.copyfile(disk, tmp)
            tmp.chmod(0o644)
        fsync_path(tmp)
        self.path(key, ".json").write_text(json.dumps({"parent": str(parent)}))
        os.replace(tmp, final)
        return final

    def publish(self, key: str, built: Path) -> Path:
        """Move a built raw image (an OCI import) in as ``key``."""
        final = self.path(key, built.suffix)
        fsync_path(built)
        built.chmod(0o644)
        os.replace(built, final)
        return final

    def chain(self, top: Path) -> list[Path]:
        """``top`` and every layer below it, down to (and with) the base image file."""
        out = [top]
        while (meta := top.with_suffix(".json")).exists() and top.parent == self.dir:
            top = Path(json.loads(meta.read_text())["parent"])
            out.append(top)
        return out

    def workdir(self, prefix: str) -> Path:
        self.prepare()
        path = self.tmp / f"{prefix}-{os.urandom(4).hex()}"
        path.mkdir(mode=0o700)
        return path

    def prune(self, keep: Iterable[Path]) -> list[Path]:
        """Delete every layer not in ``keep`` (the chains of the images); returns them."""
        wanted = {Path(p) for p in keep}
        removed = []
        for path in sorted(self.dir.glob("*")):
            if path.suffix == ".json" or path in wanted:
                continue
            path.unlink(missing_ok=True)
            path.with_suffix(".json").unlink(missing_ok=True)
            removed.append(path)
        for leftover in self.tmp.glob("*"):  # builds that crashed
            shutil.rmtree(leftover, ignore_errors=True)
        return removed
