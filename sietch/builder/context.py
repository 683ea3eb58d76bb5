"""The build context: the directory ``COPY`` reads from, minus what ``.dockerignore`` leaves out.

Sources are matched inside the context only: a pattern that climbs out
(``../x``) or a symlink that leads out is an error naming the instruction's
line. What a ``COPY`` reads is hashed (paths, modes, contents), which is its
part of the step's cache key.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import posixpath
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from sietch.errors import InvalidArgument


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A ``.dockerignore`` pattern (Go filepath.Match plus ``**``) as a regex of a path."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        else:
            c = pattern[i]
            out += "[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c)
            i += 1
    return re.compile(out + "(?:/.*)?")


@dataclass(frozen=True)
class _Rule:
    regex: re.Pattern[str]
    keep: bool


def ignore_rules(text: str) -> list[_Rule]:
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        line = posixpath.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append(_Rule(_pattern_regex(line), keep))
    return rules


@dataclass(frozen=True)
class Source:
    rel: str
    """Path inside the context."""
    path: Path


class Context:
    """A build context on the host (an unpacked tar); ``.dockerignore`` applied."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        ignore = self.root / ".dockerignore"
        self.rules = ignore_rules(ignore.read_text()) if ignore.is_file() else []

    def ignored(self, rel: str) -> bool:
        verdict = False
        for rule in self.rules:
            if rule.regex.fullmatch(rel):
                verdict = not rule.keep
        return verdict

    def read_text(self, rel: str) -> str:
        path = self._inside(rel, 0)
        if not path.is_file():
            raise InvalidArgument(f"no {rel} in the build context")
        return path.read_text()

    def _inside(self, rel: str, line: int) -> Path:
        clean = posixpath.normpath(rel.lstrip("/"))
        if clean == ".." or clean.startswith("../"):
            raise InvalidArgument(
                f"Dockerfile line {line}: {rel!r} is outside the build context", line=line
            )
        path = self.root / clean
        real = Path(os.path.realpath(path))
        if real != self.root and not real.is_relative_to(self.root):
            raise InvalidArgument(
                f"Dockerfile line {line}: {rel!r} leads outside the build context", line=line
            )
        return path

    def sources(self, pattern: str, line: int) -> list[Source]:
        """What one COPY source names: a file, a directory or a glob; never empty."""
        base = self._inside(pattern, line)
        clean = posixpath.normpath(pattern.lstrip("/"))
        if any(c in clean for c in "*?["):
            found = [
                rel
                for rel in self._walk("")
                if fnmatch.fnmatchcase(rel, clean) and rel.count("/") == clean.count("/")
            ]
            result = [Source(rel, self.root / rel) for rel in sorted(found)]
        elif base.exists() or base.is_symlink():
            result = [Source("" if clean == "." else clean, base)]
        else:
            result = []
        result = [s for s in result if not s.rel or not self.ignored(s.rel)]
        if not result:
            raise InvalidArgument(
                f"Dockerfile line {line}: {pattern!r} matches nothing in the build context",
                line=line,
            )
        return result

    def _walk(self, rel: str) -> list[str]:
        """Every path under ``rel`` (not following symlinks), ignored ones left out."""
        out = []
        top = self.root / rel
        for dirpath, dirnames, filenames in os.walk(top):
            here = os.path.relpath(dirpath, self.root)
            here = "" if here == "." else here
            for name in sorted(dirnames + filenames):
                child = f"{here}/{name}" if here else name
                if not self.ignored(child):
                    out.append(child)
            dirnames[:] = [d for d in dirnames if not self.ignored(f"{here}/{d}".lstrip("/"))]
        return out

    def files(self, source: Source) -> list[tuple[str, Path]]:
        """``(path relative to the source, host path)`` for the source and all it contains."""
        if source.path.is_dir() and not source.path.is_symlink():
            below = self._walk(source.rel)
            prefix = f"{source.rel}/" if source.rel else ""
            return [(rel.removeprefix(prefix), self.root / rel) for rel in below]
        return [(source.path.name, source.path)]

    def digest(self, sources: list[Source]) -> str:
        """Hash of the paths, types, modes and contents COPY will read."""
        h = hashlib.sha256()
        for source in sources:
            h.update(f"source {source.rel}\n".encode())
            for rel, path in self.files(source):
                st = path.lstat()
                h.update(f"{rel}\0{st.st_mode:o}\0".encode())
                if stat.S_ISLNK(st.st_mode):
                    h.update(os.readlink(path).encode())
                elif stat.S_ISREG(st.st_mode):
                    with open(path, "rb") as f:
                        while chunk := f.read(1 << 20):
                            h.update(chunk)
                h.update(b"\n")
        return h.hexdigest()
