"""C.UTF-8 in a locale archive in the Debian images, so that loading it is one mapping.

Every command the agent starts has ``LANG=C.UTF-8``. With no
``/usr/lib/locale/locale-archive`` (Debian's minbase has none: only the ``locales``
package makes one), each program that calls ``setlocale`` (bash, python3, coreutils)
reads ``locale.alias``, then opens, stats and maps each of ``C.utf8``'s twelve category
files: some sixty system calls and a dozen mappings, which TCG pays for dearly. The
e2b SDK runs every command as ``bash -l -c``, so each one paid it (dash, the
``/bin/sh`` of a string exec, never calls ``setlocale``). Measured under TCG, QEMU
CPU per command: ``bash -c true`` 36.1 -> 29.5 ms, ``bash -l -c true`` 42.9 -> 34.1 ms.

The archive holds the very files of ``/usr/lib/locale/C.utf8`` (``localedef`` copies
them), so programs see the same locale; a later ``locale-gen`` rebuilds the archive
from ``/etc/locale.gen`` without it, and glibc then reads the directory as before.
"""

from __future__ import annotations

from pathlib import Path

from sietch.images._run import run

ARCHIVE = "usr/lib/locale/locale-archive"
C_UTF8 = "/usr/lib/locale/C.utf8"
KEY = ("locale-archive", C_UTF8)
"""Part of the Debian images' hash: changing what is archived rebuilds them."""


def archive_c_utf8(tree: Path) -> None:
    """Add the tree's own C.UTF-8 to its locale archive, with the tree's own ``localedef``
    (the archive's format is its glibc's)."""
    archive = tree / ARCHIVE
    if archive.exists():
        # A hard link into the cached Debian tree: localedef would write through it.
        data = archive.read_bytes()
        archive.unlink()
        archive.write_bytes(data)
    run(
        ["chroot", tree, "localedef", "--add-to-archive", C_UTF8],
        what="add C.UTF-8 to the image's locale archive",
    )
