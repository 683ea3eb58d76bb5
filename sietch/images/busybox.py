"""The host's static busybox, which the initramfs, the tools disk and the minimal rootfs carry."""

from __future__ import annotations

import os
import shutil
import struct
from functools import lru_cache
from pathlib import Path

from sietch.errors import ImageBuildError
from sietch.images._run import run

_PT_INTERP = 3


def is_static(path: Path) -> bool:
    """True if the ELF file has no program interpreter (so it runs without any libc around)."""
    with open(path, "rb") as f:
        header = f.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2:  # 64-bit ELF only
            return False
        (phoff,) = struct.unpack_from("<Q", header, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", header, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(
        struct.unpack_from("<I", table, i * phentsize)[0] != _PT_INTERP for i in range(phnum)
    )


@lru_cache(maxsize=1)
def busybox() -> Path:
    """Path of a statically linked busybox (Debian's busybox-static); error if there is none."""
    for candidate in ("/bin/busybox", shutil.which("busybox")):
        if candidate and os.path.exists(candidate):
            path = Path(candidate).resolve()
            if is_static(path):
                return path
    raise ImageBuildError(
        "no static busybox found: install Debian's busybox-static (run ./bootstrap.sh install)"
    )


@lru_cache(maxsize=1)
def applets() -> tuple[str, ...]:
    """Where each applet belongs, relative to / ("bin/sh", "usr/bin/awk", "sbin/ip", ...)."""
    out = run([busybox(), "--list-full"], what="list the busybox applets")
    paths = (line.strip("/") for line in out.split())
    return tuple(p for p in paths if p and Path(p).name != "busybox")


def install_applets(root: Path, flat: str | None = None) -> None:
    """Symlink every applet to busybox inside ``root``.

    With ``flat`` ("bin") all links go into that one directory next to
    ``root/flat/busybox``; otherwise each goes where ``--list-full`` puts it and
    points at ``/bin/busybox``. Existing files are left alone.
    """
    for applet in applets():
        if flat is not None:
            link, target = root / flat / Path(applet).name, "busybox"
        else:
            link, target = root / applet, "/bin/busybox"
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists() and not link.is_symlink():
            link.symlink_to(target)
