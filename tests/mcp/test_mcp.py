"""An ``mcp`` SDK client drives Sietch's MCP server over streamable HTTP and over stdio.

Both transports run the issue's flow: create, write a Python file, run it,
snapshot, break the file, restore, run it again successfully. The server (and
every VM the flow leaves) is torn down by the ``api_server`` fixture.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from tests.server.harness import ApiServer

TOOLS = {
    "create_sandbox",
    "list_sandboxes",
    "run_command",
    "run_code",
    "write_file",
    "read_file",
    "list_directory",
    "snapshot",
    "restore",
    "fork",
    "list_snapshots",
    "expose_port",
    "desktop_url",
    "set_network",
    "hibernate_sandbox",
    "set_timeout",
    "screenshot",
    "computer",
    "destroy_sandbox",
}

GOOD = 'print("hello from sietch")\n'
BROKEN = 'print("hello from sietch"\n'


async def call(client: Client, tool: str, **arguments: Any) -> Any:
    """Call a tool that must succeed; returns its structured result (``result`` unwrapped)."""
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, f"{tool}: {result.content}"
    data = result.structured_content
    assert data is not None
    return data["result"] if set(data) == {"result"} else data


async def call_error(client: Client, tool: str, **arguments: Any) -> str:
    """Call a tool that must fail as a tool error; returns the error text."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error, f"{tool} should have failed: {result.content}"
    return " ".join(getattr(c, "text", "") for c in result.content)


async def run_flow(client: Client) -> None:
    """The issue's flow, plus listing, reading, forking and cleaning up."""
    made: list[str] = []
    try:
        sandbox = await call(client, "create_sandbox")
        sb = sandbox["sandbox_id"]
        made.append(sb)
        await call(client, "write_file", sandbox_id=sb, path="/root/app.py", content=GOOD)
        assert await call(client, "read_file", sandbox_id=sb, path="/root/app.py") == GOOD
        names = [e["name"] for e in await call(client, "list_directory", sandbox_id=sb)]
        assert "app.py" in names
        ran = await call(client, "run_command", sandbox_id=sb, command="python3 /root/app.py")
        assert (ran["exit_code"], ran["stdout"]) == (0, "hello from sietch\n")
        big = await call(
            client, "run_command", sandbox_id=sb, command="head -c 70000 /dev/zero | tr '\\0' x"
        )
        assert big["truncated"] and big["stdout"] == "x" * (64 * 1024)
        port = await call(client, "expose_port", sandbox_id=sb, port=8000)
        assert (port["guest_port"], port["host"]) == (8000, "127.0.0.1") and port["host_port"]
        assert port["proxy_path"] == f"/api/v1/sandboxes/{sb}/ports/8000/proxy/"
        assert await call(client, "expose_port", sandbox_id=sb, port=8000) == port
        policy = await call(
            client, "set_network", sandbox_id=sb, internet=False, allow=["PyPI.org.", "10.1.2.3"]
        )
        assert policy == {"sandbox_id": sb, "internet": False, "allow": ["pypi.org", "10.1.2.3/32"]}

        snap = await call(client, "snapshot", sandbox_id=sb, name="working")
        await call(client, "write_file", sandbox_id=sb, path="/root/app.py", content=BROKEN)
        broken = await call(client, "run_command", sandbox_id=sb, command="python3 /root/app.py")
        assert broken["exit_code"] == 1 and "SyntaxError" in broken["stderr"]

        restored = await call(client, "restore", snapshot_id=snap["snapshot_id"])
        made.append(restored["sandbox_id"])
        assert restored["restored_from"] == snap["snapshot_id"]
        again = await call(
            client,
            "run_command",
            sandbox_id=restored["sandbox_id"],
            command="python3 app.py",
            cwd="/root",
        )
        assert (again["exit_code"], again["stdout"]) == (0, "hello from sietch\n")

        snapshots = await call(client, "list_snapshots")
        assert snap["snapshot_id"] in [s["snapshot_id"] for s in snapshots]
        forks = await call(client, "fork", sandbox_id=restored["sandbox_id"], count=1)
        made.extend(f["sandbox_id"] for f in forks)
        forked = await call(
            client, "run_command", sandbox_id=forks[0]["sandbox_id"], command="cat /root/app.py"
        )
        assert forked["stdout"] == GOOD
    finally:
        for sandbox_id in made:
            await client.call_tool("destroy_sandbox", {"sandbox_id": sandbox_id})
    listed = [s["sandbox_id"] for s in await call(client, "list_sandboxes")]
    assert not set(made) & set(listed)


