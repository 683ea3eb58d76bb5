"""What the guest package may depend on, and what its start-up may cost."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import sietch.agent.guest

from .conftest import REPO

GUEST = Path(sietch.agent.guest.__file__).parent
ALLOWED_SIETCH = ("sietch.agent.protocol", "sietch.agent.guest", "sietch.agent")


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_guest_imports_only_stdlib_and_protocol() -> None:
    """The agent runs on the tools disk's bare Python: stdlib and protocol.py only."""
    for path in sorted(GUEST.glob("*.py")):
        for name in _imports(path):
            top = name.split(".")[0]
            if top == "sietch":
                assert name.startswith(ALLOWED_SIETCH), f"{path.name} imports {name}"
            else:
                assert top in sys.stdlib_module_names, f"{path.name} imports {name}"


def test_public_surface() -> None:
    """The package exports only its version; everything else is internal."""
    assert sietch.agent.guest.__all__ == ["AGENT_VERSION"]


# Runs the agent's __main__ until it gives up on a missing socket, then lists
# what ended up imported (sys.modules, since -X importtime also lists failed
# imports such as the deliberately blocked ssl).
_PROBE = """
import runpy, sys
sys.argv = ["sietch.agent.guest", "--connect", "/nonexistent/sock", "--give-up", "0"]
runpy.run_module("sietch.agent.guest", run_name="__main__", alter_sys=True)
print(" ".join(sorted(k for k, v in sys.modules.items() if v is not None)))
"""


def test_startup_imports_stay_light() -> None:
    """Until the first OPEN, nothing slow and unneeded (ssl, shutil, ...) is imported."""
    run = subprocess.run(
        [sys.executable, "-c", _PROBE],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        timeout=60,
        check=True,
    )
    loaded = set(run.stdout.split())
    assert "sietch.agent.guest.mux" in loaded
    # (asyncio itself imports subprocess; --connect mode loads ctypes for prctl.)
    for heavy in ("ssl", "shutil", "argparse", "base64", "tempfile", "pty"):
        assert heavy not in loaded, f"{heavy} is imported at start-up"
