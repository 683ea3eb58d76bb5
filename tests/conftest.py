"""Shared fixtures: real managers, real VMs, and a factory that cleans up after them.

Every sandbox a test makes goes through :func:`sandboxes`, which deletes it in
teardown and, when the test failed, keeps its console and QEMU logs under
``test-results/``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio

from sietch.config import Settings
from sietch.core.live import LiveSandbox
from sietch.core.manager import Manager
from sietch.core.models import SandboxInfo
from sietch.vmm import process
from tests.network.outside import Outside, outside_network

if TYPE_CHECKING:  # imported where used: both import short_tmpdir from here
    from tests.cluster.network import ClusterNet
    from tests.cluster.postgres import Postgres

TESTS = Path(__file__).resolve().parent
RESULTS = TESTS.parent / "test-results"

# Sandboxes' DNS goes upstream only where a test points it (never the host's resolver).
os.environ.setdefault("SIETCH_DNS_SERVERS", '["127.0.0.1"]')
# Playwright's screenshots here are evidence kept in test-results/, never compared: without
# this, each first waits for the page's web fonts, and code-server's can outlast its 30 s
# under TCG on a loaded host, failing a test whose assertions had all passed.
os.environ.setdefault("PW_TEST_SCREENSHOT_NO_FONTS_READY", "1")


def short_tmpdir(prefix: str) -> Path:
    """A temp dir with a short path: unix socket paths inside it must stay under 108 bytes."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


@pytest.fixture(scope="session")
def state_dir() -> Iterator[Path]:
    path = short_tmpdir("sts")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def settings(state_dir: Path) -> Settings:
    return Settings(state_dir=state_dir)


@pytest_asyncio.fixture(scope="session")
async def manager(settings: Settings) -> AsyncIterator[Manager]:
    async with Manager(settings) as m:
        yield m
    leftovers = list(process.find_by_marker(str(settings.state_dir)))
    assert not leftovers, f"QEMU processes survived the manager: {leftovers}"


# ``./bootstrap.sh test`` runs the suite on every core (pytest-xdist, ``--dist loadgroup``):
# each group runs on one worker, so a test directory's server and the templates it boots are
# made once. Directories that share a session service (PostgreSQL, Ray) or an expensive
# template (the desktop's) are one group.
_GROUP_OF = {"deploy": "cluster", "console": "desktop"}
_GROUP_SECONDS = {
    "desktop": 500,
    "server": 440,
    "cluster": 353,
    "builder": 230,
    "e2b": 218,
    "snapshots": 125,
    "core": 110,
    "interpreter": 66,
    "cli": 59,
    "network": 54,
    "arrakis": 42,
    "mcp": 35,
}
"""Groups' durations in a whole run (2026-12-02, one worker): workers take groups longest
first, so that no long group starts last; the others follow in their own order."""


def _group(item: pytest.Item) -> str:
    parts = item.path.relative_to(TESTS).parts
    top = parts[0] if len(parts) > 1 else item.path.stem
    return _GROUP_OF.get(top, top)


@pytest.hookimpl(tryfirst=True)  # before xdist's worker reads the marks into node ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.xdist_group(_group(item)))
    # Stable: a group's tests keep their order, and its items stay together.
    items.sort(key=lambda item: (-_GROUP_SECONDS.get(_group(item), 0), _group(item)))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


@pytest.fixture(scope="session")
def cluster_net() -> Iterator[ClusterNet]:
    """The bridge that cluster nodes' and Ray nodes' namespaces hang on (tests/cluster,
    tests/deploy, bench/cluster.py): one per run."""
    from tests.cluster.network import ClusterNet

    net = ClusterNet()
    net.up()
    yield net
    net.down()


@pytest.fixture(scope="session")
def postgres(cluster_net: ClusterNet) -> Iterator[Postgres]:
    """One PostgreSQL for the whole run (initdb and start cost seconds), reachable from the
    nodes' namespaces too; each cluster, Ray deployment and catalog test makes a database
    of its own in it."""
    from tests.cluster.postgres import Postgres

    server = Postgres(listen=(cluster_net.host_address,), clients=(cluster_net.subnet,))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def outside() -> Iterator[Outside]:
    """A stand-in internet (web and DNS servers in a namespace of the test's own)."""
    with outside_network() as net:
        yield net


_FAILED = pytest.StashKey[bool]()

SandboxFactory = Callable[..., Awaitable[LiveSandbox]]


@pytest_asyncio.fixture
async def sandboxes(
    manager: Manager, request: pytest.FixtureRequest
) -> AsyncIterator[SandboxFactory]:
    """Factory: ``await sandboxes(**spec)`` boots a sandbox that is deleted after the test."""
    made: list[SandboxInfo] = []

    async def make(**spec: Any) -> LiveSandbox:
        info = await manager.create(**spec)
        made.append(info)
        return manager.sandbox(info.id)

    yield make
    failed = request.node.stash.get(_FAILED, False)
    for info in made:
        if failed:
            keep_evidence(manager, info.id, request.node.name)
        try:
            await manager.delete(info.id)
        except Exception:  # already deleted by the test itself
            continue


def keep_evidence(manager: Manager, sandbox_id: str, test_name: str) -> None:
    workdir = manager.sandboxes_dir / sandbox_id
    dest = RESULTS / test_name / sandbox_id
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("console.log", "qemu.log"):
        if (workdir / name).exists():
            shutil.copy(workdir / name, dest / name)


@pytest_asyncio.fixture(scope="module")
async def shared(manager: Manager) -> AsyncIterator[LiveSandbox]:
    """One sandbox shared by a module's read-mostly tests (a boot costs seconds under TCG)."""
    info = await manager.create()
    yield manager.sandbox(info.id)
    await manager.delete(info.id)
