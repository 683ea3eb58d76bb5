"""A reflink-capable home for sandbox and snapshot files where the state dir can't reflink.

The machine's own disk is ext4 (no reflink). As root we make a sparse file
``<state>/cow.xfs``, format it ``mkfs.xfs -m reflink=1`` and mount it on
``<state>/cow`` through a loop device with direct I/O (no second copy of every
page in the page cache). Measured here: cloning a 112 MiB RAM file takes
1.6 ms when its pages are clean and 52 ms when 100 MiB of them are dirty (the
clone writes them back first), against 95 ms for a plain copy on ext4; the
clones share their extents, so N snapshots cost what differs between them.

Everything stays inside the state directory: no host interface, fstab or
other mount is touched. Not root, or no loop device: the caller falls back
to plain copies and logs why.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from pathlib import Path

from sietch.errors import VMError

log = logging.getLogger(__name__)


def mounted_at(mountpoint: Path) -> str | None:
    """The device mounted on ``mountpoint``, or None."""
    target = str(mountpoint.resolve())
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 1 and fields[1] == target:
                    return fields[0]
    except OSError:
        pass
    return None


def _run(*argv: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise VMError(f"{' '.join(argv)} failed: {result.stderr.strip() or result.returncode}")
    return result.stdout.strip()


_MOUNT_ATTEMPTS = 3


def mount_image(image: Path, mountpoint: Path, size_gib: int) -> None:
    """Create (once) and mount an XFS reflink image; reuses a mount left by a crash."""
    mountpoint.mkdir(mode=0o711, exist_ok=True)
    if mounted_at(mountpoint) is not None:
        return
    if not image.exists():
        with open(image, "wb") as f:
            f.truncate(size_gib * 1024**3)
        os.chmod(image, 0o600)
        _run("mkfs.xfs", "-q", "-m", "reflink=1", str(image))
    # A lazily unmounted image whose files a VM still holds open keeps its loop device;
    # mount that one again: a second loop device of the same XFS is refused (same UUID).
    attached = _run("losetup", "--associated", str(image), "--noheadings", "--output", "NAME")
    if attached:
        _mount(attached.split()[0], mountpoint)
        return
    for attempt in range(_MOUNT_ATTEMPTS):
        loop = _run("losetup", "--find", "--show", "--direct-io=on", str(image))
        try:
            _mount(loop, mountpoint)
            return
        except VMError:
            subprocess.run(["losetup", "-d", loop], check=False, capture_output=True)
            if attempt == _MOUNT_ATTEMPTS - 1:
                raise
            # Another process took or is still releasing that loop device (a lazy
            # unmount frees it later): the next --find picks another one.
            time.sleep(0.2 * (attempt + 1))


def _mount(device: str, mountpoint: Path) -> None:
    _run("mount", "-t", "xfs", "-o", "nodev,nosuid", device, str(mountpoint))
    mountpoint.chmod(0o711)


def unmount(mountpoint: Path) -> None:
    """Unmount and free the loop device (lazily, so a straggling open file can't block it)."""
    device = mounted_at(mountpoint)
    if device is None:
        return
    _run("umount", "--lazy", str(mountpoint))
    if device.startswith("/dev/loop"):
        subprocess.run(["losetup", "-d", device], check=False, capture_output=True)
