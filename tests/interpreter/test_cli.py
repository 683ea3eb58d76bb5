"""``sietch run-code``: a Python file in a code-interpreter sandbox's kernel."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from sietch import Sandbox
from tests.cli.conftest import Run
from tests.server.harness import ApiServer

CREATE_TIMEOUT_S = 1800.0
"""The first create of the image boots it and makes its template: minutes under TCG."""


@pytest.fixture(scope="module")
def ci_id(api_server: ApiServer) -> Iterator[str]:
    """A code-interpreter sandbox (made through the SDK, with a long create timeout)."""
    with Sandbox.create(
        "code-interpreter",
        url=api_server.url,
        api_key=api_server.api_key,
        request_timeout=CREATE_TIMEOUT_S,
    ) as sb:
        yield sb.id


def test_run_code_file(sietch_cli: Run, ci_id: str, tmp_path: Path) -> None:
    """A file's output and value are printed, its figure saved; state is kept for the next
    run; an exception exits 1 with its traceback on stderr."""
    script = tmp_path / "plot.py"
    script.write_text(
        "import matplotlib.pyplot as plt\n"
        "kept = 5\nprint('plotting')\nplt.plot([1, 2]); plt.show()\nkept * 2\n"
    )
    done = sietch_cli("run-code", ci_id, str(script), "--images", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode() == "plotting\n10\n"
    assert (tmp_path / "out" / "result-1.png").read_bytes().startswith(b"\x89PNG")
    again = sietch_cli("run-code", ci_id, "-", "--json", input=b"kept + 1")
    assert again.returncode == 0, again.stderr.decode()
    execution = json.loads(again.stdout)
    assert [r["text"] for r in execution["results"] if r["is_main_result"]] == ["6"]
    failed = sietch_cli("run-code", ci_id, "-", input=b"raise ValueError('bad input')")
    assert failed.returncode == 1
    assert "ValueError: bad input" in failed.stderr.decode()
