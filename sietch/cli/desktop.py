"""``sietch computer``: a desktop sandbox's screen, mouse and keyboard (computer use).

``sietch computer ID`` is the link for a person (``sietch.cli.browser``)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from sietch.cli._common import api_errors, fail, print_json
from sietch.client import Client, Desktop, Sandbox

desktop_app = typer.Typer(
    name="computer", help="Computer use: screenshots and input of a desktop sandbox."
)

SandboxArg = Annotated[str, typer.Argument(help="A desktop sandbox's id.")]
ShotOption = Annotated[
    bool, typer.Option("--screenshot", help="Include a screenshot (base64 PNG) in the answer.")
]


@contextmanager
def _desktop(sandbox_id: str) -> Iterator[Desktop]:
    with api_errors(), Client() as client:
        yield Sandbox.connect(sandbox_id, client=client).desktop


def _value(text: str) -> Any:
    """A command-line value: JSON where it parses (numbers, lists), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


@desktop_app.command()
def screenshot(
    sandbox_id: SandboxArg,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="File to write ('-': stdout).")
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="png, jpeg or webp [default: from -o, else png].")
    ] = "",
    region: Annotated[str | None, typer.Option(help="x,y,width,height of the screen.")] = None,
    scale: Annotated[float | None, typer.Option(help="Resize by this factor.")] = None,
) -> None:
    """Save the screen as it is now (default: screenshot.png)."""
    output = output or Path("screenshot.png")
    suffix = output.suffix.lower().lstrip(".").replace("jpg", "jpeg")
    chosen = fmt or (suffix if suffix in ("png", "jpeg", "webp") else "png")
    if chosen not in ("png", "jpeg", "webp"):
        fail(f"--format must be png, jpeg or webp, not {chosen!r}", 2)
    box = None
    if region is not None:
        try:
            x, y, w, h = (int(v) for v in region.split(","))
        except ValueError:
            fail(f"--region is x,y,width,height, not {region!r}", 2)
        box = (x, y, w, h)
    kind: Literal["png", "jpeg", "webp"] = chosen  # type: ignore[assignment]
    with _desktop(sandbox_id) as desktop:
        data = desktop.screenshot(format=kind, region=box, scale=scale)
    if str(output) == "-":
        sys.stdout.buffer.write(data)
    else:
        output.write_bytes(data)


@desktop_app.command()
def act(
    sandbox_id: SandboxArg,
    action: Annotated[str, typer.Argument(help="move, click, type, key, scroll, windows, ...")],
    fields: Annotated[
        list[str] | None, typer.Argument(help="name=value (JSON values: x=10 path=[[1,2],[3,4]]).")
    ] = None,
    shot: ShotOption = False,
) -> None:
    """Do any action of the computer-use API and print its JSON answer."""
    values = {}
    for item in fields or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            fail(f"an action's field is name=value, not {item!r}", 2)
        values[name] = _value(value)
    if shot:
        values["screenshot"] = True
    with _desktop(sandbox_id) as desktop:
        print_json(desktop.act(action, **values))


@desktop_app.command()
def click(
    sandbox_id: SandboxArg,
    x: Annotated[int | None, typer.Argument()] = None,
    y: Annotated[int | None, typer.Argument()] = None,
    button: Annotated[str, typer.Option(help="left, middle or right.")] = "left",
    count: Annotated[int, typer.Option(help="2: a double click, 3: a triple click.")] = 1,
) -> None:
    """Click at X Y (or where the pointer is)."""
    with _desktop(sandbox_id) as desktop:
        print_json(desktop.act("click", x=x, y=y, button=button, count=count))


@desktop_app.command()
def move(sandbox_id: SandboxArg, x: int, y: int) -> None:
    """Move the pointer to X Y."""
    with _desktop(sandbox_id) as desktop:
        print_json(desktop.move(x, y))


@desktop_app.command("type")
def type_text(sandbox_id: SandboxArg, text: str) -> None:
    """Type TEXT as key presses."""
    with _desktop(sandbox_id) as desktop:
        print_json(desktop.type(text))


@desktop_app.command()
def key(sandbox_id: SandboxArg, keys: str) -> None:
    """Press keys: xdotool names, combinations with '+' (ctrl+l, Return)."""
    with _desktop(sandbox_id) as desktop:
        print_json(desktop.key(keys))


@desktop_app.command("open")
def open_url(sandbox_id: SandboxArg, url: str) -> None:
    """Open URL in the desktop's Chromium."""
    with _desktop(sandbox_id) as desktop:
        print_json(desktop.open_url(url))
