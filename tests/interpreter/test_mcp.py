"""The MCP tool ``run_code`` on a ``code-interpreter`` sandbox."""

from __future__ import annotations

import base64
import json

from sietch import AsyncSandbox
from tests.mcp.test_mcp import call, call_error, http_mcp
from tests.server.harness import ApiServer


async def test_run_code_returns_text_and_images(api_server: ApiServer) -> None:
    """run_code keeps state between calls and returns a figure as MCP image content."""
    # The image's template first (a cold boot: minutes under TCG), past the MCP client's
    # request timeout.
    async with await AsyncSandbox.create(
        "code-interpreter", url=api_server.url, api_key=api_server.api_key, request_timeout=1800
    ):
        pass
    async with http_mcp(api_server) as client:
        sandbox = await call(client, "create_sandbox", image="code-interpreter")
        sb = sandbox["sandbox_id"]
        try:
            await client.call_tool("run_code", {"sandbox_id": sb, "code": "n = 3"})
            result = await client.call_tool(
                "run_code",
                {
                    "sandbox_id": sb,
                    "code": "import matplotlib.pyplot as plt\n"
                    "print(n); plt.plot([0, n]); plt.show(); n * 2",
                },
            )
            assert not result.is_error, result.content
            text, image = result.content
            ran = json.loads(getattr(text, "text", ""))
            assert (ran["stdout"], ran["result"], ran["error"]) == ("3\n", "6", None)
            assert image.type == "image" and image.mime_type == "image/png"
            assert base64.b64decode(image.data).startswith(b"\x89PNG")
            failed = await call_error(client, "run_code", sandbox_id="sb-nope", code="1")
            assert "sandbox_not_found" in failed
        finally:
            await call(client, "destroy_sandbox", sandbox_id=sb)
