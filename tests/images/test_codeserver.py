"""code-server's copy in an image: its handshake timeout raised for emulated guests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sietch.errors import ImageBuildError
from sietch.images.codeserver import HANDSHAKE, patch_for_emulation

REL, OLD, NEW = HANDSHAKE


def artefact(root: Path, text: str) -> Path:
    path = root / REL
    path.parent.mkdir(parents=True)
    path.write_text(text)
    return path


def test_patch_raises_the_timeout_in_the_copy_only(tmp_path: Path) -> None:
    """The tree's copy gets the longer timeout; the hard-linked cached artefact keeps its own."""
    built = artefact(tmp_path / "cache", f"a;\n{OLD} // 10s\nb;\n")
    installed = tmp_path / "tree"
    (installed / REL).parent.mkdir(parents=True)
    os.link(built, installed / REL)
    patch_for_emulation(installed)
    assert (installed / REL).read_text() == f"a;\n{NEW} // 10s\nb;\n"
    assert built.read_text() == f"a;\n{OLD} // 10s\nb;\n"


def test_patch_refuses_a_code_server_without_that_line(tmp_path: Path) -> None:
    """Another code-server version that lacks the line fails the build, naming it."""
    artefact(tmp_path, "const timeoutInterval = 30000;\n")
    with pytest.raises(ImageBuildError, match="timeoutInterval = 10000"):
        patch_for_emulation(tmp_path)
