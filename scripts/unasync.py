#!/usr/bin/env python3
"""Write the synchronous SDK from the asyncio one, as httpcore does.

``sietch/client/_async.py`` is the source; this script rewrites it into
``sietch/client/_sync.py`` with the token rules below (``async def`` to
``def``, ``await`` dropped, ``AsyncSandbox`` to ``Sandbox``, ...). What must
genuinely differ lives in two small hand-written modules,
``sietch/client/_io_async.py`` and ``sietch/client/_io_sync.py``, whose
helpers share names, and in ``SYNC_ONLY``: the few places where the sync
client's text differs (a docstring, ``Pty.recv``'s timeout). Each of those
must match the async source exactly once, so editing one side there stops
this script instead of silently dropping the difference.

    python scripts/unasync.py          # (re)write sietch/client/_sync.py
    python scripts/unasync.py --check  # exit 1 if the committed file is stale
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "sietch" / "client" / "_async.py"
TARGET = ROOT / "sietch" / "client" / "_sync.py"

HEADER = "# Generated from sietch/client/_async.py by scripts/unasync.py: do not edit.\n"

# Module docstring of the generated file (the async one talks about itself).
DOCSTRING = '"""The synchronous SDK: :class:`Client` and :class:`Sandbox`."""\n'

# (pattern, replacement), applied in order to the whole text.
RULES: list[tuple[str, str]] = [
    # the helpers that differ: same names, other module
    (r"\bsietch\.client\._io_async\b", "sietch.client._io_sync"),
    (r"\bwebsockets\.asyncio\.client\b", "websockets.sync.client"),
    (r"\bcontextlib\.asynccontextmanager\b", "contextlib.contextmanager"),
    # syntax
    (r"\basync def\b", "def"),
    (r"\basync for\b", "for"),
    (r"\ban ``async with``", "a ``with``"),
    (r"\basync with\b", "with"),
    # a grouping (await f(x)).y -> f(x).y; not a call's parentheses, g(await f(x))
    (r"(?<![\w)\]])\(await ([\w.]+\([^()]*\))\)", r"\1"),
    (r"\bawait ", ""),
    (r"\b__aenter__\b", "__enter__"),
    (r"\b__aexit__\b", "__exit__"),
    (r"\b__aiter__\b", "__iter__"),
    (r"\b__anext__\b", "__next__"),
    # httpx's async method names
    (r"\.aread\(", ".read("),
    (r"\.aclose\(", ".close("),
    (r"\.aiter_(bytes|text|lines|raw)\(", r".iter_\1("),
    # names: AsyncClient, AsyncSandbox, AsyncIterator, httpx.AsyncClient, AsyncData, ...
    (r"\bAsync(?=[A-Z])", ""),
    # an `async for x in y: yield x` becomes `yield from y`
    (r"\bfor (\w+) in (.+):\n(\s+)yield \1\n", r"yield from \2\n"),
]

# The sync client's own text: (where, async text, sync text); each must occur once.
SYNC_ONLY: list[tuple[str, str, str]] = [
    (
        "Client's docstring",
        '    """One connection pool to a Sietch server, for asyncio code."""\n',
        '    """One connection pool to a Sietch server; sandboxes made through it share it."""\n',
    ),
    (
        "Pty.recv: websockets.sync can wait for a message with a timeout",
        '''    def recv(self) -> bytes | None:
        """The next output; None once the process ended."""
        out = self._stream.next_output()
''',
        '''    def recv(self, timeout: float | None = None) -> bytes | None:
        """The next output; None once the process ended; ``TimeoutError`` after ``timeout``."""
        out = self._stream.next_output(timeout)
''',
    ),
    (
        "Pty.__iter__: a sync iterator can be the generator itself",
        """    def __iter__(self) -> Iterator[bytes]:
        return self._iterate()

    def _iterate(self) -> Iterator[bytes]:
""",
        """    def __iter__(self) -> Iterator[bytes]:
""",
    ),
    (
        "Files.write's docstring",
        '"""Write bytes, text, a file object or an (async) iterable of bytes."""',
        '"""Write bytes, text, a file object or an iterable of bytes (parents are made)."""',
    ),
    (
        "Sandbox.exec's docstring: sync callbacks are plain functions",
        """        Returns its :class:`CommandResult`; with ``on_stdout``/``on_stderr``
        (plain or async functions) the output is handed over as it comes; with
        ``background=True`` it returns an :class:`ProcessHandle` at once.
""",
        """        Returns its :class:`CommandResult`; with ``on_stdout``/``on_stderr`` the
        output is handed over as it comes; with ``background=True`` it returns
        a :class:`ProcessHandle` at once.
""",
    ),
]

# Nothing of asyncio may survive the rewrite.
LEFTOVER = re.compile(r"\basync\b|\bawait\b|\basyncio\b|\bAsync[A-Z]|\ba(read|close|iter_\w+)\(")


def _skip_docstring(text: str) -> str:
    """The source without its module docstring."""
    match = re.match(r'"""(.*?)"""\n', text, re.DOTALL)
    if match is None:
        raise SystemExit(f"{SOURCE}: expected a module docstring first")
    return text[match.end() :]


def generate(source: str, sync_only: list[tuple[str, str, str]] = SYNC_ONLY) -> str:
    """The sync module's text for the async module's ``source``."""
    text = _skip_docstring(source)
    for pattern, replacement in RULES:
        text = re.sub(pattern, replacement, text)
    for where, async_text, sync_text in sync_only:
        count = text.count(async_text)
        if count != 1:
            raise SystemExit(
                f"unasync: {where}: its text occurs {count} times in the rewritten "
                f"{SOURCE.name}, not once; update SYNC_ONLY in {Path(__file__).name}"
            )
        text = text.replace(async_text, sync_text)
    leftovers = [
        f"  {n}: {line.strip()}"
        for n, line in enumerate(text.splitlines(), 1)
        if LEFTOVER.search(line)
    ]
    if leftovers:
        raise SystemExit(
            "unasync: asyncio-only text left after the rules (add a rule, or move it "
            "into sietch/client/_io_async.py):\n" + "\n".join(leftovers)
        )
    return HEADER + DOCSTRING + text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="do not write; exit 1 if _sync.py is out of date"
    )
    args = parser.parse_args(argv)
    expected = generate(SOURCE.read_text())
    if args.check:
        current = TARGET.read_text() if TARGET.exists() else ""
        if current == expected:
            return 0
        diff = difflib.unified_diff(
            current.splitlines(keepends=True),
            expected.splitlines(keepends=True),
            f"{TARGET.relative_to(ROOT)} (committed)",
            f"{TARGET.relative_to(ROOT)} (generated)",
        )
        sys.stdout.writelines(diff)
        print(
            f"\n{TARGET.relative_to(ROOT)} is out of date: run python scripts/unasync.py",
            file=sys.stderr,
        )
        return 1
    if not TARGET.exists() or TARGET.read_text() != expected:
        TARGET.write_text(expected)
        print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
