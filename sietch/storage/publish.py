"""Atomic publication: a file or directory gets its final name only once it is complete.

Writers build under a temp name next to (or in the same filesystem as) the
final one, then call :func:`publish`: it makes the contents durable, renames
them onto the final name in one step and syncs the parent, so a crash at any
moment leaves either nothing or the complete thing under the final name. The
image cache and snapshots both publish this way.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (a rename is durable once its directory is synced)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_tree(path: Path, many_files: bool) -> None:
    if not path.is_dir():
        fsync_path(path)
    elif many_files:
        os.sync()  # thousands of files (kernel modules): one sync beats an fsync each
    else:
        # Not os.sync(): that would also write back every running VM's dirty RAM file.
        for root, _dirs, files in os.walk(path, topdown=False):
            for name in files:
                fsync_path(Path(root, name))
            fsync_path(Path(root))


def publish(src: Path, final: Path, *, many_files: bool = False) -> None:
    """Make ``src`` (a file or a directory) durable, then rename it onto ``final``.

    ``many_files`` syncs the whole system instead of each file: cheaper for a
    tree of thousands of files, dearer when other writers have dirty pages.
    """
    _sync_tree(src, many_files)
    os.replace(src, final)
    fsync_path(final.parent)
