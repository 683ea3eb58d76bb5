"""The code stays as STYLE.md asks: ruff-clean, formatted, type-checked, and layered.

The layers are import-linter contracts in pyproject.toml (``[tool.importlinter]``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TREES = [d for d in ("sietch", "tests", "bench", "scripts") if (ROOT / d).is_dir()]


LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))


@pytest.mark.parametrize(
    "argv",
    [
        [sys.executable, "-m", "ruff", "check", *TREES],
        [sys.executable, "-m", "ruff", "format", "--check", *TREES],
        [sys.executable, "-m", "mypy"],
        [LINT_IMPORTS, "--no-cache"],
    ],
    ids=["ruff-check", "ruff-format", "mypy", "import-linter"],
)
def test_tool_passes(argv: list[str]) -> None:
    """Each checker exits 0 on the whole tree."""
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
