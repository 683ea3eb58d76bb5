"""Which QEMU is installed, and what follows from its version.

Sietch runs on QEMU 10 (Debian bookworm-backports, installed by
``bootstrap.sh``) and still works on bookworm's own 7.2, less safely:

- QEMU >= 8.2 maps a private (``share=off``) memory backend from a file it
  opens read-only (``readonly=on,rom=off``: the guest still writes its RAM,
  copy-on-write). Snapshot and template memory files are then owned by root
  and only readable by the QEMU user, so a compromised QEMU cannot write into
  a template every later sandbox restores. 7.2 opens the file read-write even
  though MAP_PRIVATE never writes it back, so there the file must belong to
  the QEMU user (:func:`seal_memory_file` warns once).
- Measured on this machine kind (TCG, 2 cores): ``exec true`` 17.2 ms on
  QEMU 10.0.2 against 37.6 ms on 7.2 (QEMU CPU per exec 14.4 vs 34.8 ms),
  because 10's TCG reuses translations of ld.so and libc across processes.
  With the tickless guest (:mod:`sietch.vmm.qemu`) it was 16-20 ms against
  45-75 ms for the old CPU model and command line, in alternating runs on a
  busy host: the 250 Hz tick and the PIT no longer interrupt every exec.
- Debian's 10 no longer links microvm's default firmware to qboot: Sietch
  names ``qboot.rom`` itself (see :data:`sietch.vmm.qemu.FIRMWARE`).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from functools import cache
from pathlib import Path

from sietch.errors import VMError

log = logging.getLogger(__name__)

READONLY_PRIVATE_RAM = (8, 2)
"""First QEMU whose memory-backend-file takes ``readonly=on`` with ``rom=off``."""


@cache
def qemu_version(binary: str) -> tuple[int, int, int]:
    """``(major, minor, micro)`` of ``binary --version``."""
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except OSError as exc:
        raise VMError(f"cannot run {binary}: {exc} (install qemu-system-x86)") from exc
    found = re.search(r"version (\d+)\.(\d+)\.(\d+)", out)
    if found is None:
        raise VMError(f"{binary} --version printed no version: {out.strip()[:200]!r}")
    major, minor, micro = (int(g) for g in found.groups())
    return major, minor, micro


def version_text(binary: str) -> str:
    return ".".join(map(str, qemu_version(binary)))


def readonly_private_ram(binary: str) -> bool:
    """Whether ``binary`` can map a private memory backend from a read-only file."""
    return qemu_version(binary)[:2] >= READONLY_PRIVATE_RAM


@cache
def _warn_writable(binary: str) -> None:
    log.warning(
        "QEMU %s opens snapshot memory files read-write, so they belong to the QEMU user; "
        "QEMU >= %d.%d (./bootstrap.sh installs 10) keeps them read-only",
        version_text(binary),
        *READONLY_PRIVATE_RAM,
    )


def seal_memory_file(path: Path, run_as: tuple[int, int] | None, binary: str) -> None:
    """Give a frozen memory file (snapshot, template) the owner and mode its restores need.

    Read-only for the QEMU user where QEMU opens it read-only: owned by us
    (root), group the QEMU user's, mode 0640. QEMU 7.2 needs it writable.
    Without ``run_as`` QEMU runs as us and the file stays ours, 0600.
    """
    if run_as is None:
        return
    uid, gid = run_as
    if readonly_private_ram(binary):
        os.chown(path, os.geteuid(), gid)
        os.chmod(path, 0o640)
    else:
        _warn_writable(binary)
        os.chown(path, uid, gid)
