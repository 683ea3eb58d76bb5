"""The ``sietch`` command: one typer app with a sub-app per noun."""

from __future__ import annotations

import typer

from sietch.cli.image import image_app

app = typer.Typer(
    name="sietch",
    help="Self-hosted microVM sandboxes for AI agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(image_app, name="image")
