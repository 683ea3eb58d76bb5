"""``sietch serve``: run the API server.

The server's modules (and ``sietch.config``, with pydantic-settings) are
imported when the command runs: the rest of the CLI is a client and loads none
of them, so it works where only the SDK is installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError
from rich.panel import Panel

from sietch.cli._common import api_errors, err, fail, server_side
from sietch.errors import describe_validation

if TYPE_CHECKING:
    from sietch.config import Settings
    from sietch.core.tenants import TenantStore

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
        bool,
        typer.Option(
            "--new-api-key",
            help="Create another admin key of tenant 'default' and show it once "
            "(sietch keys create makes any other).",
        ),
    ] = False,
    log_format: Annotated[str, typer.Option(help="json (one object per line) or text.")] = "json",
    tls_cert: Annotated[
        Path | None, typer.Option(help="PEM certificate: serve HTTPS [SIETCH_TLS_CERT].")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(help="PEM private key of --tls-cert [SIETCH_TLS_KEY].")
    ] = None,
    node: Annotated[
        bool,
        typer.Option(
            "--node",
            help="Serve as a cluster node: on SIETCH_INTERNAL_PORT, for gateways only "
            "(SIETCH_ROLE=node; needs SIETCH_CATALOG_URL and SIETCH_CLUSTER_SECRET).",
        ),
    ] = False,
    gateway: Annotated[
        bool,
        typer.Option(
            "--gateway",
            help="Serve as a cluster gateway: the public API, forwarded to the nodes "
            "(SIETCH_ROLE=gateway).",
        ),
    ] = False,
) -> None:
    """Start the Sietch API server (sandboxes keep running across restarts)."""
    options = {"host": host, "port": port, "tls_cert": tls_cert, "tls_key": tls_key}
    overrides: dict[str, object] = {k: v for k, v in options.items() if v is not None}
    if no_auth:
        overrides["auth"] = False
    if node and gateway:
        fail("--node and --gateway exclude each other: one role per process", 2)
    if node or gateway:
        overrides["role"] = "node" if node else "gateway"
    # Settings first: a refused value is reported before the server's modules load.
    settings = _settings(overrides)
    with server_side("sietch serve"):
        from sietch.server.run import serve as run_server

    with api_errors():  # a bad SIETCH_TENANT_QUOTA: one line, no traceback
        tenants = _tenants(settings, new_api_key)
    if not settings.auth:
        err.print(
            Panel(
                f"Authentication is OFF: any process that can reach {settings.host}:"
                f"{settings.port} can run code in your sandboxes.",
                title="WARNING",
                border_style="bold red",
            )
        )
    scheme = "https" if settings.tls_cert else "http"
    if settings.role == "node":
        err.print(f"Node {settings.node_name} serving gateways on {settings.advertised_node_url}")
    else:
        err.print(f"Serving on {scheme}://{settings.host}:{settings.port} (docs at /docs)")
    run_server(settings, tenants=tenants, log_format=log_format)


def _settings(overrides: dict[str, object]) -> Settings:
    """The environment's settings with the command line's on top; a bad value exits 2."""
    with server_side("sietch serve"):
        from sietch.config import Settings

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        fail(describe_validation(exc.errors()), 2)


def _tenants(settings: Settings, new_api_key: bool) -> TenantStore:
    """The tenants catalog; a key made now (the first, or ``--new-api-key``) is shown once."""
    import secrets

    from sietch.server.app import open_tenants

    tenants, new = open_tenants(settings)
    if new_api_key and settings.auth and new is None:
        new = tenants.create_key("default", f"admin-{secrets.token_hex(3)}", admin=True)[1]
    if new:
        where = "the cluster catalog" if settings.role != "standalone" else settings.tenants_path
        err.print(
            Panel(
                f"[bold]{new}[/]\n\nAn admin key of tenant 'default', shown only now (its "
                f"hash is in {where}). Clients read it from SIETCH_API_KEY:\n"
                f"  export SIETCH_API_KEY={new}",
                title="New API key",
                border_style="green",
            )
        )
    return tenants
