"""This directory's ``manager``: its sandboxes resolve names through the stand-in internet."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator

import pytest_asyncio

from sietch.config import Settings
from sietch.core.manager import Manager
from tests.conftest import short_tmpdir
from tests.network.outside import Outside, uplinks


@pytest_asyncio.fixture(scope="module")
async def manager(outside: Outside) -> AsyncIterator[Manager]:
    state = short_tmpdir("stn")
    try:
        async with Manager(Settings(state_dir=state, dns_servers=[outside.web])) as m:
            yield m
        assert not uplinks(state), "uplinks outlived their sandboxes"
    finally:
        shutil.rmtree(state, ignore_errors=True)
