"""Running build commands: every failure becomes an ImageBuildError with the command's own words."""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from sietch.errors import ImageBuildError

log = logging.getLogger(__name__)

_TAIL = 2000


def tail(text: str, limit: int = _TAIL) -> str:
    """The last ``limit`` characters of ``text``: where a failing tool says what went wrong."""
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    what: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> str:
    """Run one build step and return its stdout; raise :class:`ImageBuildError` if it fails.

    ``what`` names the step for the error message ("download the kernel").
    """
    args = [os.fspath(a) for a in argv]
    log.debug("running: %s", shlex.join(args))
    started = time.monotonic()
    try:
        result = subprocess.run(
            args,
            cwd=cwd,
            env=None if env is None else {**os.environ, **env},
            stdin=subprocess.DEVNULL,  # mmdebstrap reads sources from a non-tty stdin
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise ImageBuildError(
            f"cannot {what}: {args[0]} is not installed (run ./bootstrap.sh install)",
            command=shlex.join(args),
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise ImageBuildError(
            f"cannot {what}: {args[0]} took longer than {timeout:.0f}s",
            command=shlex.join(args),
        ) from exc
    log.debug("%s took %.2fs (exit %d)", args[0], time.monotonic() - started, result.returncode)
    if result.returncode != 0:
        output = tail(result.stderr) or tail(result.stdout) or "no output"
        raise ImageBuildError(
            f"cannot {what}: {Path(args[0]).name} exited with {result.returncode}: {output}",
            command=shlex.join(args),
            exit_code=result.returncode,
        )
    return result.stdout
