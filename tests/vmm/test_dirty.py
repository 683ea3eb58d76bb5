"""The written and the used pages of a private file mapping, read from a live process (no VM
needed: any process that maps a file MAP_PRIVATE, reads and writes it has the pages QEMU
would), and the record of the used ones a restore reads ahead."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sietch.vmm import dirty, readahead

PAGES = 2048
WRITTEN = {3: b"a", 4: b"b", 5: b"c", 20: b"d", **dict.fromkeys(range(100, 400), b"f"), 699: b"e"}
"""Page number -> the byte that fills it in the child: four runs (3-5, 20, 100-399, 699),
one longer than a single read, so both threads of the copy have some."""
READ = range(500, 520)
"""Pages the child only reads: in memory, still the file's."""
UNUSED = range(1024, PAGES)
"""Pages nobody touches: in 2 MiB-aligned blocks of their own, so that no page cache folio
(at most 2 MiB, aligned) holds one of them with a touched page; a read fault maps a whole
folio of the file on recent kernels, and fault-around its neighbours."""
CHILD = f"""
import mmap, sys
with open(sys.argv[1], "r+b") as f:
    m = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE)
for page, fill in {WRITTEN!r}.items():
    m[page * {dirty.PAGE}:(page + 1) * {dirty.PAGE}] = fill * {dirty.PAGE}
for page in {READ!r}:
    m[page * {dirty.PAGE}]
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def child(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A process mapping a file of zero pages privately, with :data:`WRITTEN` written."""
    ram = tmp_path / "ram"
    ram.write_bytes(bytes(PAGES * dirty.PAGE))
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(ram)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
            yield proc.pid, ram
        finally:
            proc.kill()


def expected() -> bytes:
    pages = [WRITTEN.get(n, b"\0") * dirty.PAGE for n in range(PAGES)]
    return b"".join(pages)


def test_written_pages_land_at_their_offsets(child: tuple[int, Path], tmp_path: Path) -> None:
    """The copy becomes the child's view of the file: its written pages, and only those."""
    pid, ram = child
    dest = tmp_path / "dest"
    dest.write_bytes(ram.read_bytes())
    assert dirty.copy_written(pid, ram, dest) == len(WRITTEN) * dirty.PAGE
    assert dest.read_bytes() == expected()


def pages(ranges: list[tuple[int, int]]) -> set[int]:
    return {
        n
        for offset, size in ranges
        for n in range(offset // dirty.PAGE, (offset + size) // dirty.PAGE)
    }


def test_the_pages_read_are_what_a_restore_reads_ahead(child: tuple[int, Path]) -> None:
    """The ranges cover every page the child only read, none it left alone, and none it
    wrote over (those are the new memory file's own, in its cache already)."""
    pid, ram = child
    used = readahead.used(pid, ram)
    assert pages(used) >= set(READ)
    assert not pages(used) & set(UNUSED)
    assert not pages(used) & set(range(120, 380)), "pages written over are not the file's"


def test_the_readahead_asks_for_every_byte_within_the_kernels_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel reads at most one readahead window per call and drops the rest without a
    word: every call stays within it, and together they cover the ranges exactly."""
    memory = tmp_path / "memory"
    memory.write_bytes(bytes(64 * dirty.PAGE))
    with open(memory, "rb") as f:
        window = readahead.window(f.fileno())
    assert window >= 128 * 1024
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(
        os, "posix_fadvise", lambda fd, offset, size, advice: calls.append((offset, size))
    )
    ranges = [(0, 2 * window + dirty.PAGE), (3 * window, dirty.PAGE)]
    assert readahead.prefetch(memory, ranges) == 2 * window + 2 * dirty.PAGE
    assert all(size <= window for _, size in calls)
    assert readahead.coalesce(calls, gap=0) == readahead.coalesce(ranges, gap=0)
    assert len(calls) == 4


def test_ranges_close_together_are_read_as_one() -> None:
    page = dirty.PAGE
    assert readahead.coalesce([(10 * page, page), (0, 2 * page), (2 * page, page)], gap=0) == [
        (0, 3 * page),
        (10 * page, page),
    ]
    assert readahead.coalesce([(0, page), (3 * page, page)], gap=2 * page) == [(0, 4 * page)]
    assert readahead.coalesce([(0, 4 * page), (page, page)], gap=0) == [(0, 4 * page)]
