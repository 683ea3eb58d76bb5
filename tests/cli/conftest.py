from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server.harness import ApiServer, api_server

SIETCH = Path(sys.executable).with_name("sietch")
"""The installed entry point (``pip install -e .``), run as a user would."""

Run = Callable[..., subprocess.CompletedProcess[bytes]]


@pytest.fixture(scope="package")
def sietch_cli(api_server: ApiServer) -> Run:
    """Run ``sietch ARGS...`` against the test server; returns the completed process."""
    assert SIETCH.exists(), f"{SIETCH} is missing: run 'pip install -e .'"

    def run(*args: str, input: bytes | None = None, timeout: float = 180) -> Any:
        return subprocess.run(
            [str(SIETCH), *args],
            input=input,
            check=False,
            capture_output=True,
            env=api_server.env,
            timeout=timeout,
        )

    return run


@pytest.fixture(scope="module")
def sandbox_id(sietch_cli: Run) -> Iterator[str]:
    """A sandbox made with ``sietch create`` for the module's tests."""
    done = sietch_cli("create", "--label", "suite=cli", "--json")
    assert done.returncode == 0, done.stderr.decode()
    sandbox_id = json.loads(done.stdout)["id"]
    yield sandbox_id
    sietch_cli("rm", sandbox_id)


__all__ = ["SIETCH", "Run", "api_server", "sandbox_id", "sietch_cli"]
