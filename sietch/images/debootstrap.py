"""Debian trees from ``mmdebstrap``, shared by the tools runtime and the Debian root filesystems.

mmdebstrap runs in unshare mode and writes a tarball, which we unpack: its
chroot mounts (/proc, /sys, /dev) live in a private namespace that dies with
it, so a killed build can never leave host mounts inside the cache (where a
later ``rmtree`` would walk into them).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from sietch.errors import ImageBuildError
from sietch.images._run import run

log = logging.getLogger(__name__)

SUITE = "bookworm"
SOURCES = (
    "deb http://deb.debian.org/debian {suite} main",
    "deb http://deb.debian.org/debian {suite}-updates main",
    "deb http://deb.debian.org/debian-security {suite}-security main",
)
"""Security updates included: a sandbox image should not start out with known holes."""

NO_DOCS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/lintian/*",
)
"""dpkg filters that keep documentation and translations out (and out of later installs)."""


def mmdebstrap(
    dest: Path,
    packages: Sequence[str],
    *,
    hooks: Sequence[str] = (),
    dpkg_options: Sequence[str] = NO_DOCS,
    suite: str = SUITE,
) -> Path:
    """Bootstrap a minbase ``suite`` with ``packages`` into the new directory ``dest``.

    Each of ``hooks`` is a shell snippet run as a customize hook, with the
    tree as ``$1`` (``chroot "$1" ...`` runs inside it).
    """
    if os.geteuid() != 0:
        raise ImageBuildError("building Debian trees needs root (file ownership in the image)")
    tarball = dest.with_name(dest.name + ".tar")
    argv: list[str | Path] = [
        "mmdebstrap", "--mode=unshare", "--variant=minbase", "--format=tar",
        "--aptopt=Acquire::Retries \"3\"",
    ]  # fmt: skip
    if packages:
        argv.append("--include=" + ",".join(packages))
    argv += [f"--dpkgopt={opt}" for opt in dpkg_options]
    argv += [f"--customize-hook={hook}" for hook in hooks]
    argv += [suite, tarball, *(line.format(suite=suite) for line in SOURCES)]
    try:
        # Its own temp dir (the chroot it builds in) goes in our build dir too,
        # so a killed build leaves nothing that the next one does not sweep.
        run(
            argv,
            what=f"bootstrap Debian {suite} with mmdebstrap",
            env={"TMPDIR": str(dest.parent)},
            timeout=1800,
        )
        dest.mkdir()
        run(
            ["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf", tarball,
             "-C", dest],
            what="unpack the mmdebstrap tarball",
        )  # fmt: skip
    finally:
        tarball.unlink(missing_ok=True)
    dest.chmod(0o755)
    return dest
