"""Sietch's own SDK runs Python in a code-interpreter sandbox's kernel (sync and async)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from sietch import AsyncSandbox, Conflict, Sandbox
from tests.server.harness import ApiServer

CREATE_TIMEOUT_S = 1800.0
"""The first create of the image boots it and makes its template: minutes under TCG."""


@pytest.fixture(scope="module")
def ci(sdk_env: None) -> Iterator[Sandbox]:
    """One sandbox of the code-interpreter image for the module."""
    with Sandbox.create("code-interpreter", request_timeout=CREATE_TIMEOUT_S) as sb:
        yield sb


def test_state_output_and_value(ci: Sandbox) -> None:
    """State stays between calls; printed output streams to on_stdout; the value is text."""
    heard: list[bytes] = []
    ci.run_code("total = 40")
    done = ci.run_code("print('adding'); total + 2", on_stdout=heard.append)
    assert done.error is None
    assert done.text == "42" and done.stdout == "adding\n"
    assert b"".join(heard) == b"adding\n"
    assert done.execution_count is not None and done.execution_count >= 2


def test_error_is_typed(ci: Sandbox) -> None:
    """An exception comes back as a CodeError with its name, value and traceback."""
    done = ci.run_code("{}['missing']")
    assert done.error is not None
    assert (done.error.name, done.error.value) == ("KeyError", "'missing'")
    assert "KeyError" in done.error.traceback


def test_figure_is_png_bytes(ci: Sandbox) -> None:
    """A matplotlib figure comes back as PNG bytes of figsize x dpi (Execution.images)."""
    done = ci.run_code(
        "import matplotlib.pyplot as plt\n"
        "plt.figure(figsize=(3, 2), dpi=40); plt.bar(['a', 'b'], [1, 3]); plt.show()"
    )
    [png] = done.images
    assert Image.open(io.BytesIO(png)).size == (120, 80)
    [chart] = [r.chart for r in done.results if r.chart]
    assert chart["type"] == "bar"
    assert [e["value"] for e in chart["elements"]] == [1, 3]


def test_timeout_interrupts(ci: Sandbox) -> None:
    """A cell past its timeout is interrupted (a TimeoutError), and the kernel carries on."""
    done = ci.run_code("import time; time.sleep(600)", timeout=3)
    assert done.error is not None and done.error.name == "TimeoutError"
    assert ci.run_code("'alive'").text == "alive"


def test_restored_sandboxes_run_code(ci: Sandbox) -> None:
    """Sandboxes restored from the image's template (the warm pool's and the next) run
    code at once, each in a kernel of its own with nothing defined yet."""
    ci.run_code("mine = 1")
    for _ in range(2):
        with Sandbox.create("code-interpreter", request_timeout=CREATE_TIMEOUT_S) as sb:
            done = sb.run_code("'mine' in globals(), 6 * 7")
            assert done.error is None and done.text == "(False, 42)"


def test_not_a_code_interpreter(sdk_env: None) -> None:
    """A sandbox of another image refuses run_code with a Conflict that names the image."""
    with Sandbox.create() as sb, pytest.raises(Conflict, match="code-interpreter"):
        sb.run_code("1")


def test_rest_streams_ndjson(ci: Sandbox, api_server: ApiServer) -> None:
    """POST /run-code answers one JSON object a line, ending with end_of_execution."""
    with httpx.stream(
        "POST",
        f"{api_server.url}/api/v1/sandboxes/{ci.id}/run-code",
        json={"code": "print(1)"},
        headers=api_server.headers,
        timeout=120,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        kinds = [json.loads(line)["type"] for line in response.iter_lines()]
    assert kinds[0] == "number_of_executions" and kinds[-1] == "end_of_execution"
    assert "stdout" in kinds


async def test_async_run_code(ci: Sandbox) -> None:
    """The async SDK runs code in the same kernel, with an async output callback."""
    heard: list[bytes] = []

    async def hear(data: bytes) -> None:
        heard.append(data)

    async with await AsyncSandbox.connect(ci.id) as sb:
        done = await sb.run_code("print('async'); 6 * 7", on_stdout=hear)
    assert (done.text, heard) == ("42", [b"async\n"])


def test_create_env_reaches_a_fresh_kernel(sdk_env: None) -> None:
    """The env given at create is in the kernel's os.environ; the sandbox from the warm pool
    (its kernel warmed up there) starts at execution count 1 with a fresh namespace; its
    kernel's port is not among its exposed ports."""
    env = {"SIETCH_CI_VAR": "from-create"}
    with Sandbox.create("code-interpreter", env=env, request_timeout=CREATE_TIMEOUT_S) as sb:
        done = sb.run_code("import os; os.environ['SIETCH_CI_VAR'], _, '_1' in globals()")
        assert done.error is None and done.text == "('from-create', '', False)"
        assert done.execution_count == 1
        assert sb.ports() == []
