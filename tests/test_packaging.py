"""``pip install sietch`` is a light client; the server and the VMs come with the ``server`` extra.

Each import is checked in a fresh interpreter: what a module loads at start is
what a user of only the SDK, the CLI or ``sietch mcp`` pays for, and needs installed.
"""

from __future__ import annotations

import email
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SERVER_SIDE = (
    "sietch.vmm",
    "sietch.network",
    "sietch.images",
    "sietch.storage",
    "sietch.core",
    "sietch.server",
    "sietch.config",
)
SERVER_LIBRARIES = ("fastapi", "qemu", "dns", "pydantic_settings", "prometheus_client")
SERVER_EXTRA = {"fastapi", "uvicorn", "qemu-qmp", "dnspython", "pydantic-settings"}


def loaded_by(module: str) -> set[str]:
    """Every module a fresh interpreter holds after ``import module``."""
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return set(json.loads(result.stdout))


def among(loaded: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(
        m for m in loaded if m in packages or m.startswith(tuple(p + "." for p in packages))
    )


@pytest.mark.parametrize("module", ["sietch", "sietch.client", "sietch.mcp", "sietch.cli.main"])
def test_client_side_loads_no_server_side(module: str) -> None:
    """Importing the SDK, the MCP package or the CLI loads no VM, network, image, core or
    server module, nor fastapi, uvicorn, qemu or dnspython."""
    loaded = loaded_by(module)
    assert module in loaded
    assert among(loaded, SERVER_SIDE + SERVER_LIBRARIES + ("uvicorn",)) == []


def test_mcp_stdio_loads_no_server_side() -> None:
    """``sietch mcp``'s own module loads nothing of Sietch's server side (uvicorn, which
    the MCP SDK's server imports through sse-starlette, is the SDK's own dependency)."""
    loaded = loaded_by("sietch.mcp.sdk")
    assert "mcp.server.mcpserver" in loaded
    assert among(loaded, SERVER_SIDE + SERVER_LIBRARIES) == []


def test_the_agent_package_is_still_stdlib_only() -> None:
    """The guest imports the sietch package where only the standard library exists."""
    loaded = loaded_by("sietch")
    assert among(loaded, ("pydantic", "httpx", "websockets", "typer", "rich", "mcp")) == []


def requirements(wheel: Path) -> tuple[set[str], set[str]]:
    """The wheel's base requirements and its ``server`` extra's, as project names."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = email.message_from_bytes(archive.read(name))
    base, server = set(), set()
    for line in metadata.get_all("Requires-Dist") or []:
        requirement, _, marker = line.partition(";")
        project = requirement.split("[")[0].split("<")[0].split(">")[0].split("=")[0].strip()
        project = project.lower().replace("_", "-").replace(".", "-")
        if not marker:
            base.add(project)
        elif "'server'" in marker or '"server"' in marker:
            server.add(project)
    return base, server


def test_wheel_base_requirements_are_light(tmp_path: Path) -> None:
    """The built wheel requires none of the server's libraries; its ``server`` extra does."""
    source = tmp_path / "src"
    shutil.copytree(
        ROOT / "sietch", source / "sietch", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "dist"),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    [wheel] = (tmp_path / "dist").glob("sietch-*.whl")
    base, server = requirements(wheel)
    assert {"httpx", "pydantic", "websockets", "typer", "rich", "mcp"} <= base
    assert base.isdisjoint(SERVER_EXTRA), base & SERVER_EXTRA
    assert server >= SERVER_EXTRA


@pytest.mark.parametrize("argv", [["serve"], ["image", "ls", "--local"]])
def test_server_commands_without_the_extra_say_what_to_install(argv: list[str]) -> None:
    """Without the server's libraries, ``sietch serve`` and ``sietch image`` fail with the
    install command, not a traceback."""
    # None in sys.modules makes an import fail as if the package were not installed.
    code = (
        "import sys\n"
        "for name in ('fastapi', 'uvicorn', 'pydantic_settings', 'qemu', 'dns'):\n"
        "    sys.modules[name] = None\n"
        "from sietch.cli.main import app\n"
        f"app({argv!r})\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=ROOT
    )
    assert result.returncode == 1, result.stderr
    assert "pip install 'sietch[server]'" in " ".join(result.stderr.split())  # rich wraps
    assert "Traceback" not in result.stderr
