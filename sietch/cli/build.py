"""``sietch build``: a user image from a Dockerfile, built by the server (like docker build)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.status import Status

from sietch.cli._common import JsonOption, api_errors, err, fail, out, parse_pairs, print_json
from sietch.client import Client
from sietch.errors import ImageBuildError

build_app = typer.Typer()

TagOption = Annotated[str, typer.Option("-t", "--tag", help="The image's name.")]


def progress_printer(status: Status) -> Any:
    """An ``on_event`` that shows the running step in ``status`` and prints each step and
    its output as it comes."""

    def show(event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "step":
            line = f"[{event['index']}/{event['total']}] {event['instruction']}"
            err.print(f"[bold]{escape(line)}[/]" + (" [dim](cached)[/]" if event["cached"] else ""))
            status.update(escape(line))
        elif kind == "output":
            err.out(event["data"], end="", highlight=False)
        elif kind == "log":
            status.update(escape(event["message"]))

    return show


@build_app.command()
def build(
    tag: TagOption,
    context: Annotated[Path, typer.Argument(help="The build context directory.")] = Path("."),
    *,
    file: Annotated[
        Path | None, typer.Option("-f", "--file", help="The Dockerfile (CONTEXT/Dockerfile).")
    ] = None,
    build_arg: Annotated[
        list[str] | None, typer.Option("--build-arg", help="KEY=VALUE for an ARG; repeatable.")
    ] = None,
    disk_mib: Annotated[int | None, typer.Option(help="The image's disk size.")] = None,
    internet: Annotated[
        bool | None, typer.Option("--internet/--no-internet", help="RUN steps reach the internet.")
    ] = None,
    allow: Annotated[
        list[str] | None, typer.Option(help="A CIDR or domain RUN steps may reach; repeatable.")
    ] = None,
    json: JsonOption = False,
) -> None:
    """Build a user image from a Dockerfile on the server: RUN steps run in Sietch sandboxes,
    each step is cached, and the image ends as a template ('sietch create NAME')."""
    args = parse_pairs(build_arg, "--build-arg")
    with api_errors(), Client() as client, err.status("Sending the context…") as status:
        try:
            image = client.images.build(
                tag, context, dockerfile=file, build_args=args, disk_mib=disk_mib,
                internet=internet, allow=allow, on_event=progress_printer(status),
            )  # fmt: skip
        except ImageBuildError as exc:
            status.stop()
            output = exc.details.get("output")
            if output:
                err.print("[dim]--- output of the failed step ---[/]")
                err.out(output[-4000:], highlight=False)
            code = exc.details.get("exit_code")
            suffix = f" (exit code {code})" if code is not None else ""
            fail(escape(exc.message) + suffix)
        except OSError as exc:
            fail(f"cannot read the build context or Dockerfile: {exc}", 2)
    print_json(image) if json else out.print(image.name)