# Context managers, not async fixtures: anyio's cancel scopes in the MCP client must be
# left in the task that entered them, and pytest-asyncio tears fixtures down elsewhere.


@contextlib.asynccontextmanager
async def http_mcp(api_server: ApiServer) -> AsyncIterator[Client]:
    """An MCP client on the server's /mcp, with the API key as bearer token."""
    async with (
        httpx2.AsyncClient(headers=api_server.headers, timeout=120) as http,
        Client(streamable_http_client(f"{api_server.url}/mcp", http_client=http)) as client,
    ):
        yield client


@contextlib.asynccontextmanager
async def stdio_mcp(api_server: ApiServer) -> AsyncIterator[Client]:
    """``sietch mcp`` as a subprocess, pointed at the server by SIETCH_URL/SIETCH_API_KEY."""
    sietch = Path(sys.executable).parent / "sietch"
    params = StdioServerParameters(
        command=str(sietch),
        args=["mcp"],
        env={"SIETCH_URL": api_server.url, "SIETCH_API_KEY": api_server.api_key},
    )
    async with Client(params) as client:
        yield client


async def test_http_lists_tools_with_descriptions(api_server: ApiServer) -> None:
    """/mcp lists every tool, each with a description and an input schema."""
    async with http_mcp(api_server) as client:
        tools = (await client.list_tools()).tools
    assert {t.name for t in tools} == TOOLS
    for tool in tools:
        assert tool.description and len(tool.description) > 20, tool.name
        assert tool.input_schema["type"] == "object"
    run = next(t for t in tools if t.name == "run_command")
    assert set(run.input_schema["required"]) == {"sandbox_id", "command"}
    create = next(t for t in tools if t.name == "create_sandbox")
    assert {"internet", "allow"} <= set(create.input_schema["properties"])


async def test_http_flow(api_server: ApiServer) -> None:
    """Over HTTP: create, write, run, snapshot, break, restore, run again."""
    async with http_mcp(api_server) as client:
        await run_flow(client)


async def test_errors_are_tool_errors(api_server: ApiServer) -> None:
    """An unknown sandbox and the missing port forwarding come back as tool errors."""
    async with http_mcp(api_server) as client:
        text = await call_error(client, "run_command", sandbox_id="sb-nope", command="true")
        assert "sandbox_not_found" in text
        text = await call_error(client, "expose_port", sandbox_id="sb-nope", port=8080)
        assert "sandbox_not_found" in text
        text = await call_error(client, "desktop_url", sandbox_id="sb-nope")
        assert "sandbox_not_found" in text
        text = await call_error(client, "set_network", sandbox_id="sb-nope", allow=["bad name!"])
        assert "bad name!" in text and "invalid_argument" in text


def test_http_needs_the_key(api_server: ApiServer) -> None:
    """/mcp refuses a request without the API key (401, Sietch's error body)."""
    response = httpx.post(
        f"{api_server.url}/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
        headers={"Accept": "application/json, text/event-stream"},
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"


async def test_stdio_flow(api_server: ApiServer) -> None:
    """Over stdio (sietch mcp, through the SDK): the same flow."""
    async with stdio_mcp(api_server) as client:
        assert {t.name for t in (await client.list_tools()).tools} == TOOLS
        await run_flow(client)


async def test_stdio_errors_are_tool_errors(api_server: ApiServer) -> None:
    """Over stdio (no VM needed) the SDK's errors come back as tool errors, with their code."""
    async with stdio_mcp(api_server) as client:
        text = await call_error(client, "run_command", sandbox_id="sb-nope", command="true")
        assert "sandbox_not_found" in text
        text = await call_error(client, "expose_port", sandbox_id="sb-nope", port=8080)
        assert "sandbox_not_found" in text
        text = await call_error(client, "desktop_url", sandbox_id="sb-nope")
        assert "sandbox_not_found" in text
        # A successful call through the SDK (other tests' snapshots may be listed).
        assert isinstance(await call(client, "list_snapshots"), list)
