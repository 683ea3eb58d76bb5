"""What every CLI command shares: consoles, the --json option, error reporting."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sietch.errors import SietchError

T = TypeVar("T")

out = Console(highlight=False, soft_wrap=True)
"""Results (tables, ids) go to stdout."""
err = Console(stderr=True, highlight=False)
"""Progress, warnings and errors go to stderr, so stdout stays parseable."""

SERVER_EXTRA = "pip install 'sietch[server]'"
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
LabelOption = Annotated[
    list[str] | None, typer.Option("--label", "-l", help="key=value; repeatable.")
]


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]Error:[/] {message}", markup=True, highlight=False)
    raise typer.Exit(code)


@contextmanager
def api_errors() -> Iterator[None]:
    """Turn SDK errors into one red line and exit status 1 (no traceback)."""
    try:
        yield
    except SietchError as exc:
        fail(f"{exc.message} [dim]({exc.code})[/]")


@contextmanager
def server_side(command: str) -> Iterator[None]:
    """Around the imports of a command that runs the server's own code (``serve``, image
    builds): without the ``server`` extra installed, one line says what to install."""
    try:
        yield
    except ModuleNotFoundError as exc:
        if (exc.name or "sietch").startswith("sietch"):
            raise
        fail(f"{command} needs the server extra ({exc.name} is missing): {escape(SERVER_EXTRA)}")


def parse_pairs(items: list[str] | None, what: str) -> dict[str, str]:
    pairs = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"{what} must be KEY=VALUE, not {item!r}", 2)
        pairs[key] = value
    return pairs


def listing_table(*columns: str) -> Table:
    """The borderless table every listing prints."""
    result = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        result.add_column(column)
    return result


def print_listing(
    items: list[T], render: Callable[[list[T]], Table], *, as_json: bool, quiet: bool
) -> None:
    """The three ways a listing prints: ``--json``, ``--quiet`` (ids only), or a table."""
    if as_json:
        print_json(items)
    elif quiet:
        for item in items:
            out.print(getattr(item, "id", item))
    else:
        out.print(render(items))


def print_json(value: Any) -> None:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    elif isinstance(value, list):
        value = [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def age(when: datetime) -> str:
    seconds = int((datetime.now(UTC) - when).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"
