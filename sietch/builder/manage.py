"""Listing, inspecting, removing and pruning images (built-in and user ones) for the API."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import math
from pathlib import Path
from typing import Any

from sietch.builder.engine import Builder
from sietch.config import MiB
from sietch.core import images as user_images
from sietch.core.models import ImageRecord
from sietch.core.pool import is_pooled
from sietch.errors import Conflict, ImageNotFound, InvalidArgument, PermissionDenied, SietchError


class Images:
    """The images a caller sees: the built-in ones (everyone's) and its tenant's user images
    (``scope``: that tenant; None, an admin: every tenant's). Another tenant's image is as
    unknown as one that does not exist."""

    def __init__(self, builder: Builder, scope: str | None = None) -> None:
        self.builder = builder
        self.manager = builder.manager
        self.scope = scope

    def _builtin(self, name: str) -> dict[str, Any]:
        info = next(i for i in self.manager.images.list() if i.name == name and i.current)
        return {
            "name": name,
            "source": "builtin",
            "tenant": None,
            "base": None,
            "size_bytes": info.disk_bytes,
            "disk_mib": math.ceil(info.size_bytes / MiB),
            "created_at": info.created_at,
            "steps": [],
            "description": info.description,
        }

    def _user(self, image: ImageRecord) -> dict[str, Any]:
        return {
            **image.model_dump(include={"name", "source", "base", "size_bytes", "disk_mib",
                                        "created_at", "steps", "config", "key", "tenant"}),
        }  # fmt: skip

    def describe(self, name: str) -> dict[str, Any]:
        """One image with what uses it (sandboxes, snapshots)."""
        store = self.manager.store
        if (image := user_images.find(store, name, self.scope)) is not None and image.ready:
            found = self._user(image)
            found["layers"] = image.layers
        elif name in self._builtins():
            found = self._builtin(name)
        else:
            raise ImageNotFound(f"no image named {name!r}", image=name)
        found["users"] = self.users(name)
        return found

    def list(self) -> builtins.list[dict[str, Any]]:
        out = [self._builtin(n) for n in self._builtins()]
        out += [self._user(i) for i in user_images.listed(self.manager.store, self.scope)]
        for item in out:
            item["users"] = self.users(item["name"])
        return out

    def _builtins(self) -> builtins.list[str]:
        return sorted({i.name for i in self.manager.images.list() if i.current})

    def users(self, name: str) -> builtins.list[str]:
        store = self.manager.store
        pooled = {i.id for i in store.all() if is_pooled(i)}
        return [u for u in user_images.users(store, name) if u not in pooled]

    async def remove(self, name: str, *, force: bool = False) -> None:
        """Forget a user image, its templates and pooled sandboxes; its layers go at prune.

        Refused (409) while a sandbox or snapshot uses it, naming them; ``force``
        deletes those sandboxes first (tests, clean-up), never snapshots."""
        store = self.manager.store
        if user_images.find(store, name, self.scope) is None:
            if name in self.manager.images.names():
                raise InvalidArgument(f"{name!r} is a built-in image and cannot be removed")
            raise ImageNotFound(f"no image named {name!r}", image=name)
        users = self.users(name)
        if users and force:
            for sandbox_id in [u for u in users if u.startswith("sb-")]:
                with contextlib.suppress(SietchError):
                    await self.manager.delete(sandbox_id)
            users = self.users(name)
        if users:
            raise Conflict(
                f"image {name} is used by {', '.join(users)}; delete those first", users=users
            )
        for info in store.all():
            if is_pooled(info) and info.image == name:
                await self.manager.destroy(info.id)
        for snap in await self.manager.list_snapshots(templates=True):
            if snap.template and snap.image == name:
                await self.manager.delete_snapshot(snap.id)
        store.delete_image(name)

    async def prune(self) -> builtins.list[str]:
        """Delete cached layers no image needs (the build cache of removed or rebuilt ones).

        The cache is shared by every tenant (a layer is its content's, whoever built it
        first), so only an admin prunes it, as only an admin deletes a shared template."""
        if self.scope is not None:
            raise PermissionDenied(
                "the build cache is shared by every tenant: pruning it needs an admin key"
            )
        if self.builder.running:
            raise Conflict("a build is running; prune when it has finished")
        keep = {Path(p) for i in self.manager.store.all_images() for p in i.layers}
        removed = await asyncio.to_thread(self.builder.layers.prune, keep)
        return [str(p) for p in removed]
