"""A user image copied to another node: built once, used anywhere in a cluster.

What goes over is what the image's disk needs that a node does not have by itself: its
record (``image.json``) and its layers in the layer cache (each with the ``.json`` that
names its parent), down to, not with, the built-in image at the bottom (every node
builds those itself from the same recipe, under the same content-hashed name). Layers
are named by their cache key, so a layer the receiver already has is kept as it is.

Layers name their parent by absolute path, which is the sender's layer directory: the
receiver points each at its own (``qemu-img rebase -u``, header only) before it
publishes it. The receiver's first create of the image then cold-boots it once and
saves its template there, as a build's last step does. A snapshot of a sandbox of the
image, copied to a node, has the image copied first, and its bottom layer pointed the
same way (:func:`point_at_local_layers`).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from sietch.builder.layers import LayerCache
from sietch.core.manager import Manager
from sietch.core.models import ImageRecord
from sietch.core.transfer import Files
from sietch.errors import ImageNotFound, InvalidArgument, SietchError
from sietch.storage.publish import fsync_path

RECORD = "image.json"


def _cache(manager: Manager) -> LayerCache:
    return LayerCache(manager.layout.images)


def image_files(manager: Manager, name: str) -> Files:
    """What a copy of the ready user image ``name`` carries."""
    record = manager.store.get_image(name)
    if record is None or not record.ready:
        raise ImageNotFound(f"no user image {name!r} here")
    layers = _cache(manager).dir
    files: Files = [(RECORD, record.model_dump_json().encode())]
    for layer in map(Path, record.layers):
        if layer.parent != layers:
            continue  # the built-in image below: every node has its own
        files.append((layer.name, layer))
        if (meta := layer.with_suffix(".json")).exists():
            files.append((meta.name, meta))
    return files


def receiving_dir(manager: Manager) -> Path:
    """A new temp directory for a copy to arrive in, beside the layers it will join."""
    return _cache(manager).workdir("fetch")


def adopt_image(manager: Manager, tmp: Path) -> ImageRecord:
    """Publish an image copied into ``tmp``: its layers into this node's cache, pointed at
    their parents here, then its record, ready (a create may use it at once)."""
    record = ImageRecord.model_validate_json((tmp / RECORD).read_text())
    cache = _cache(manager)
    cache.prepare()
    here = {p.name: cache.dir / p.name for p in tmp.iterdir() if p.name != RECORD}

    def local(path: str) -> str:
        return str(here.get(Path(path).name, Path(path)))

    for name, final in here.items():
        if final.suffix == ".json" or final.exists():
            continue
        source = tmp / name
        meta = source.with_suffix(".json")
        if meta.exists():
            parent = Path(local(json.loads(meta.read_text())["parent"]))
            _rebase(source, parent)
            (cache.dir / meta.name).write_text(json.dumps({"parent": str(parent)}))
        source.chmod(0o644)  # QEMU's user reads layers
        fsync_path(source)
        os.replace(source, final)
    record.rootfs = local(record.rootfs)
    record.layers = [local(p) for p in record.layers]
    old = manager.store.get_image(record.name)
    if old is not None and old.tenant != record.tenant:
        raise InvalidArgument(f"image {record.name!r} here belongs to another tenant")
    manager.store.put_image(record)
    return record


def lacks_image(manager: Manager, name: str) -> bool:
    """Whether ``name`` is a user image this node does not hold (every node has the
    built-ins)."""
    return name not in manager.images.names() and manager.store.get_image(name) is None


def point_at_local_layers(manager: Manager, directory: Path) -> None:
    """Point the disk layers of a snapshot copied from another node that name a user
    image's layer by that node's path at this node's copy of it (the same name: its
    cache key). The snapshot's own layers name each other relatively and stay."""
    cache = _cache(manager).dir
    for layer in directory.rglob("*.qcow2"):
        backing = _backing(layer)
        if backing is None or not backing.is_absolute() or backing.parent == cache:
            continue
        # Even where the other node's file can be read (nodes sharing a machine), it is
        # that node's to delete: the copy must stand on this node's own.
        if (local := cache / backing.name).exists():
            _rebase(layer, local)


def _backing(layer: Path) -> Path | None:
    done = subprocess.run(
        ["qemu-img", "info", "--output=json", str(layer)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SietchError(f"could not read layer {layer.name}: {done.stderr.strip()}")
    backing = json.loads(done.stdout).get("backing-filename")
    return Path(backing) if backing else None


def _rebase(layer: Path, parent: Path) -> None:
    """Point ``layer``'s qcow2 header at ``parent`` (its contents are unchanged)."""
    fmt = "qcow2" if parent.suffix == ".qcow2" else "raw"
    done = subprocess.run(
        ["qemu-img", "rebase", "-u", "-b", str(parent), "-F", fmt, str(layer)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SietchError(f"could not point layer {layer.name} at {parent}: {done.stderr.strip()}")
