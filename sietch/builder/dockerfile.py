"""A Dockerfile parser: the instructions Sietch can honour, and a clear error for the rest.

Pure logic, no I/O. :func:`parse` turns the text into :class:`Instruction` s
with variables (``ARG``, ``ENV``) substituted where Docker substitutes them;
``RUN`` keeps its text, as its shell expands what it sees at run time. An
instruction Sietch cannot honour (``VOLUME``, ``ONBUILD``, ``COPY --from``,
``ADD`` of a URL, a second ``FROM``, an unknown one) fails with the line it is on,
never silently ignored.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field

from sietch.errors import InvalidArgument

_FLAGS = {"COPY": {"chown", "chmod"}, "ADD": {"chown", "chmod"}}
_HEALTH_FLAGS = {"interval", "timeout", "start-period", "start-interval", "retries"}
_UNSUPPORTED = {
    "VOLUME": "volumes: sandboxes have one disk; write to a directory instead",
    "ONBUILD": "ONBUILD triggers",
    "STOPSIGNAL": "STOPSIGNAL (sandboxes are killed, not stopped)",
    "SHELL": "SHELL (RUN uses /bin/sh -c)",
    "MAINTAINER": "MAINTAINER (deprecated: use LABEL maintainer=...)",
}
_KNOWN = {
    "FROM", "RUN", "COPY", "ADD", "ENV", "ARG", "WORKDIR", "USER", "LABEL", "EXPOSE",
    "CMD", "ENTRYPOINT", "HEALTHCHECK",
}  # fmt: skip
_VAR = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<op>[-+])(?P<word>[^}]*))?\}"
                  r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")  # fmt: skip


@dataclass(frozen=True)
class Instruction:
    """One instruction, its arguments already resolved; ``line`` is where it starts (1-based)."""

    kind: str
    line: int
    args: tuple[str, ...] = ()
    """RUN/CMD/ENTRYPOINT: the argv (exec form) or one shell string; COPY/ADD: sources then
    the destination; ENV/LABEL/ARG: ``key=value`` pairs; the rest: their words."""
    shell: bool = False
    """RUN/CMD/ENTRYPOINT/HEALTHCHECK in shell form (``/bin/sh -c`` the one string)."""
    flags: tuple[tuple[str, str], ...] = ()

    def flag(self, name: str) -> str | None:
        return dict(self.flags).get(name)

    def canonical(self) -> str:
        """A stable text of what it does (the cache key's part), independent of the line."""
        return json.dumps([self.kind, list(self.args), self.shell, list(self.flags)])


@dataclass
class Dockerfile:
    base: str
    instructions: list[Instruction] = field(default_factory=list)
    """Everything after ``FROM``, in order."""
    args: dict[str, str] = field(default_factory=dict)
    """Build arguments in effect (declared ``ARG`` s with their values)."""


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Join continuation lines (a trailing backslash), drop comments and blank lines."""
    out: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):  # comments inside a continuation vanish
            continue
        if not pending:
            start = number
        if raw.rstrip().endswith("\\"):
            pending.append(raw.rstrip()[:-1])
            continue
        pending.append(raw)
        out.append((start, " ".join(p.strip() for p in pending if p.strip())))
        pending = []
    if pending:
        out.append((start, " ".join(p.strip() for p in pending if p.strip())))
    return out


def substitute(word: str, values: dict[str, str]) -> str:
    """``$X``, ``${X}``, ``${X:-default}``, ``${X:+alt}`` as Docker expands them."""

    def one(m: re.Match[str]) -> str:
        name = m.group("braced") or m.group("plain")
        value = values.get(name)
        if m.group("op") == "-":
            return value if value else m.group("word")
        if m.group("op") == "+":
            return m.group("word") if value else ""
        return value or ""

    return _VAR.sub(one, word)


def _error(line: int, message: str) -> InvalidArgument:
    return InvalidArgument(f"Dockerfile line {line}: {message}", line=line)


def _split_flags(line: int, kind: str, rest: str, allowed: set[str]) -> tuple[dict[str, str], str]:
    flags: dict[str, str] = {}
    while rest.startswith("--"):
        word, _, rest = rest.partition(" ")
        name, eq, value = word[2:].partition("=")
        if name == "from" and kind in ("COPY", "ADD"):
            raise _error(line, f"{kind} --from (multi-stage builds) is not supported")
        if name not in allowed or not eq:
            raise _error(line, f"{kind} does not support the flag --{name}")
        flags[name] = value
        rest = rest.lstrip()
    return flags, rest


def _json_or_shell(rest: str) -> tuple[tuple[str, ...], bool]:
    if rest.startswith("["):
        try:
            value = json.loads(rest)
        except ValueError:
            value = None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value), False
    return (rest,), True


def _pairs(line: int, kind: str, rest: str, values: dict[str, str]) -> list[tuple[str, str]]:
    """``KEY=value ...`` (quotes allowed) or the legacy ``KEY value`` form."""
    try:
        words = shlex.split(rest, posix=True)
    except ValueError as exc:
        raise _error(line, f"{kind}: {exc}") from None
    if not words:
        raise _error(line, f"{kind} needs arguments")
    if "=" not in words[0]:
        key, _, value = rest.partition(" ")
        return [(key, substitute(value.strip(), values))]
    pairs = []
    for word in words:
        key, eq, value = word.partition("=")
        if not eq or not key:
            raise _error(line, f"{kind}: expected KEY=value, got {word!r}")
        pairs.append((key, substitute(value, values)))
    return pairs


def _args(
    line: int, rest: str, values: dict[str, str], given: dict[str, str]
) -> list[tuple[str, str]]:
    """``ARG a b=default``: each name with its ``--build-arg`` value (taken from ``given``)."""
    if not rest:
        raise _error(line, "ARG needs a name")
    out = []
    for word in shlex.split(rest):
        key, _, default = word.partition("=")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise _error(line, f"ARG: invalid name {key!r}")
        out.append((key, given.pop(key, substitute(default, values))))
    return out


def parse(text: str, build_args: dict[str, str] | None = None) -> Dockerfile:
    """Parse a Dockerfile; ``build_args`` give values to its ``ARG`` s (``--build-arg``)."""
    given = dict(build_args or {})
    args: dict[str, str] = {}
    env: dict[str, str] = {}
    base: str | None = None
    out: list[Instruction] = []
    for line, logical in _logical_lines(text):
        word, _, rest = logical.partition(" ")
        kind, rest = word.upper(), rest.strip()
        values = {**args, **env}
        if kind in _UNSUPPORTED:
            raise _error(line, f"{_UNSUPPORTED[kind]} are not supported by Sietch")
        if kind not in _KNOWN:
            raise _error(line, f"unknown instruction {word!r}")
        if base is None and kind not in ("FROM", "ARG"):
            raise _error(line, f"{kind} before FROM")
        if kind == "FROM":
            base = _from(line, rest, values, base)
            continue
        if kind == "ARG":
            for key, value in _args(line, rest, values, given):
                args[key] = value
                if base is not None:
                    out.append(Instruction("ARG", line, (f"{key}={value}",)))
            continue
        if not rest:
            raise _error(line, f"{kind} needs arguments")
        out.append(_instruction(line, kind, rest, values, env))
    if base is None:
        raise InvalidArgument("the Dockerfile has no FROM")
    if given:
        raise InvalidArgument(f"build arguments not declared with ARG: {', '.join(sorted(given))}")
    return Dockerfile(base=base, instructions=out, args=args)


def _from(line: int, rest: str, values: dict[str, str], base: str | None) -> str:
    if base is not None:
        raise _error(line, "a second FROM (multi-stage builds) is not supported")
    words = substitute(rest, values).split()
    if len(words) != 1:
        raise _error(line, "FROM takes one image name (no AS, no --platform)")
    return words[0]


def _port(line: int, word: str) -> str:
    port, _, proto = word.partition("/")
    if not port.isdigit() or not 1 <= int(port) <= 65535 or proto not in ("", "tcp"):
        raise _error(line, f"EXPOSE {word}: only TCP ports 1-65535 can be exposed")
    return port


def _healthcheck(line: int, rest: str) -> Instruction:
    flags, rest = _split_flags(line, "HEALTHCHECK", rest, _HEALTH_FLAGS)
    head, _, command = rest.partition(" ")
    if head.upper() == "NONE":
        return Instruction("HEALTHCHECK", line, (), flags=tuple(sorted(flags.items())))
    if head.upper() != "CMD" or not command.strip():
        raise _error(line, "HEALTHCHECK takes CMD <command> or NONE")
    argv, shell = _json_or_shell(command.strip())
    return Instruction("HEALTHCHECK", line, argv, shell=shell, flags=tuple(sorted(flags.items())))


def _copy(line: int, kind: str, rest: str, values: dict[str, str]) -> Instruction:
    flags, rest = _split_flags(line, kind, rest, _FLAGS[kind])
    words, _ = _json_or_shell(rest)
    if len(words) == 1:
        words = tuple(shlex.split(rest))
    words = tuple(substitute(w, values) for w in words)
    if len(words) < 2:
        raise _error(line, f"{kind} needs at least one source and a destination")
    if kind == "ADD" and any(re.match(r"^[a-z]+://", w) for w in words[:-1]):
        raise _error(line, "ADD of a URL is not supported (RUN curl it instead)")
    clean = {k: substitute(v, values) for k, v in flags.items()}
    return Instruction(kind, line, words, flags=tuple(sorted(clean.items())))


def _instruction(
    line: int, kind: str, rest: str, values: dict[str, str], env: dict[str, str]
) -> Instruction:
    if kind in ("RUN", "CMD", "ENTRYPOINT"):
        argv, shell = _json_or_shell(rest)
        return Instruction(kind, line, argv, shell=shell)
    if kind == "HEALTHCHECK":
        return _healthcheck(line, rest)
    if kind in ("COPY", "ADD"):
        return _copy(line, kind, rest, values)
    if kind in ("ENV", "LABEL"):
        pairs = _pairs(line, kind, rest, values)
        if kind == "ENV":
            env.update(pairs)
        return Instruction(kind, line, tuple(f"{k}={v}" for k, v in pairs))
    if kind == "WORKDIR":
        return Instruction(kind, line, (substitute(rest, values).strip(),))
    words = tuple(substitute(rest, values).split())
    if kind == "USER" and len(words) != 1:
        raise _error(line, "USER takes one argument")
    if kind == "EXPOSE":
        words = tuple(_port(line, w) for w in words)
    return Instruction(kind, line, words)
