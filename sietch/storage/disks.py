"""Per-sandbox disks: a qcow2 overlay over a shared, never-written base image."""

from __future__ import annotations

import os
import subprocess
import threading
from collections import OrderedDict
from pathlib import Path

from sietch.errors import VMError

_BLOCK = 4096
_KEPT = 256
"""Empty overlays remembered, by ``qemu-img create``'s arguments: a few KiB each."""


class _Empty:
    """An empty overlay's bytes as ``qemu-img create`` wrote them: its length and the
    blocks that are not all zeros (the header, the backing file's name, the refcounts).

    They depend on the arguments only, so every later overlay of the same base, format
    and size is written from here in microseconds, without the 10-60 ms process start
    that sat on every restore's, fork's and pool fill's path.
    """

    def __init__(self, data: bytes) -> None:
        self.size = len(data)
        blocks = ((at, data[at : at + _BLOCK]) for at in range(0, len(data), _BLOCK))
        self.blocks = [(at, block) for at, block in blocks if block.strip(b"\0")]

    def write(self, path: Path) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.ftruncate(fd, self.size)  # the zeros as a hole, as qemu-img reads them
            for at, block in self.blocks:
                os.pwrite(fd, block, at)
        finally:
            os.close(fd)


_empty: OrderedDict[tuple[str, str, int], _Empty] = OrderedDict()
_empty_lock = threading.Lock()


def create_overlay(base: Path, overlay: Path, size_mib: int, base_format: str = "raw") -> None:
    """Create ``overlay`` backed by ``base``; unchanged blocks stay shared.

    The virtual size may exceed the base's; the guest grows its filesystem.
    A restore chains a new overlay on a snapshot's frozen ``qcow2`` disk.
    """
    key = (str(base), base_format, size_mib)
    with _empty_lock:
        known = _empty.get(key)
        if known is not None:
            _empty.move_to_end(key)
    if known is not None:
        if not (overlay.parent / base).exists():  # what qemu-img would have refused
            raise VMError(f"could not create disk {overlay}: no backing file {base}")
        known.write(overlay)
        return
    _qemu_img_create(base, overlay, size_mib, base_format)
    made = _Empty(overlay.read_bytes())
    with _empty_lock:
        _empty[key] = made
        while len(_empty) > _KEPT:
            _empty.popitem(last=False)


def _qemu_img_create(base: Path, overlay: Path, size_mib: int, base_format: str) -> None:
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
