"""``FROM debian:bookworm`` and ``debian:bookworm-slim``: Debian bases made with mmdebstrap.

Sietch pulls from no registry: these two names are built on the host, once,
from the same Debian sources as the built-in images (``minbase``; ``-slim``
without documentation and translations, as Docker's slim image), and kept as
a raw ext4 in the layer cache under the hash of what went into them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sietch.builder.layers import LayerCache
from sietch.builder.steps import chain_key
from sietch.images.debootstrap import NO_DOCS, SOURCES, SUITE, mmdebstrap
from sietch.images.ext4 import MKFS_OPTIONS, MiB, mkfs, tree_size
from sietch.images.rootfs import LABEL

BASES = {
    f"debian:{SUITE}": (),
    f"debian:{SUITE}-slim": NO_DOCS,
    "debian:12": (),
    "debian:12-slim": NO_DOCS,
}
"""The Debian names a Dockerfile may build FROM, with their dpkg filters."""
_ROOM = 512 * MiB
"""Free space in the base for what the build installs (a build's --disk-mib adds more)."""
_FORMAT = 1


def base(name: str, layers: LayerCache) -> Path:
    """The ext4 of the Debian base ``name``, built on first use (root: file ownership)."""
    filters = BASES[name]
    key = "debian-" + chain_key(str(_FORMAT), SUITE, *SOURCES, *filters, *MKFS_OPTIONS)
    if (found := layers.find(key)) is not None:
        return found
    work = layers.workdir("debian")
    try:
        tree = mmdebstrap(work / "tree", (), dpkg_options=filters)
        (tree / "etc" / "hostname").write_text("sietch\n")
        size, inodes = tree_size(tree)
        built = mkfs(tree, work / f"{key}.ext4", size + _ROOM, label=LABEL, inodes=inodes * 4)
        return layers.publish(key, built)
    finally:
        shutil.rmtree(work, ignore_errors=True)
