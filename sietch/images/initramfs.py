"""The initramfs: busybox, the virtio modules and the ``init`` script next to this module.

Written as an uncompressed newc cpio by Python itself: no root (device nodes
need none), byte-for-byte reproducible, and nothing to decompress on the boot
path: under TCG the gzip'd one (1.2 MB instead of 2.5 MB) booted no faster
(median QEMU CPU time to python 3.8 s vs 3.5 s uncompressed, 4 boots each).
"""

from __future__ import annotations

import logging
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import BinaryIO

from sietch.errors import ImageBuildError
from sietch.images._cache import digest, file_digest
from sietch.images.busybox import applets, busybox
from sietch.images.kernel import Kernel
from sietch.images.progress import Progress

log = logging.getLogger(__name__)

MODULES = (
    "virtio_ring",
    "virtio",
    "virtio_mmio",
    "virtio_blk",
    "virtio_console",
    "failover",
    "net_failover",
    "virtio_net",
    "virtio-rng",  # hw_random core is built in (CONFIG_HW_RANDOM=y); checked below
)
"""Loaded in this order: each one's dependencies come before it."""
_FORMAT = 1


def init_script() -> bytes:
    """The ``/init`` shipped in the package (sietch/images/initramfs/init)."""
    return resources.files("sietch.images").joinpath("initramfs/init").read_bytes()


def initramfs_key(kernel: Kernel) -> str:
    """Hash of everything in the initramfs: kernel, module list, busybox, init script."""
    return digest(
        "initramfs", _FORMAT, kernel.package, kernel.version, MODULES,
        file_digest(busybox()), init_script(),
    )  # fmt: skip


def _modinfo(ko: Path) -> dict[str, str]:
    """The key=value strings of a module's .modinfo section (found by pattern, no ELF parse)."""
    data = ko.read_bytes()
    return {
        m.group(1).decode(): m.group(2).decode(errors="replace")
        for m in re.finditer(rb"(?<=\x00)(depends|name|vermagic)=([^\x00]*)", data)
    }


def select_modules(kernel: Kernel) -> list[Path]:
    """The .ko files to load, in order; built-in ones left out. Errors if one is missing
    or would be loaded before a module it needs."""
    builtin_file = kernel.modules / "modules.builtin"
    builtin = {
        Path(line).name.removesuffix(".ko").replace("-", "_")
        for line in (builtin_file.read_text().split() if builtin_file.exists() else [])
    }
    by_name = {ko.name.removesuffix(".ko"): ko for ko in (kernel.modules / "kernel").rglob("*.ko")}
    chosen: list[Path] = []
    loaded = set(builtin)
    for name in MODULES:
        key = name.replace("-", "_")
        if key in builtin:
            log.debug("%s is built into %s", name, kernel.release)
            continue
        ko = by_name.get(name) or by_name.get(key)
        if ko is None:
            raise ImageBuildError(f"kernel {kernel.release} has no module {name} (nor built in)")
        needs = {d.replace("-", "_") for d in _modinfo(ko).get("depends", "").split(",") if d}
        if needs - loaded:
            raise ImageBuildError(
                f"module {name} of {kernel.release} needs {', '.join(sorted(needs - loaded))}, "
                "which MODULES does not load before it"
            )
        loaded.add(key)
        chosen.append(ko)
    return chosen


@dataclass(frozen=True)
class _Entry:
    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


class _CpioWriter:
    """newc ("070701") cpio archive, the format the kernel unpacks."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.ino = 0

    def add(self, e: _Entry) -> None:
        self.ino += 1
        name = e.name.encode() + b"\x00"
        fields = (
            self.ino, e.mode, 0, 0, 2 if stat.S_ISDIR(e.mode) else 1, 0, len(e.data),
            0, 0, e.rdev[0], e.rdev[1], len(name), 0,
        )  # fmt: skip
        header = b"070701" + b"".join(b"%08x" % f for f in fields)
        self._write(header + name)
        self._write(e.data)

    def _write(self, data: bytes) -> None:
        self.out.write(data)
        self.out.write(b"\x00" * (-len(data) % 4))

    def close(self) -> None:
        self.add(_Entry("TRAILER!!!", 0))


def _entries(kernel: Kernel) -> Iterable[_Entry]:
    for d in ("bin", "dev", "lib", "lib/modules", "newroot", "proc", "run", "sys"):
        yield _Entry(d, stat.S_IFDIR | 0o755)
    yield _Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
    yield _Entry("bin/busybox", stat.S_IFREG | 0o755, busybox().read_bytes())
    for applet in sorted({Path(a).name for a in applets()}):
        yield _Entry(f"bin/{applet}", stat.S_IFLNK | 0o777, b"busybox")
    for i, ko in enumerate(select_modules(kernel)):
        yield _Entry(f"lib/modules/{i:02d}-{ko.name}", stat.S_IFREG | 0o644, ko.read_bytes())
    yield _Entry("init", stat.S_IFREG | 0o755, init_script())


def build_initramfs(kernel: Kernel, work: Path, progress: Progress) -> Path:
    """Write the initramfs into ``work``; returns the cpio file."""
    progress("initramfs: writing cpio", None)
    out = work / "initramfs.cpio"
    with open(out, "wb") as f:
        writer = _CpioWriter(f)
        for entry in _entries(kernel):
            writer.add(entry)
        writer.close()
    log.info("initramfs for %s: %d bytes", kernel.release, out.stat().st_size)
    return out
