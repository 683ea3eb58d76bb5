"""What both SDKs do for images without I/O: pack a build context, name the calls, read events.

A build uploads its context as a tar with the Dockerfile inside it as
``.sietch-dockerfile`` (it may live outside the context, as with
``docker build -f``); the server streams NDJSON events back, the last one
``done`` (with the image) or ``error``.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from sietch.client._core import Call, _model, _models, _none
from sietch.client._models import ImageInfo
from sietch.errors import ImageBuildError, error_for_code

EventCallback = Callable[[dict[str, Any]], Any]
"""Hears each build event: ``step``, ``output``, ``log``, ``done``."""
CLIENT_DOCKERFILE = ".sietch-dockerfile"
BUILD_TIMEOUT_S = None
"""No limit: a build takes as long as its steps (each step's output keeps it alive)."""


def pack_context(
    context: str | os.PathLike[str] | None, dockerfile: str | None, dockerfile_text: str | None
) -> IO[bytes]:
    """The build context directory (``None``: empty) and the Dockerfile as one tar file."""
    root = Path(context) if context is not None else None
    if dockerfile_text is None:
        path = Path(dockerfile) if dockerfile else (root or Path()) / "Dockerfile"
        dockerfile_text = path.read_text()
    out = tempfile.TemporaryFile()  # noqa: SIM115 (returned open: the caller streams it)
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        if root is not None:
            for entry in sorted(root.iterdir()):
                if entry.name != CLIENT_DOCKERFILE:
                    tar.add(entry, arcname=entry.name)
        data = dockerfile_text.encode()
        info = tarfile.TarInfo(CLIENT_DOCKERFILE)
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    out.seek(0)
    return out


def build_call(
    name: str,
    *,
    build_args: Mapping[str, str] | None,
    disk_mib: int | None,
    internet: bool | None,
    allow: Sequence[str] | None,
) -> Call[None]:
    params: list[tuple[str, str]] = [("name", name), ("dockerfile", CLIENT_DOCKERFILE)]
    params += [("build_arg", f"{k}={v}") for k, v in (build_args or {}).items()]
    if disk_mib is not None:
        params.append(("disk_mib", str(disk_mib)))
    if internet is not None:
        params.append(("internet", "true" if internet else "false"))
    params += [("allow", a) for a in allow or []]
    return Call("POST", "/images", _none, params=params, timeout=BUILD_TIMEOUT_S)


def import_call(name: str) -> Call[None]:
    return Call("POST", "/images/import", _none, params=[("name", name)], timeout=BUILD_TIMEOUT_S)


def list_call() -> Call[builtins.list[ImageInfo]]:
    return Call("GET", "/images", _models(ImageInfo))


def get_call(name: str) -> Call[ImageInfo]:
    return Call("GET", f"/images/{name}", _model(ImageInfo))


def delete_call(name: str) -> Call[None]:
    return Call("DELETE", f"/images/{name}", _none, timeout=60.0)


def prune_call() -> Call[builtins.list[str]]:
    return Call("POST", "/images/prune", lambda r: list(r.json()["removed"]), timeout=300.0)


class BuildEvents:
    """Reads the NDJSON lines of a build; :attr:`image` once ``done``, raises on ``error``."""

    def __init__(self) -> None:
        self.image: ImageInfo | None = None

    def feed(self, line: str) -> dict[str, Any] | None:
        if not line.strip():
            return None
        event: dict[str, Any] = json.loads(line)
        if event.get("type") == "done":
            self.image = ImageInfo.model_validate(event["image"])
        elif event.get("type") == "error":
            body = event.get("error") or {}
            raise error_for_code(
                body.get("code", "internal"),
                body.get("message", "the build failed"),
                **(body.get("details") or {}),
            )
        return event

    def result(self) -> ImageInfo:
        if self.image is None:
            raise ImageBuildError("the build's event stream ended before it was done")
        return self.image
