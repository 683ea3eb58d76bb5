"""``sietch serve``: run the API server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.panel import Panel

from sietch.cli._common import err, fail
from sietch.config import Settings

serve_app = typer.Typer()


@serve_app.command()
def serve(  # noqa: PLR0917 - typer passes options by name
    host: Annotated[
        str | None, typer.Option(help="Address to bind [default: 127.0.0.1, SIETCH_HOST].")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to bind [default: 7000, SIETCH_PORT].")
    ] = None,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Accept requests without an API key (loopback only).")
    ] = False,
    new_api_key: Annotated[
        bool, typer.Option("--new-api-key", help="Create another API key and show it once.")
    ] = False,
    log_format: Annotated[str, typer.Option(help="json (one object per line) or text.")] = "json",
    tls_cert: Annotated[
        Path | None, typer.Option(help="PEM certificate: serve HTTPS [SIETCH_TLS_CERT].")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(help="PEM private key of --tls-cert [SIETCH_TLS_KEY].")
    ] = None,
) -> None:
    """Start the Sietch API server (sandboxes keep running across restarts)."""
    from sietch.server.auth import ApiKeys
    from sietch.server.run import serve as run_server

    overrides: dict[str, object] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    if no_auth:
        overrides["auth"] = False
    if tls_cert is not None:
        overrides["tls_cert"] = tls_cert
    if tls_key is not None:
        overrides["tls_key"] = tls_key
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        fail("; ".join(_describe(e) for e in exc.errors()), 2)
    keys = None
    if settings.auth:
        keys = ApiKeys(settings.api_keys_path)
        new = keys.add() if new_api_key else keys.ensure()
        if new:
            err.print(
                Panel(
                    f"[bold]{new}[/]\n\nIt is shown only now (its hash is in "
                    f"{settings.api_keys_path}). Clients read it from SIETCH_API_KEY:\n"
                    f"  export SIETCH_API_KEY={new}",
                    title="New API key",
                    border_style="green",
                )
            )
    else:
        err.print(
            Panel(
                f"Authentication is OFF: any process that can reach {settings.host}:"
                f"{settings.port} can run code in your sandboxes.",
                title="WARNING",
                border_style="bold red",
            )
        )
    scheme = "https" if settings.tls_cert else "http"
    err.print(f"Serving on {scheme}://{settings.host}:{settings.port} (docs at /docs)")
    run_server(settings, api_keys=keys, log_format=log_format)


def _describe(error: Any) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    field = ".".join(str(part) for part in error["loc"])
    return f"{field}: {message}" if field else message
