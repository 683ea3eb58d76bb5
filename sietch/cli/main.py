"""The ``sietch`` command: one typer app with a sub-app per noun."""

from __future__ import annotations

import typer

from sietch.cli.browser import browser_app
from sietch.cli.build import build_app
from sietch.cli.code import code_app
from sietch.cli.commands import commands_app
from sietch.cli.desktop import desktop_app
from sietch.cli.files import files_app
from sietch.cli.image import image_app
from sietch.cli.keys import keys_app, tenants_app
from sietch.cli.lifecycle import lifecycle_app
from sietch.cli.mcp import mcp_app
from sietch.cli.sandbox import sandbox_app
from sietch.cli.serve import serve_app
from sietch.cli.snapshots import snapshots_app
from sietch.cli.top import top_app

app = typer.Typer(
    name="sietch",
    help="Self-hosted microVM sandboxes for AI agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
# Verbs at the top level (sietch create, sietch exec ...), as with docker.
for verbs in (
    *(serve_app, sandbox_app, commands_app, files_app, snapshots_app, lifecycle_app, mcp_app),
    *(top_app, browser_app, build_app, code_app),
):
    app.add_typer(verbs)
app.add_typer(image_app, name="image")
app.add_typer(desktop_app, name="computer")
app.add_typer(keys_app, name="keys")
app.add_typer(tenants_app, name="tenants")
