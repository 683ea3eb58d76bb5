"""``sietch run-code``: Python in a code-interpreter sandbox's kernel."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TextIO

import typer

from sietch.cli._common import JsonOption, api_errors, err, out, parse_pairs, print_json
from sietch.client import Execution, Sandbox

code_app = typer.Typer()


def _save_images(execution: Execution, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    saved = []
    for n, result in enumerate(execution.results, 1):
        for kind, data in (("png", result.png), ("jpeg", result.jpeg)):
            if data is not None:
                path = folder / f"result-{n}.{kind}"
                path.write_bytes(data)
                saved.append(path)
    return saved


@code_app.command("run-code")
def run_code(  # noqa: PLR0917 - typer passes options by name
    sandbox_id: str,
    file: Annotated[str, typer.Argument(help="A Python file; - reads stdin.")],
    context: Annotated[str | None, typer.Option(help="A kernel context id.")] = None,
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE.")] = None,
    timeout: Annotated[float, typer.Option(help="Interrupt the code after seconds.")] = 300.0,
    images: Annotated[
        Path | None, typer.Option(help="Save the figures it shows into this folder.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Run a Python file in the sandbox's Jupyter kernel (image code-interpreter), which keeps
    its state between runs; prints its output and value, exits 1 if it raised."""
    code = sys.stdin.read() if file == "-" else Path(file).read_text()
    with api_errors():
        sb = Sandbox.connect(sandbox_id)
        try:
            execution = sb.run_code(
                code,
                context,
                env=parse_pairs(env, "--env"),
                timeout=timeout,
                on_stdout=None if as_json else _write(sys.stdout),
                on_stderr=None if as_json else _write(sys.stderr),
            )
        finally:
            sb.close()
    saved = _save_images(execution, images) if images is not None else []
    if as_json:
        print_json(execution)
    else:
        if execution.text is not None:
            out.print(execution.text, markup=False)
        for path in saved:
            err.print(f"saved {path}", markup=False)
        if execution.error is not None:
            sys.stderr.write(execution.error.traceback.rstrip("\n") + "\n")
    if execution.error is not None:
        raise typer.Exit(1)


def _write(stream: TextIO) -> Callable[[bytes], None]:
    def write(data: bytes) -> None:
        stream.write(data.decode(errors="replace"))
        stream.flush()

    return write
