"""Per-sandbox disks: a qcow2 overlay over a shared, never-written base image."""

from __future__ import annotations

import os
import struct
import subprocess
import threading
from collections import OrderedDict
from pathlib import Path

from sietch.errors import VMError

_BLOCK = 4096
_KEPT = 256
"""Empty overlays remembered, by format, size and the length of the backing file's name: a
few KiB each."""


class _Empty:
    """An empty overlay's bytes as ``qemu-img create`` wrote them: its length and the
    blocks that are not all zeros (the header, the backing file's name, the refcounts).

    They depend on the arguments only, and on the backing file's name only through its
    length (the header points at the name and says how long it is): every later overlay of
    the same format and size over a base whose name is as long (a snapshot's layers, all
    ``snap-<12 hex>.qcow2``) is written from here in microseconds, its own name put in,
    without the 7-60 ms process start that sat on every restore's, fork's and pool fill's
    path (a restore of a new snapshot, the user's path, still paid it).
    """

    def __init__(self, data: bytes) -> None:
        self.size = len(data)
        blocks = ((at, data[at : at + _BLOCK]) for at in range(0, len(data), _BLOCK))
        self.blocks = [(at, block) for at, block in blocks if block.strip(b"\0")]
        (self.name_at,) = struct.unpack_from(">Q", data, 8)  # the header's backing_file_offset

    def write(self, path: Path, backing: bytes) -> None:
        """Write the overlay, over ``backing`` (a name as long as the remembered one's)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.ftruncate(fd, self.size)  # the zeros as a hole, as qemu-img reads them
            for at, block in self.blocks:
                os.pwrite(fd, block, at)
            os.pwrite(fd, backing, self.name_at)
        finally:
            os.close(fd)


_empty: OrderedDict[tuple[int, str, int], _Empty] = OrderedDict()
_empty_lock = threading.Lock()


def create_overlay(base: Path, overlay: Path, size_mib: int, base_format: str = "raw") -> None:
    """Create ``overlay`` backed by ``base``; unchanged blocks stay shared.

    The virtual size may exceed the base's; the guest grows its filesystem.
    A restore chains a new overlay on a snapshot's frozen ``qcow2`` disk.
    """
    name = os.fsencode(base)
    key = (len(name), base_format, size_mib)
    with _empty_lock:
        known = _empty.get(key)
        if known is not None:
            _empty.move_to_end(key)
    if known is not None:
        if not (overlay.parent / base).exists():  # what qemu-img would have refused
            raise VMError(f"could not create disk {overlay}: no backing file {base}")
        known.write(overlay, name)
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
