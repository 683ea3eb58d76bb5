"""A build as steps: each instruction's cache key and the image config it leaves behind.

Pure logic. A step's key is BuildKit's recipe: the hash of its parent's key,
the instruction (with its resolved arguments) and, for ``COPY``/``ADD``, the
content of the files it reads. Metadata steps (``ENV``, ``USER``, ...) change
no disk but are in the chain, so a ``RUN`` after a changed ``ENV`` runs again.
The Dockerfile path and the Python template builder make the same
instructions, hence the same keys.
"""

from __future__ import annotations

import hashlib
import posixpath
import shlex
from dataclasses import dataclass, field

from sietch.builder.context import Context, Source
from sietch.builder.dockerfile import Dockerfile, Instruction
from sietch.core.models import ImageConfig

DISK_STEPS = frozenset({"RUN", "COPY", "ADD", "WORKDIR"})
"""Steps that change the disk: each leaves a cached layer."""
_KEY_FORMAT = 1


def chain_key(parent: str, *parts: str) -> str:
    h = hashlib.sha256(f"{_KEY_FORMAT}\n{parent}".encode())
    for part in parts:
        h.update(b"\0" + part.encode())
    return h.hexdigest()[:32]


def _duration(text: str | None) -> float | None:
    """A HEALTHCHECK duration (``30s``, ``1m30s``, ``500ms``) in seconds."""
    if not text:
        return None
    total, number = 0.0, ""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    i = 0
    while i < len(text):
        if text[i].isdigit() or text[i] == ".":
            number += text[i]
            i += 1
            continue
        unit = "ms" if text.startswith("ms", i) else text[i]
        total += float(number or 0) * units.get(unit, 1.0)
        number, i = "", i + len(unit)
    return total + float(number or 0)


@dataclass
class State:
    """The image config as the instructions so far leave it."""

    env: dict[str, str] = field(default_factory=dict)
    args: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    workdir: str | None = None
    cmd: list[str] | None = None
    entrypoint: list[str] | None = None
    ready: list[str] | None = None
    ready_timeout_s: float | None = None
    expose: list[int] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, config: ImageConfig) -> State:
        """The state a build ``FROM`` an image with ``config`` starts in."""
        return cls(
            env=dict(config.env),
            user=config.user,
            workdir=config.workdir,
            cmd=config.start,
            ready=config.ready,
            ready_timeout_s=config.ready_timeout_s,
            expose=list(config.expose),
            labels=dict(config.labels),
        )

    def resolve(self, path: str) -> str:
        """A path of the image: relative ones are relative to ``WORKDIR``."""
        return posixpath.normpath(posixpath.join(self.workdir or "/", path))

    def apply(self, ins: Instruction) -> None:
        pairs = dict(a.partition("=")[::2] for a in ins.args)
        argv = ["/bin/sh", "-c", ins.args[0]] if ins.shell else list(ins.args)
        match ins.kind:
            case "ENV":
                self.env.update(pairs)
            case "ARG":
                self.args.update(pairs)
            case "LABEL":
                self.labels.update(pairs)
            case "USER":
                self.user = ins.args[0]
            case "WORKDIR":
                self.workdir = self.resolve(ins.args[0])
            case "EXPOSE":
                self.expose += [int(p) for p in ins.args if int(p) not in self.expose]
            case "CMD":
                self.cmd = argv
            case "ENTRYPOINT":
                # A shell-form ENTRYPOINT ignores CMD, as in Docker.
                self.entrypoint, self.cmd = argv, None if ins.shell else self.cmd
            case "HEALTHCHECK":
                self.ready = argv or None
                self.ready_timeout_s = _duration(ins.flag("start-period")) or _duration(
                    ins.flag("timeout")
                )

    def config(self) -> ImageConfig:
        start = [*(self.entrypoint or []), *(self.cmd or [])] or None
        return ImageConfig(
            env=dict(self.env),
            user=self.user,
            workdir=self.workdir,
            start=start,
            ready=self.ready,
            ready_timeout_s=self.ready_timeout_s,
            expose=list(self.expose),
            labels=dict(self.labels),
        )


@dataclass(frozen=True)
class Step:
    instruction: Instruction
    key: str
    sources: tuple[Source, ...] = ()

    @property
    def changes_disk(self) -> bool:
        return self.instruction.kind in DISK_STEPS

    def describe(self) -> str:
        ins = self.instruction
        if ins.kind in ("RUN", "CMD", "ENTRYPOINT", "HEALTHCHECK") and not ins.shell:
            text = " ".join(shlex.quote(a) for a in ins.args)
        else:
            text = " ".join(ins.args)
        flags = " ".join(f"--{k}={v}" for k, v in ins.flags)
        return " ".join(p for p in (ins.kind, flags, text) if p)


def plan(dockerfile: Dockerfile, base_key: str, context: Context) -> list[Step]:
    """Every step of the build with its cache key."""
    steps, key = [], base_key
    for ins in dockerfile.instructions:
        sources: list[Source] = []
        extra = ""
        if ins.kind in ("COPY", "ADD"):
            for pattern in ins.args[:-1]:
                sources += context.sources(pattern, ins.line)
            extra = context.digest(sources)
        key = chain_key(key, ins.canonical(), extra)
        steps.append(Step(ins, key, tuple(sources)))
    return steps
