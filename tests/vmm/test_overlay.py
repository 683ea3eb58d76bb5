"""Disk overlays written from a remembered empty one (no VM: qemu-img checks the files)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from sietch.errors import VMError
from sietch.storage import disks


def _info(path: Path) -> dict[str, object]:
    out = subprocess.run(
        ["qemu-img", "info", "--output=json", str(path)], capture_output=True, check=True
    )
    info: dict[str, object] = json.loads(out.stdout)
    return info


def test_a_remembered_overlay_reads_as_qemu_img_made_it(tmp_path: Path) -> None:
    """The second overlay of a base is written without qemu-img, yet reads back byte for
    byte as the first (which qemu-img made) and passes qemu-img check; another size or a
    relative base name is its own."""
    base = tmp_path / "base.raw"
    base.write_bytes(b"x" * (1 << 20))
    first, second = tmp_path / "a.qcow2", tmp_path / "b.qcow2"
    disks.create_overlay(base, first, 64)
    disks.create_overlay(base, second, 64)
    assert second.read_bytes() == first.read_bytes()
    subprocess.run(["qemu-img", "check", "-q", str(second)], check=True)
    info = _info(second)
    assert info["backing-filename"] == str(base)
    assert info["virtual-size"] == 64 << 20
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "base.raw").symlink_to(base)
    bigger = tmp_path / "sub" / "c.qcow2"
    disks.create_overlay(Path("base.raw"), bigger, 128)
    disks.create_overlay(Path("base.raw"), tmp_path / "sub" / "d.qcow2", 128)
    info = _info(tmp_path / "sub" / "d.qcow2")
    assert info["backing-filename"] == "base.raw" and info["virtual-size"] == 128 << 20


def test_an_overlay_over_another_base_of_the_same_name_length_gets_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new snapshot's layer has a new name of the same length: its overlay is written from
    the remembered one, without qemu-img, with its own name, byte for byte what qemu-img
    makes of it."""
    names = ["snap-0123456789ab.qcow2", "snap-ba9876543210.qcow2"]
    for name in names:
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", str(tmp_path / name), "32M"], check=True
        )
    disks.create_overlay(Path(names[0]), tmp_path / "0.qcow2", 64, "qcow2")
    with monkeypatch.context() as patched:
        patched.setattr(disks, "_qemu_img_create", lambda *args: pytest.fail("qemu-img ran"))
        disks.create_overlay(Path(names[1]), tmp_path / "1.qcow2", 64, "qcow2")
    info = _info(tmp_path / "1.qcow2")
    assert info["backing-filename"] == names[1] and info["virtual-size"] == 64 << 20
    subprocess.run(["qemu-img", "check", "-q", str(tmp_path / "1.qcow2")], check=True)
    made = tmp_path / "made.qcow2"
    options = "cluster_size=65536,lazy_refcounts=on"  # what create_overlay asks qemu-img for
    qemu_img = ["qemu-img", "create", "-q", "-f", "qcow2", "-o", options]
    subprocess.run([*qemu_img, "-b", names[1], "-F", "qcow2", str(made), "64M"], check=True)
    assert (tmp_path / "1.qcow2").read_bytes() == made.read_bytes()


def test_a_remembered_overlay_still_needs_its_base(tmp_path: Path) -> None:
    """Once its base is gone, an overlay is refused as qemu-img would refuse it."""
    base = tmp_path / "gone.raw"
    base.write_bytes(b"x" * (1 << 20))
    disks.create_overlay(base, tmp_path / "a.qcow2", 32)
    base.unlink()
    with pytest.raises(VMError, match="backing file"):
        disks.create_overlay(base, tmp_path / "b.qcow2", 32)
