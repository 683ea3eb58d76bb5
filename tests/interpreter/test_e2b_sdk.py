"""e2b-code-interpreter's SDK, unchanged, against a real Sietch server and the
code-interpreter image's kernel gateway: one shared sandbox."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import httpx
import pytest
from e2b_code_interpreter import AsyncSandbox, OutputMessage, Sandbox
from PIL import Image

from tests.server.harness import ApiServer

CREATE_TIMEOUT_S = 1800
"""The first create boots the image and makes its template: minutes under TCG, loaded."""
RED = (255, 0, 0)


@pytest.fixture(scope="module")
def ci(e2b_env: ApiServer) -> Iterator[Sandbox]:
    """A sandbox of the SDK's default template (``code-interpreter-v1``)."""
    sandbox = Sandbox.create(timeout=3600, request_timeout=CREATE_TIMEOUT_S)
    yield sandbox
    sandbox.kill()


def test_state_kept_between_calls(ci: Sandbox) -> None:
    """A name defined by one run_code is there in the next, and the count goes up."""
    first = ci.run_code("x = 41")
    second = ci.run_code("x + 1")
    assert (first.error, second.error) == (None, None)
    assert second.text == "42"
    assert first.execution_count is not None and second.execution_count == first.execution_count + 1


def test_print_and_error(ci: Sandbox) -> None:
    """print output is streamed and logged; 1/0 comes back as ZeroDivisionError."""
    heard: list[OutputMessage] = []
    printed = ci.run_code(
        "print('hello'); import sys; print('oops', file=sys.stderr)", on_stdout=heard.append
    )
    assert printed.logs.stdout == ["hello\n"] and printed.logs.stderr == ["oops\n"]
    assert [m.line for m in heard] == ["hello\n"]
    failed = ci.run_code("1/0")
    assert failed.error is not None
    assert failed.error.name == "ZeroDivisionError"
    assert failed.error.value == "division by zero"
    assert "ZeroDivisionError" in failed.error.traceback
    assert ci.run_code("'still' + ' alive'").text == "still alive"


def test_matplotlib_chart_png(ci: Sandbox) -> None:
    """A matplotlib figure comes back as a PNG of figsize x dpi with the line's colour in
    it, and as chart data with the line's points."""
    execution = ci.run_code(
        "import matplotlib.pyplot as plt\n"
        "fig = plt.figure(figsize=(4, 3), dpi=50)\n"
        "plt.plot([0, 1, 2], [0, 1, 4], color='#ff0000', linewidth=4)\n"
        "plt.title('squares')\n"
        "plt.show()\n"
    )
    assert execution.error is None
    [figure] = [r for r in execution.results if r.png]
    image = Image.open(io.BytesIO(base64.b64decode(figure.png))).convert("RGB")
    assert image.size == (200, 150)
    colours = image.getcolors(maxcolors=1 << 16)
    assert colours is not None and RED in {colour for _, colour in colours}
    assert figure.chart is not None and figure.chart.type == "line"
    assert figure.chart.title == "squares"
    [line] = figure.chart.elements
    assert line.points == [(0.0, 0.0), (1.0, 1.0), (2.0, 4.0)]


def test_context_restart_clears_state(ci: Sandbox) -> None:
    """A new context is listed and has its own names; a restart clears them; removed, it
    is no longer listed."""
    context = ci.create_code_context(cwd="/tmp")
    assert context.id in {c.id for c in ci.list_code_contexts()}
    assert ci.run_code("y = 7; import os; os.getcwd()", context=context).text == "/tmp"
    assert ci.run_code("y", context=context).text == "7"
    assert ci.run_code("y").error is not None  # the default context never had it
    ci.restart_code_context(context)
    after = ci.run_code("y", context=context)
    assert after.error is not None and after.error.name == "NameError"
    ci.remove_code_context(context)
    assert context.id not in {c.id for c in ci.list_code_contexts()}


def test_run_code_env_vars(ci: Sandbox) -> None:
    """envs given to one run_code are set for it only."""
    code = "import os; os.environ.get('CI_VAR', 'unset')"
    assert ci.run_code(code, envs={"CI_VAR": "set"}).text == "set"
    assert ci.run_code(code).text == "unset"


async def test_async_run_code(ci: Sandbox) -> None:
    """The async SDK reaches the same kernel (connected by id) and streams its output."""
    sandbox = await AsyncSandbox.connect(ci.sandbox_id)
    heard: list[str] = []
    execution = await sandbox.run_code(
        "for i in range(3): print(i)", on_stdout=lambda m: heard.append(m.line)
    )
    assert "".join(execution.logs.stdout) == "0\n1\n2\n" == "".join(heard)


def test_create_envs_reach_the_kernel(e2b_env: ApiServer) -> None:
    """envs given at create are in the kernel's os.environ as in commands, and the first
    cell of the (warmed) sandbox from the pool counts as the first."""
    with Sandbox.create(timeout=600, envs={"CI_CREATE_VAR": "given"}) as sandbox:
        first = sandbox.run_code("import os; os.environ.get('CI_CREATE_VAR')")
        assert (first.text, first.execution_count) == ("given", 1)
        assert sandbox.commands.run("echo $CI_CREATE_VAR").stdout == "given\n"


def test_kernel_port_not_exposed(ci: Sandbox, e2b_env: ApiServer) -> None:
    """The SDK reaches the kernel gateway's port 49999 without it showing among the
    sandbox's exposed ports in Sietch's API."""
    assert ci.run_code("'reached'").text == "reached"
    listed = httpx.get(
        f"{e2b_env.url}/api/v1/sandboxes/{ci.sandbox_id}/ports", headers=e2b_env.headers
    )
    assert listed.status_code == 200 and listed.json()["data"] == []


def test_warm_up_refused_once_code_ran(ci: Sandbox, e2b_env: ApiServer) -> None:
    """The gateway's warm-up (which resets the namespace) is refused in a kernel that has
    run a user's cell, so nobody's state can be wiped by it."""
    ci.run_code("kept = 'still here'")
    headers = {
        "E2b-Sandbox-Id": ci.sandbox_id,
        "E2b-Sandbox-Port": "49999",
        "E2B-Traffic-Access-Token": ci.traffic_access_token or "",
    }
    answer = httpx.post(
        f"{e2b_env.url}/execute", json={"code": "1", "warm": True}, headers=headers, timeout=60
    )
    assert answer.status_code == 409
    assert ci.run_code("kept").text == "still here"
