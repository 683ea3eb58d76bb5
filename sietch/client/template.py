"""A template builder in Python: the steps of a Dockerfile as method calls, E2B-style.

``Template(base="default").apt_install([...]).pip_install([...]).copy(src, dst)
.run("...").env(...).workdir(...).start_cmd("...", ready="...").build(name)``
writes the Dockerfile those steps mean (:meth:`Template.dockerfile`) and
builds it through the server like ``sietch build``: the same engine, the same
instructions, so the same cache keys as that Dockerfile.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterable, Mapping
from typing import Any, Self

from sietch.client._async import AsyncClient
from sietch.client._images import EventCallback
from sietch.client._models import ImageInfo
from sietch.client._sync import Client


def _quote(value: str) -> str:
    return json.dumps(value)


class Template:
    """An image recipe; every method adds a step and returns the template (chainable)."""

    def __init__(self, base: str = "default", *, context: str | os.PathLike[str] = ".") -> None:
        self.context = context
        """The directory :meth:`copy` sources are relative to (the build context)."""
        self._lines = [f"FROM {base}"]

    def _add(self, line: str) -> Self:
        self._lines.append(line)
        return self

    def run(self, command: str) -> Self:
        """A shell command run in the build sandbox (``RUN``)."""
        return self._add(f"RUN {command}")

    def apt_install(self, packages: Iterable[str]) -> Self:
        names = " ".join(shlex.quote(p) for p in packages)
        return self.run(
            "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "
            f"--no-install-recommends {names} && rm -rf /var/lib/apt/lists/*"
        )

    def pip_install(self, packages: Iterable[str]) -> Self:
        """``pip install`` into the image's python (Debian marks it externally managed)."""
        names = " ".join(shlex.quote(p) for p in packages)
        return self.run(f"pip install --no-cache-dir --break-system-packages {names}")

    def copy(self, src: str, dst: str, *, chown: str | None = None) -> Self:
        """Files from the context (a file, a directory or a glob) to ``dst`` (``COPY``)."""
        flag = f"--chown={chown} " if chown else ""
        return self._add(f"COPY {flag}{json.dumps([src, dst])}")

    def env(self, values: Mapping[str, str] | None = None, **more: str) -> Self:
        pairs = {**(values or {}), **more}
        return self._add("ENV " + " ".join(f"{k}={_quote(v)}" for k, v in pairs.items()))

    def workdir(self, path: str) -> Self:
        return self._add(f"WORKDIR {path}")

    def user(self, name: str) -> Self:
        """Who later steps, the start command and the sandboxes' commands run as."""
        return self._add(f"USER {name}")

    def expose(self, *ports: int) -> Self:
        """Guest ports every sandbox of the image exposes on create."""
        return self._add("EXPOSE " + " ".join(str(p) for p in ports))

    def label(self, **labels: str) -> Self:
        return self._add("LABEL " + " ".join(f"{k}={_quote(v)}" for k, v in labels.items()))

    def start_cmd(self, command: str, ready: str | None = None) -> Self:
        """The command running in every sandbox from the start (``CMD``); ``ready`` exits 0
        once it is up (``HEALTHCHECK CMD``), before the template is saved."""
        if ready is not None:
            self._add(f"HEALTHCHECK CMD {ready}")
        return self._add(f"CMD {command}")

    def dockerfile(self) -> str:
        """The Dockerfile these steps mean."""
        return "\n".join(self._lines) + "\n"

    def build(self, name: str, *, client: Client | None = None, **options: Any) -> ImageInfo:
        """Build the image ``name`` on the server (``options``: as ``client.images.build``)."""
        own = client is None
        client = client or Client()
        try:
            return client.images.build(
                name, self.context, dockerfile_text=self.dockerfile(), **options
            )
        finally:
            if own:
                client.close()

    async def build_async(
        self,
        name: str,
        *,
        client: AsyncClient | None = None,
        on_event: EventCallback | None = None,
        **options: Any,
    ) -> ImageInfo:
        own = client is None
        client = client or AsyncClient()
        try:
            return await client.images.build(
                name, self.context, dockerfile_text=self.dockerfile(), on_event=on_event, **options
            )
        finally:
            if own:
                await client.close()
