"""The machine's template cache on real VMs: a new state dir restores the template another
one booted, unless the cache is off or its entry is damaged."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from sietch.config import Settings
from sietch.core.manager import Manager
from sietch.core.models import SnapshotInfo
from sietch.core.template_cache import IMPORTED, ORIGIN_LABEL
from sietch.images.templates import Entry, TemplateCache
from sietch.vmm import jail
from tests.conftest import short_tmpdir

SPEC: dict[str, Any] = {"image": "minimal", "memory_mib": 256}
"""The cheapest template to boot (busybox, small RAM)."""


@asynccontextmanager
async def server(cache: Path, **settings: Any) -> AsyncIterator[Manager]:
    """A manager on a fresh state dir, as a new server's, with ``cache`` as the machine's
    template cache; no warm pool (each create is its own boot or restore)."""
    state = short_tmpdir("stc")
    state.chmod(0o755)  # QEMU runs as an unprivileged user: it must reach its files
    try:
        config = Settings(state_dir=state, template_cache_dir=cache, pool_size=0, **settings)
        async with Manager(config) as manager:
            yield manager
    finally:
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def cache_dir() -> Iterator[Path]:
    """A template cache of the module's own: what it holds is what these tests made."""
    path = short_tmpdir("tcc")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest_asyncio.fixture(scope="module")
async def published(cache_dir: Path) -> SnapshotInfo:
    """The template a first server booted and published."""
    async with server(cache_dir) as first:
        info = await first.create(**SPEC)
        assert info.snapshot_id is None  # booted: its template is taken and published
        templates = [s for s in await first.list_snapshots(templates=True) if s.template]
        assert [s.image for s in templates] == ["minimal"]
        await first.delete(info.id)
    return templates[0]


def entry(cache_dir: Path) -> Entry:
    (found,) = TemplateCache(cache_dir).entries()
    return found


async def test_new_state_dir_restores_the_published_template(
    cache_dir: Path, published: SnapshotInfo
) -> None:
    """A server on a fresh state dir restores its first sandbox from the template another
    booted (imported, recorded as such), not a boot, into a jailed QEMU; the sandbox runs
    commands and moves files."""
    async with server(cache_dir) as second:
        info = await second.create(**SPEC)
        assert info.snapshot_id == published.id
        imported = second.store.get_snapshot(published.id)
        assert imported is not None and imported.template
        assert imported.labels == {ORIGIN_LABEL: IMPORTED}
        assert second.jail_status == "on" or jail.supported() is not None  # jailed QEMU
        sandbox = second.sandbox(info.id)
        assert (await sandbox.exec("echo from-cache")).stdout == b"from-cache\n"
        await sandbox.write_file("/tmp/data.bin", b"\x00\x01 shared")
        assert await sandbox.read_bytes("/tmp/data.bin") == b"\x00\x01 shared"


async def test_cache_off_imports_nothing(cache_dir: Path, published: SnapshotInfo) -> None:
    """With SIETCH_TEMPLATE_CACHE off a fresh state dir finds no template of the key the
    cache has (a create then boots: the path of any first create), nor does a user
    image's template (not shared) come from it."""
    key = published.template_key
    assert key is not None and TemplateCache(cache_dir).find(entry(cache_dir).name) is not None
    async with (
        server(cache_dir, template_cache=False) as off,
        off.snapshots.template_or_claim(key, shared=True) as template,
    ):
        assert template is None
    async with server(cache_dir) as on:
        async with on.snapshots.template_or_claim(key, shared=False) as template:
            assert template is None
        async with on.snapshots.template_or_claim(key, shared=True) as template:
            assert template is not None


async def test_truncated_entry_is_booted_over(cache_dir: Path, published: SnapshotInfo) -> None:
    """An entry whose memory file was cut short is not restored: the server boots, and
    publishes a complete entry in its place."""
    damaged = entry(cache_dir)
    os.truncate(damaged.path / "memory", 4096)
    async with server(cache_dir) as third:
        info = await third.create(**SPEC)
        assert info.snapshot_id is None
        (template,) = [s for s in await third.list_snapshots(templates=True) if s.template]
    assert template.id != published.id
    replaced = TemplateCache(cache_dir).find(damaged.name)
    assert replaced is not None and replaced.files["memory"].size > 4096


async def test_servers_starting_at_once_boot_a_template_once() -> None:
    """Two servers of a machine whose cache lacks a template, each creating a sandbox of it
    at once: one boots it, the other waits for that boot and restores what it published."""
    cache = short_tmpdir("tcb")
    try:
        async with server(cache) as one, server(cache) as two:
            made = await asyncio.gather(one.create(**SPEC), two.create(**SPEC))
            booted = [info for info in made if info.snapshot_id is None]
            restored = [info for info in made if info.snapshot_id is not None]
            assert len(booted) == 1 and len(restored) == 1
            (published,) = TemplateCache(cache).entries()
            template = SnapshotInfo.model_validate_json(
                (published.path / "snapshot.json").read_text()
            )
            assert restored[0].snapshot_id == template.id
            for manager, info in zip((one, two), made, strict=True):
                assert (await manager.sandbox(info.id).exec("echo up")).stdout == b"up\n"
                await manager.delete(info.id)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
