"""The builder's fixtures: one Builder over the session's manager; built images go after."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest_asyncio

from sietch.builder import Builder
from sietch.builder.manage import Images
from sietch.core.manager import Manager
from sietch.errors import SietchError


@pytest_asyncio.fixture(scope="module")
async def builder(manager: Manager) -> AsyncIterator[Builder]:
    made = Builder(manager)
    before = {i.name for i in manager.store.all_images()}
    yield made
    images = Images(made)
    for image in manager.store.all_images():
        if image.name not in before:
            with contextlib.suppress(SietchError):
                await images.remove(image.name, force=True)
