"""Read a new snapshot's memory into the page cache before a restore of it needs it.

A snapshot's memory file is a new file (a reflink of its parent's, or of the VM's own RAM
file): shared extents or not, its page cache starts empty, and its first restore read the
guest's pages from disk as the guest faulted on them (22-24 major faults, 66-70 MiB for a
template-created sandbox's snapshot; 24-27, 92-96 MiB for a cold-booted one's), a second
restore of the same snapshot none. So a snapshot of a restored VM, once published, has the
kernel read the ranges of the file its VM had read in (:func:`sietch.vmm.dirty.read_runs`:
what the guest used, which its restored copy uses first; the pages it wrote are in the new
file's cache already, the copy wrote them there) while the VM runs on. A restore of it then
finds them cached; one whose cache went (memory pressure) reads as before.

Measured here (QEMU 10.0.2, TCG, 2 vCPUs Xeon, quiet, 2026-12-03; ten alternated rounds,
median, readahead on / off), a template-created sandbox with 64 MiB written, snapshotted,
then restored to a first exec: right away 270 / 283 ms (the restore call 184 / 197), 0.3 s
later 248 / 297 ms (166 / 210); the snapshot itself 76 / 78 ms. Reading the 56 MiB takes
~55 ms (one thread or eight: the disk's bandwidth), so a restore right after gets only part
of it. ``bench/snapshots.py``, two runs each: ``user_restore_median_ms`` 252-261 against
298-304. Only for a VM restored from a snapshot: a cold-booted one has all it ever touched
in memory (100-170 MiB), more than a restore reads, and reading it all made the restore
right after slower (``restore_median_ms`` 395-398 against 364-368).

Tried and not kept: asking for the ranges as the restore starts (292 / 295 ms: the guest
waits for the same reads), and starting them while the VM is stopped (restore 250 / 291 ms,
but the snapshot 106 / 81 ms, and a cold-booted one's 80 / 13 ms: its fsyncs waited behind
the reads in the disk's queue).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from sietch.vmm import dirty

GAP = 64 * 1024
"""Ranges this close are read as one: fewer calls for a little more read."""

Range = tuple[int, int]
"""(file offset, bytes)."""


def coalesce(ranges: Iterable[Range], gap: int = GAP) -> list[Range]:
    """``ranges`` sorted, with those at most ``gap`` apart merged."""
    merged: list[Range] = []
    for offset, length in sorted(ranges):
        if merged and offset <= merged[-1][0] + merged[-1][1] + gap:
            start, size = merged[-1]
            merged[-1] = (start, max(size, offset + length - start))
        else:
            merged.append((offset, length))
    return merged


def used(pid: int, ram: Path) -> list[Range]:
    """The ranges of ``ram`` that ``pid`` has read into its mapping of it and not written
    over. OSError when QEMU's pagemap can't be read."""
    spans = dirty.mappings(pid, ram)
    pagemap = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY | os.O_CLOEXEC)
    try:
        return coalesce(
            (span.offset + first * dirty.PAGE, count * dirty.PAGE)
            for span in spans
            for first, count in dirty.read_runs(pagemap, span)
        )
    finally:
        os.close(pagemap)


def window(fd: int) -> int:
    """Bytes one ``POSIX_FADV_WILLNEED`` reads at most: the kernel caps each call at the
    readahead window of the file's device (``read_ahead_kb``, 128 KiB by default) and
    silently drops the rest."""
    dev = os.fstat(fd).st_dev
    try:
        kib = int(Path(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb").read_text())
    except (OSError, ValueError):
        kib = 0
    return max(kib, 128) * 1024


def prefetch(path: Path, ranges: Iterable[Range]) -> int:
    """Have the kernel read ``ranges`` of ``path`` into its page cache (it queues the reads:
    this returns about when the last one is under way); returns the bytes asked for."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    asked = 0
    try:
        step = window(fd)
        for offset, length in ranges:
            for at in range(offset, offset + length, step):
                os.posix_fadvise(fd, at, min(step, offset + length - at), os.POSIX_FADV_WILLNEED)
            asked += length
    finally:
        os.close(fd)
    return asked
