"""ext4 images written straight from a directory with ``mkfs.ext4 -d``: no loop mount, no root
needed for the image itself."""

from __future__ import annotations

import os
from pathlib import Path

from sietch.images._run import run

MiB = 1 << 20
MKFS_OPTIONS = ("-t", "ext4", "-b", "4096", "-E", "lazy_itable_init=0,lazy_journal_init=1")
"""Part of every image's hash. 4 KiB blocks even for small images (mke2fs would pick 1 KiB)."""


def tree_size(tree: Path) -> tuple[int, int]:
    """(bytes, inodes) an ext4 needs to hold ``tree``, with some slack."""
    used, inodes = 0, 64
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in dirnames + filenames:
            inodes += 1
            used += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    size = int(used * 1.15) + inodes * 256 + 8 * MiB
    return -(-size // MiB) * MiB, inodes


def mkfs(
    tree: Path,
    image: Path,
    size: int,
    *,
    label: str,
    journal: bool = True,
    inodes: int | None = None,
) -> Path:
    """Write ``tree`` into a new sparse ext4 ``image`` of ``size`` bytes.

    Inode tables are zeroed here rather than lazily by the guest kernel: its
    ``ext4lazyinit`` thread would otherwise write tens of MB into every
    sandbox's overlay after boot. The journal needs no zeroing: ``image`` is a
    new sparse file, whose unwritten blocks read as zeros anyway.
    """
    argv: list[str | Path] = ["mkfs.ext4", "-q", "-F", *MKFS_OPTIONS, "-L", label]
    if not journal:
        argv += ["-O", "^has_journal", "-m", "0"]
    if inodes is not None:
        argv += ["-N", str(inodes)]
    image.unlink(missing_ok=True)
    argv += ["-d", tree, image, f"{size // 1024}k"]
    run(argv, what=f"write the {label} ext4 image")
    return image
