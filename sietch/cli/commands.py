"""Running commands: ``sietch exec`` (streamed output) and ``sietch shell`` (a PTY)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import termios
import tty
from collections.abc import Callable, Iterator
from typing import Annotated

import typer

from sietch.cli._common import JsonOption, api_errors, fail, parse_pairs, print_json
from sietch.client import AsyncSandbox, CommandResult, Sandbox

commands_app = typer.Typer()

EXIT_TIMED_OUT = 124
"""What coreutils' ``timeout`` returns; scripts already know it."""
EXIT_HUNG_UP = 128 + signal.SIGHUP
_HANGUPS = (signal.SIGHUP, signal.SIGTERM)


def exit_status(result: CommandResult) -> int:
    if result.timed_out:
        return EXIT_TIMED_OUT
    if result.exit_code is None:
        return 128 + (result.signal or 0)
    return result.exit_code


def _write(stream: int) -> Callable[[bytes], None]:
    fd = sys.stdout.fileno() if stream == 1 else sys.stderr.fileno()

    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    return write


@contextlib.contextmanager
def _interrupt_exits() -> Iterator[None]:
    """Ctrl-C leaves quietly with 130, as a shell does (the command goes on in the guest)."""
    try:
        yield
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@commands_app.command(
    "exec", context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True}
)
def exec_command(  # noqa: PLR0917 - typer passes options by name
    sandbox_id: str,
    command: Annotated[list[str], typer.Argument(help="One argument runs in a shell.")],
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE.")] = None,
    cwd: Annotated[str | None, typer.Option("--cwd", "-w", help="Working directory.")] = None,
    user: Annotated[str | None, typer.Option("--user", "-u")] = None,
    timeout: Annotated[float | None, typer.Option(help="Kill the command after seconds.")] = None,
    stdin: Annotated[
        bool, typer.Option("--stdin", "-i", help="Send this process's stdin to the command.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Run a command in a sandbox, streaming its output; exits with the command's status."""
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        fail("give a command to run", 2)
    cmd: str | list[str] = command[0] if len(command) == 1 else command
    data = sys.stdin.buffer.read() if stdin else None
    with api_errors(), _interrupt_exits():
        sb = Sandbox.connect(sandbox_id)
        try:
            if as_json:
                result = sb.exec(
                    cmd, env=parse_pairs(env, "--env"), cwd=cwd, user=user, timeout=timeout,
                    stdin=data,
                )  # fmt: skip
            else:
                result = sb.exec(
                    cmd,
                    env=parse_pairs(env, "--env"),
                    cwd=cwd,
                    user=user,
                    timeout=timeout,
                    stdin=data,
                    on_stdout=_write(1),
                    on_stderr=_write(2),
                )
        finally:
            sb.close()
    if as_json:
        print_json(
            {
                "exit_code": result.exit_code,
                "signal": result.signal,
                "timed_out": result.timed_out,
                "duration_s": result.duration_s,
                "stdout": result.stdout,
                "stderr": result.stderr,
            }
        )
    raise typer.Exit(exit_status(result))


@commands_app.command()
def shell(
    sandbox_id: str,
    command: Annotated[
        str | None, typer.Option("--cmd", "-c", help="Run this instead of a login shell.")
    ] = None,
    user: Annotated[str | None, typer.Option("--user", "-u")] = None,
    cwd: Annotated[str | None, typer.Option("--cwd", "-w")] = None,
) -> None:
    """An interactive terminal in a sandbox, like ``docker exec -it``."""
    with api_errors():
        code = asyncio.run(_shell(sandbox_id, command, user, cwd))
    raise typer.Exit(code)


def _terminal_size(fd: int) -> tuple[int, int]:
    """Columns and rows of the terminal on ``fd``, asked of the terminal itself: $COLUMNS and
    $LINES (which shutil prefers) are stale after a resize, or inherited from elsewhere."""
    try:
        size = os.get_terminal_size(fd)
    except OSError:  # not a terminal
        size = shutil.get_terminal_size()
    return size.columns, size.lines


async def _shell(sandbox_id: str, command: str | None, user: str | None, cwd: str | None) -> int:
    loop = asyncio.get_running_loop()
    stdin_fd, stdout_fd = sys.stdin.fileno(), sys.stdout.fileno()
    interactive = os.isatty(stdin_fd)
    cols, rows = _terminal_size(stdout_fd)
    env = {"TERM": os.environ.get("TERM", "xterm-256color")}
    async with await AsyncSandbox.connect(sandbox_id) as sb:
        pty = await sb.pty(command, cols=cols, rows=rows, env=env, user=user, cwd=cwd)
        typed: asyncio.Queue[bytes] = asyncio.Queue()

        def on_input() -> None:
            data = os.read(stdin_fd, 65536)
            if not data:  # stdin closed (not a terminal): stop reading, the shell goes on
                loop.remove_reader(stdin_fd)
                return
            typed.put_nowait(data)

        async def forward_input() -> None:
            while True:
                await pty.send(await typed.get())

        resizes: set[asyncio.Task[None]] = set()

        def on_resize() -> None:
            task = loop.create_task(pty.resize(*_terminal_size(stdout_fd)))
            resizes.add(task)
            task.add_done_callback(resizes.discard)

        # Our own terminal going away must hang up the remote one too (pty.close() below
        # sends SIGHUP), or the guest's shell would live on as a background job.
        main = asyncio.current_task()
        assert main is not None
        for sig in _HANGUPS:
            loop.add_signal_handler(sig, main.cancel)
        saved = termios.tcgetattr(stdin_fd) if interactive else None
        sender = asyncio.create_task(forward_input())
        try:
            if interactive:
                tty.setraw(stdin_fd)
                loop.add_signal_handler(signal.SIGWINCH, on_resize)
            loop.add_reader(stdin_fd, on_input)
            async for chunk in pty:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(stdout_fd, view) :]
        except (asyncio.CancelledError, OSError):  # hung up, or our terminal is gone
            return EXIT_HUNG_UP
        finally:
            loop.remove_reader(stdin_fd)
            for sig in (*_HANGUPS, signal.SIGWINCH):
                loop.remove_signal_handler(sig)
            if saved is not None:
                with contextlib.suppress(termios.error, OSError):
                    termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            await pty.close()
        result = pty.result
    return exit_status(result) if result is not None else 1
