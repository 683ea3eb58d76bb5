"""Frozen memory files (snapshots, templates) can be read but not written by the QEMU user."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sietch.core.manager import Manager
from sietch.vmm.process import lookup_user
from sietch.vmm.version import readonly_private_ram, seal_memory_file
from tests.conftest import short_tmpdir
from tests.snapshots.conftest import Tracker


def qemu_user(manager: Manager) -> tuple[int, int]:
    run_as = lookup_user(manager.settings.qemu_user)
    if run_as is None:
        pytest.skip("QEMU runs as the test's own user (not root, or no QEMU user)")
    if not readonly_private_ram(manager.settings.qemu_binary):
        pytest.skip("this QEMU opens private memory files read-write (< 8.2)")
    return run_as


def opens(path: Path, run_as: tuple[int, int], mode: str) -> bool:
    """Whether ``run_as`` can open ``path`` in ``mode`` (tried in a process of that user)."""
    uid, gid = run_as
    argv = [shutil.which("setpriv") or "setpriv", f"--reuid={uid}", f"--regid={gid}"]
    argv += ["--clear-groups", "/usr/bin/python3", "-c", f"open({str(path)!r}, {mode!r})"]
    return subprocess.run(argv, capture_output=True, check=False).returncode == 0


def test_sealed_file_is_readable_not_writable(manager: Manager) -> None:
    """seal_memory_file leaves a file the QEMU user can read but neither write nor chmod."""
    run_as = qemu_user(manager)
    where = short_tmpdir("stm")
    try:
        where.chmod(0o711)
        path = where / "memory"
        path.write_bytes(b"\0" * 4096)
        os.chown(path, *run_as)  # as QEMU 7.2 needs it
        assert opens(path, run_as, "r+b"), "the check itself cannot tell writable files"
        seal_memory_file(path, run_as, manager.settings.qemu_binary)
        assert opens(path, run_as, "rb")
        assert not opens(path, run_as, "r+b")
        assert path.stat().st_uid == os.geteuid()
    finally:
        shutil.rmtree(where)


async def test_template_and_snapshot_memory_not_writable(track: Tracker, manager: Manager) -> None:
    """The QEMU user can't write a template's or a snapshot's memory file; restores still run."""
    run_as = qemu_user(manager)
    sb = await track.create()  # the first create makes the image's template
    snap = await track.snapshot(sb)
    if snap.ram_in_stream:  # sb was restored (RAM mapped privately); its restore is share=on
        snap = await track.snapshot(await track.restore(snap))
    assert not snap.ram_in_stream
    templates = [s for s in await manager.list_snapshots(templates=True) if s.template]
    assert templates, "no template was made"
    for frozen in [*templates, snap]:
        memory = manager.snapshots.dir / frozen.id / "memory"
        assert opens(memory, run_as, "rb"), f"{frozen.id}: QEMU can't read its memory"
        assert not opens(memory, run_as, "r+b"), f"{frozen.id}: QEMU may write its memory"
    again = await track.restore(snap)
    assert (await again.exec(["true"])).exit_code == 0
