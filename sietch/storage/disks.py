"""Per-sandbox disks: a qcow2 overlay over a shared, never-written base image."""

from __future__ import annotations

import subprocess
from pathlib import Path

from sietch.errors import VMError


def create_overlay(base: Path, overlay: Path, size_mib: int, base_format: str = "raw") -> None:
    """Create ``overlay`` backed by ``base``; unchanged blocks stay shared.

    The virtual size may exceed the base's; the guest grows its filesystem.
    A restore chains a new overlay on a snapshot's frozen ``qcow2`` disk.
    """
    result = subprocess.run(
        [
            "qemu-img", "create", "-q", "-f", "qcow2",
            "-o", "cluster_size=65536,lazy_refcounts=on",
            "-b", str(base), "-F", base_format,
            str(overlay), f"{size_mib}M",
        ],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise VMError(f"could not create disk {overlay}: {result.stderr.strip()}")


def image_size(path: Path) -> int:
    """Virtual size of a raw image in bytes."""
    return path.stat().st_size
