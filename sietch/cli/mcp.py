"""``sietch mcp``: serve Sietch's tools to an agent over MCP on stdin/stdout.

The process talks to a running ``sietch serve`` through the public SDK (see
:mod:`sietch.mcp.backend` for why); stdout carries only MCP messages.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from sietch.cli._common import err

mcp_app = typer.Typer()


@mcp_app.command()
def mcp(
    url: Annotated[
        str | None,
        typer.Option(help="Sietch server (default: $SIETCH_URL, else http://127.0.0.1:7000)."),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(help="API key (default: $SIETCH_API_KEY).", show_default=False)
    ] = None,
) -> None:
    """Serve Sietch as an MCP server over stdio (for Claude Desktop, Cursor, agents...)."""
    asyncio.run(_serve_stdio(url, api_key))


async def _serve_stdio(url: str | None, api_key: str | None) -> None:
    from sietch.client import AsyncClient
    from sietch.errors import SietchError
    from sietch.mcp import ClientBackend, build_server

    # No client-side timeout: run_command bounds each command by its own timeout_s.
    async with AsyncClient(url, api_key, timeout=None) as client:
        try:
            await client.health()
        except SietchError as exc:
            # Still serve: the agent's host shows tool errors, and the server may come up later.
            err.print(f"[yellow]warning:[/] {client.config.url}: {exc.message}")
        await build_server(ClientBackend(client)).run_stdio_async()
