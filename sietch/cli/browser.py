"""``sietch desktop ID`` and ``sietch ide ID``: links that open a sandbox in a browser."""

from __future__ import annotations

import webbrowser
from typing import Annotated

import typer

from sietch.cli._common import JsonOption, api_errors, err, out, print_json
from sietch.client import Client, Sandbox

browser_app = typer.Typer()

OpenOption = Annotated[bool, typer.Option("--open", help="Open the link in a browser here.")]
TtlOption = Annotated[
    float | None, typer.Option(help="Seconds the link and its session last (server default: 3600).")
]


def _show(url: str, open_it: bool) -> None:
    out.print(url, soft_wrap=True)
    if open_it and not webbrowser.open(url):
        err.print("no browser to open here: open the link above yourself")


@browser_app.command()
def desktop(
    sandbox_id: str,
    view_only: Annotated[
        bool, typer.Option("--view-only", help="Watch only: no mouse or keyboard.")
    ] = False,
    ttl: TtlOption = None,
    open_it: OpenOption = False,
    as_json: JsonOption = False,
) -> None:
    """Print a link that shows the sandbox's desktop live in a browser (noVNC)."""
    with api_errors(), Client() as client:
        view = Sandbox.connect(sandbox_id, client=client).desktop.url(view_only=view_only, ttl=ttl)
    if as_json:
        print_json(view)
    else:
        _show(view.viewer_url, open_it)


@browser_app.command()
def ide(
    sandbox_id: str,
    folder: Annotated[str | None, typer.Option(help="Folder to open [/home/user].")] = None,
    ttl: TtlOption = None,
    open_it: OpenOption = False,
) -> None:
    """Print a link to code-server (VS Code) in the sandbox, through the server."""
    with api_errors(), Client() as client:
        url = Sandbox.connect(sandbox_id, client=client).ide.url(folder=folder, ttl=ttl)
    _show(url, open_it)
