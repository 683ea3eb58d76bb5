"""Lifecycle commands: hibernate a sandbox, change its timeouts."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from sietch.cli._common import JsonOption, api_errors, err, out, print_json
from sietch.client import NOT_GIVEN, Client, Sandbox

lifecycle_app = typer.Typer()

Action = Literal["kill", "pause", "hibernate"]
OnTimeoutOption = Annotated[
    Action | None,
    typer.Option(help="What the timeout does: kill (delete), pause or hibernate (default: kill)."),
]
IdleTimeoutOption = Annotated[
    float | None,
    typer.Option("--idle-timeout", help="Seconds without API calls, commands or connections."),
]
OnIdleOption = Annotated[
    Action | None, typer.Option(help="What the idle timeout does (default: hibernate).")
]
AutoResumeOption = Annotated[
    bool | None,
    typer.Option(
        "--auto-resume/--no-auto-resume",
        help="Wake a paused or hibernated sandbox on any call to it (default: on).",
    ),
]


@lifecycle_app.command()
def hibernate(sandbox_id: str) -> None:
    """Save a sandbox to disk and end its VM (`sietch resume ID`, or any call, wakes it)."""
    with api_errors(), Client() as client, err.status("Hibernating…"):
        Sandbox.connect(sandbox_id, client=client).hibernate()
    out.print(sandbox_id)


@lifecycle_app.command()
def timeout(  # noqa: PLR0917 - typer passes options by name
    sandbox_id: str,
    seconds: Annotated[
        float | None, typer.Argument(help="From now; 0: no timeout; left out: unchanged.")
    ] = None,
    on_timeout: OnTimeoutOption = None,
    idle_timeout: IdleTimeoutOption = None,
    on_idle: OnIdleOption = None,
    auto_resume: AutoResumeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Set a sandbox's timeout (counted from now), its idle timeout (0: none) and what
    they do."""
    with api_errors(), Client() as client:
        sb = Sandbox.connect(sandbox_id, client=client)
        info = sb.set_timeout(
            NOT_GIVEN if seconds is None else seconds or None,
            on_timeout=on_timeout,
            idle_timeout_s=NOT_GIVEN if idle_timeout is None else idle_timeout or None,
            on_idle=on_idle,
            auto_resume=auto_resume,
        )
    if as_json:
        print_json(info)
    else:
        out.print(f"{sandbox_id} expires {info.expires_at or 'never'}")
