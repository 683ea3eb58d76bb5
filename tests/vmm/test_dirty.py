"""The written pages of a private file mapping, read from a live process (no VM needed: any
process that maps a file MAP_PRIVATE and writes to it has the pages QEMU would)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sietch.vmm import dirty

PAGES = 700
WRITTEN = {3: b"a", 4: b"b", 5: b"c", 20: b"d", **dict.fromkeys(range(100, 400), b"f"), 699: b"e"}
"""Page number -> the byte that fills it in the child: four runs (3-5, 20, 100-399, 699),
one longer than a single read, so both threads of the copy have some."""
CHILD = f"""
import mmap, sys
with open(sys.argv[1], "r+b") as f:
    m = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE)
for page, fill in {WRITTEN!r}.items():
    m[page * {dirty.PAGE}:(page + 1) * {dirty.PAGE}] = fill * {dirty.PAGE}
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
