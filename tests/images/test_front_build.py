"""sietch-front, the guest agent's compiled hot path: how the set-up command builds it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from sietch.errors import ImageBuildError
from sietch.images.front import compile_front, front_sources
from sietch.images.tools import agent_sources


def test_front_compiles_static_and_refuses_a_bare_call(tmp_path: Path) -> None:
    """The agent's C sources build (warnings are errors) into a static binary that runs
    on its own, and without a program to hand over to it says how to call it."""
    out = tmp_path / "sietch-front"
    compile_front(front_sources(agent_sources()), out)
    assert b"/ld-linux" not in out.read_bytes()  # no program interpreter: static
    bare = subprocess.run([out], check=False, capture_output=True, text=True, timeout=30)
    assert (bare.returncode, bare.stderr) == (2, "usage: sietch-front PROGRAM ARGS...\n")


def test_a_missing_compiler_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without gcc the build fails with an error that names it and the set-up command."""
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ImageBuildError, match=r"gcc not found.*bootstrap\.sh install"):
        compile_front(front_sources(agent_sources()), tmp_path / "sietch-front")
