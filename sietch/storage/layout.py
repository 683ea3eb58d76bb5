"""Where sandbox and snapshot files live under the state directory.

``<state>/sandboxes/<id>/`` holds a running sandbox's work files (disk
overlay, RAM file, sockets, logs); ``<state>/snapshots/<id>/`` holds
immutable snapshots. Snapshots freeze a sandbox's files by copying them, so
both belong on a filesystem that can reflink (see :mod:`sietch.storage.xfs`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sietch.errors import SietchError, VMError
from sietch.storage import cow, xfs

log = logging.getLogger(__name__)


class StateLayout:
    """The sandbox and snapshot directories, and the XFS image under them if we mounted one."""

    def __init__(self, state_dir: Path, cow_image_gib: int) -> None:
        self.state_dir = state_dir
        self.cow_image_gib = cow_image_gib
        self.sandboxes = state_dir / "sandboxes"
        self.snapshots = state_dir / "snapshots"
        self.images = state_dir / "images"
        """User images' disk layers (``sietch.builder``): beside the sandboxes whose disk
        overlays become them, so a layer is a reflink, and with the database naming them."""
        self.mounted = False
        self.reflink = False
        """Whether snapshot copies share extents (measured by a probe, not guessed)."""

    def prepare(self, run_as: tuple[int, int] | None) -> None:
        """Put sandboxes and snapshots where files can reflink, and make both directories.

        A state dir that already holds sandboxes keeps its layout; a new one on a
        filesystem without reflink gets the XFS image when we are root, and
        ``<state>/sandboxes`` and ``<state>/snapshots`` become symlinks into it,
        so every path (QEMU command lines, orphan markers) stays what it was.
        """
        state = self.state_dir
        state.mkdir(parents=True, exist_ok=True)
        cow_dir = state / "cow"
        legacy = self.sandboxes.is_dir() and not self.sandboxes.is_symlink()
        wanted = (
            self.cow_image_gib > 0
            and os.geteuid() == 0
            and not legacy
            and not cow.can_reflink(state)
        )
        if wanted and xfs.mounted_at(cow_dir) is None:
            try:
                xfs.mount_image(state / "cow.xfs", cow_dir, self.cow_image_gib)
                self.mounted = True
            except SietchError as exc:
                log.warning("no XFS reflink image, snapshots will copy files: %s", exc)
        elif wanted:
            self.mounted = True  # left mounted by an earlier run that crashed
        if xfs.mounted_at(cow_dir) is not None:
            for link in (self.sandboxes, self.snapshots, self.images):
                (cow_dir / link.name).mkdir(mode=0o711, exist_ok=True)
                if not link.is_symlink():
                    link.symlink_to(cow_dir / link.name)
        for path in (self.sandboxes, self.snapshots, self.images):
            if path.is_symlink() and not path.exists():
                # Its sandboxes and snapshots are inside the image: making new empty
                # directories here would hide them and lose track of their VMs.
                raise VMError(
                    f"{path} points into the XFS image {state / 'cow.xfs'}, which is not "
                    "mounted and could not be mounted (see the warning above); mount it "
                    f"on {cow_dir} or free a loop device, then start again"
                )
            path.mkdir(parents=True, exist_ok=True)
        if run_as is not None:
            # QEMU runs as another user: it must be able to reach its work dir.
            for path in (state, self.sandboxes):
                path.chmod(path.stat().st_mode | 0o111)
            self.snapshots.chmod(0o711)
            self.images.chmod(0o711)
        self.reflink = cow.can_reflink(self.snapshots)
        if not self.reflink:
            log.warning(
                "%s cannot reflink: snapshots copy RAM and disk files (no shared extents)",
                self.snapshots,
            )

    def release(self) -> None:
        """Unmount the XFS image we mounted (only once no VM of ours uses it)."""
        if self.mounted:
            self.mounted = False
            xfs.unmount(self.state_dir / "cow")
