"""Importing ``docker save`` tarballs and OCI image layouts as Sietch images.

The archive is unpacked (safely: :mod:`sietch.builder.safetar`) into a work
dir of the image cache; its manifest names the config and the layers, which
are applied in order into one tree, honouring whiteouts (``.wh.NAME`` removes
NAME from the layers below, ``.wh..wh..opq`` empties its directory of them);
the tree becomes a raw ext4 in the layer cache, keyed by the layers' and the
config's content. The config's ``Env``, ``WorkingDir``, ``User``,
``Entrypoint``/``Cmd`` and ``ExposedPorts`` become the image's config. The
agent needs nothing from the image, so any Linux image boots.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sietch.builder import safetar
from sietch.builder.engine import Builder, Emit
from sietch.config import MiB
from sietch.core.models import DEFAULT_TENANT, ImageConfig, ImageRecord
from sietch.errors import InvalidArgument
from sietch.images.ext4 import mkfs, tree_size
from sietch.images.rootfs import LABEL

_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
_MOUNT_POINTS = ("proc", "sys", "dev", "run", "tmp")
_MAX_BYTES = 32 << 30
_MEDIA_INDEX = ("application/vnd.oci.image.index.v1+json",
                "application/vnd.docker.distribution.manifest.list.v2+json")  # fmt: skip


def _json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"not an image archive: cannot read its {what} ({exc})") from None


def _blob(root: Path, digest: str) -> Path:
    algo, _, hexdigest = digest.partition(":")
    if algo != "sha256" or not hexdigest.isalnum():
        raise InvalidArgument(f"unsupported digest {digest!r}")
    return root / "blobs" / algo / hexdigest


def read_layout(root: Path) -> tuple[dict[str, Any], list[Path]]:
    """The image config and the layer files, bottom first, of an unpacked archive."""
    if (root / "manifest.json").is_file():  # docker save
        manifest = _json(root / "manifest.json", "manifest.json")
        if not isinstance(manifest, list) or not manifest:
            raise InvalidArgument("manifest.json lists no image")
        entry = manifest[0]
        config = _json(root / safetar.clean_name(entry["Config"]), "config")
        return config, [root / safetar.clean_name(layer) for layer in entry["Layers"]]
    if (root / "index.json").is_file():  # OCI image layout
        desc = _json(root / "index.json", "index.json")["manifests"][0]
        manifest = _json(_blob(root, desc["digest"]), "manifest")
        while manifest.get("mediaType") in _MEDIA_INDEX or "manifests" in manifest:
            wanted = [m for m in manifest["manifests"]
                      if m.get("platform", {}).get("architecture", "amd64") == "amd64"]  # fmt: skip
            if not wanted:
                raise InvalidArgument("the image index has no linux/amd64 image")
            manifest = _json(_blob(root, wanted[0]["digest"]), "manifest")
        config = _json(_blob(root, manifest["config"]["digest"]), "config")
        return config, [_blob(root, layer["digest"]) for layer in manifest["layers"]]
    raise InvalidArgument("not an image archive: no manifest.json (docker save) or index.json")


def image_config(config: dict[str, Any]) -> ImageConfig:
    c = config.get("config") or {}
    env = dict(e.partition("=")[::2] for e in c.get("Env") or [])
    user = (c.get("User") or "").partition(":")[0] or None
    ports = sorted(int(p.partition("/")[0]) for p in (c.get("ExposedPorts") or {})
                   if p.endswith("/tcp") or "/" not in p)  # fmt: skip
    start = [*(c.get("Entrypoint") or []), *(c.get("Cmd") or [])] or None
    return ImageConfig(
        env=env,
        user=user,
        workdir=c.get("WorkingDir") or None,
        start=start,
        expose=ports,
        labels=dict(c.get("Labels") or {}),
    )


def apply_layer(layer: Path, tree: Path) -> None:
    """Unpack one layer over ``tree``: its whiteouts remove what the layers below had."""
    written: set[Path] = set()

    def hook(member: Any, path: Path) -> bool:
        name = path.name
        if name == _OPAQUE:
            if path.parent.is_dir():
                for child in path.parent.iterdir():
                    if child not in written:
                        _remove(child)
            return False
        if name.startswith(_WHITEOUT):
            _remove(path.with_name(name[len(_WHITEOUT) :]))
            return False
        written.add(path)
        return True

    with open(layer, "rb") as f:
        safetar.extract(f, tree, owners=True, hook=hook, max_bytes=_MAX_BYTES)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _import(archive: Path, work: Path, builder: Builder) -> tuple[Path, ImageConfig, str, int]:
    unpacked = work / "archive"
    with open(archive, "rb") as f:
        safetar.extract(f, unpacked, max_bytes=_MAX_BYTES)
    config, layers = read_layout(unpacked)
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for layer in layers:
        with open(layer, "rb") as f:
            h.update(hashlib.file_digest(f, "sha256").digest())
    key = "oci-" + h.hexdigest()[:28]
    cached = builder.layers.find(key)
    if cached is None:
        tree = work / "tree"
        tree.mkdir()
        for layer in layers:
            apply_layer(layer, tree)
        for d in _MOUNT_POINTS:
            (tree / d).mkdir(exist_ok=True)
        (tree / "tmp").chmod(0o1777)
        size, inodes = tree_size(tree)
        size = max(size * 2, size + 256 * MiB)  # room to write in
        built = mkfs(tree, work / f"{key}.ext4", size, label=LABEL, inodes=inodes * 2)
        cached = builder.layers.publish(key, built)
    return cached, image_config(config), key, len(layers)


async def import_image(
    builder: Builder, name: str, archive: Path, emit: Emit, tenant: str = DEFAULT_TENANT
) -> ImageRecord:
    """Import the archive at ``archive`` as ``tenant``'s image ``name`` (its template made)."""
    builder.claim(name, tenant)
    await asyncio.to_thread(builder.layers.prepare)
    work = await asyncio.to_thread(builder.layers.workdir, "import")
    try:
        rootfs, config, key, count = await asyncio.to_thread(_import, archive, work, builder)
    finally:
        await asyncio.to_thread(shutil.rmtree, work, True)
    record = ImageRecord(
        name=name,
        source="oci",
        base="oci",
        key=key,
        rootfs=str(rootfs),
        format="raw",
        layers=[str(rootfs)],
        disk_mib=math.ceil(rootfs.stat().st_size / MiB),
        size_bytes=rootfs.stat().st_blocks * 512,
        steps=[f"import {count} layers"],
        created_at=datetime.now(UTC),
        config=config,
        tenant=tenant,
    )
    async with builder.lock(name):
        return await builder.publish(record, emit)
