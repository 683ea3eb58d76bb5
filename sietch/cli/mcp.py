"""``sietch mcp``: serve Sietch's tools to an agent over MCP on stdin/stdout.

The process talks to a running ``sietch serve`` through the public SDK (see
:mod:`sietch.mcp.sdk`); stdout carries only MCP messages.
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
    # The MCP SDK's server side is heavy (it loads uvicorn): only this command needs it.
    from sietch.mcp.sdk import serve_stdio

    asyncio.run(
        serve_stdio(url, api_key, warn=lambda line: err.print(f"[yellow]warning:[/] {line}"))
    )
