"""sietch.ray on a real three-node Ray cluster: a Sietch node server per Ray node (each in
the Ray node's own network namespace, state dir and port), a gateway, and tasks that get
sandboxes on their own Ray node; the servers restart with their actors and end with them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

import sietch.ray
from sietch.client import Client, Sandbox
from sietch.cluster.catalog import Catalog
from sietch.cluster.tenants import ClusterTenants
from sietch.config import Settings
from sietch.core.manager import Manager
from sietch.ray._cluster import NAMESPACE, actor_name
from sietch.ray._server import ServerProcess
from sietch.vmm import process
from tests.cluster.network import ClusterNet
from tests.cluster.postgres import Postgres
from tests.conftest import short_tmpdir

SECRET = "ray-" + secrets.token_hex(16)
SETTINGS = {
    # Membership at test speed, with room for a loaded machine.
    "heartbeat_s": "1",
    "node_timeout_s": "15",
    # One cold-booted VM per sandbox and nothing warm: the fewest VMs for these tests,
    # with room for three boots at once on a loaded machine.
    "pool_size": "0",
    "boot_timeout_s": "400",
    "templates": "false",
    "internet": "false",
}
WAIT_S = 300.0


def until(check: Callable[[], Any], timeout_s: float = WAIT_S) -> Any:
    """``check()``'s value once it stops raising (AssertionError or a Ray error)."""
    for attempt in Retrying(
        stop=stop_after_delay(timeout_s),
        wait=wait_fixed(0.5),
        retry=retry_if_exception_type((AssertionError, ray.exceptions.RayError)),
        reraise=True,
    ):
        with attempt:
            return check()
    raise AssertionError("unreachable")


def alive(pid: int) -> bool:
    """A process that exists and is no zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):  # gone before, or between open and read
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def children(pid: int) -> list[int]:
    """The process's children; AssertionError while it has none (for :func:`until`)."""
    found = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    assert found, f"process {pid} has no child (yet)"
    return found


@dataclass
class Deployed:
    sietch: sietch.ray.SietchOnRay
    catalog: Catalog
    api_key: str
    restart: Callable[[], sietch.ray.SietchOnRay]
    """:func:`sietch.ray.start` again, as the fixture first called it."""

    def placed_on(self, sandbox_id: str) -> str:
        """The node the catalog says holds the sandbox."""
        placement = self.catalog.locate(sandbox_id)
        assert placement is not None
        return placement.node

    def delete(self, sandbox_id: str) -> None:
        with Client(self.sietch.gateway_url, self.api_key) as client:
            Sandbox.connect(sandbox_id, client=client).kill()

    def server_pids(self, node_id: str) -> tuple[int, int]:
        """(reaper, server) of the node server actor on Ray node ``node_id``."""
        actor = ray.get_actor(actor_name(node_id), namespace=NAMESPACE)
        reaper = ray.get(actor.pid.remote())
        [server] = until(lambda: children(reaper), 60)
        return reaper, server


def worker_nodes() -> list[str]:
    """The Ray nodes other than the head (each in a network namespace of its own)."""
    head = ray.get_runtime_context().get_node_id()
    return [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeID"] != head]


@pytest.fixture(scope="module")
def deployed(ray_nodes: Any, cluster_net: ClusterNet, postgres: Postgres) -> Iterator[Deployed]:
    """sietch.ray started on the Ray cluster, on a fresh catalog; every server, VM and
    state dir gone after the module."""
    state_root = short_tmpdir("sry")
    state_root.chmod(0o755)  # QEMU runs as an unprivileged user: it must reach its files
    with postgres.database() as db, contextlib.ExitStack() as cleanup:
        url = postgres.url(db, cluster_net.host_address)
        catalog = Catalog(url)
        # Undone last to first, each whatever the one before it raised.
        cleanup.callback(shutil.rmtree, state_root, ignore_errors=True)
        cleanup.callback(catalog.close)
        cleanup.callback(_reap_all, state_root)
        cleanup.callback(sietch.ray.stop)
        api_key = ClusterTenants(catalog).create_key("default", "ray-tests", admin=True)[1]

        def start() -> sietch.ray.SietchOnRay:
            return sietch.ray.start(
                catalog_url=url,
                cluster_secret=SECRET,
                settings=SETTINGS,
                gateway_port=0,
                internal_port=0,
                state_root=state_root,
            )

        deployed = Deployed(start(), catalog, api_key, start)
        cleanup.callback(_delete_all, deployed)
        yield deployed


def _delete_all(deployed: Deployed) -> None:
    with Client(deployed.sietch.gateway_url, deployed.api_key) as client:
        for info in Sandbox.list(client=client):
            Sandbox.connect(info.id, client=client).kill()


def _reap_all(state_root: Path) -> None:
    for state_dir in [d for d in state_root.iterdir() if d.is_dir()]:
        asyncio.run(_reap(state_dir))


async def _reap(state_dir: Path) -> None:
    """Kill any VM a node left (a non-persistent manager does not adopt them)."""
    async with Manager(Settings(state_dir=state_dir), persistent=False):
        pass
    assert not list(process.find_by_marker(str(state_dir)))


def test_a_node_server_per_ray_node(deployed: Deployed) -> None:
    """Every Ray node runs a Sietch node, registered in the catalog under its Ray node's
    name, reachable at that Ray node's own address."""
    ray_nodes = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}
    assert len(ray_nodes) == 3
    names = {sietch.ray.node_name(node_id): addr for node_id, addr in ray_nodes.items()}
    assert set(deployed.sietch.nodes) == set(names)
    records = until(lambda: {n.name: n for n in deployed.catalog.nodes() if n.reachable})
    assert set(records) == set(names)
    for name, address in names.items():
        assert urlsplit(records[name].url).hostname == address
        assert records[name].url == deployed.sietch.nodes[name]
    assert len({urlsplit(r.url).hostname for r in records.values()}) == 3


@ray.remote(num_cpus=0)
def make_sandbox(api_key: str) -> tuple[str, str | None, str]:
    """A trainer's task: a sandbox through sietch.ray's SDK; (its id, this node, its output)."""
    with sietch.ray.Sandboxes(api_key) as sandboxes:
        sb = sandboxes.create("minimal", memory_mib=256, keep=True)
        return sb.id, sandboxes.node, sb.exec("echo from $(hostname)").stdout


def test_tasks_get_sandboxes_on_their_own_node(deployed: Deployed) -> None:
    """A task on each Ray node creates a sandbox and gets one on its own node (the
    catalog says where it is), which runs commands."""
    node_ids = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    tasks = [on_node(node_id, deployed.api_key) for node_id in node_ids]
    for node_id, (sandbox_id, node, output) in zip(node_ids, ray.get(tasks), strict=True):
        assert node == sietch.ray.node_name(node_id)
        assert deployed.placed_on(sandbox_id) == node
        assert output.startswith("from ")
        deployed.delete(sandbox_id)


def on_node(node_id: str, api_key: str) -> Any:
    """:func:`make_sandbox` run on Ray node ``node_id``."""
    strategy = NodeAffinitySchedulingStrategy(node_id, soft=False)
    return make_sandbox.options(scheduling_strategy=strategy).remote(api_key)


def test_a_dead_server_is_restarted_with_its_actor(deployed: Deployed) -> None:
    """SIGKILL of a node's server: Ray restarts its actor, which starts a new server on
    the same Ray node; the node is registered and reachable again, and the sandbox it
    held still runs, through the gateway."""
    node_id = worker_nodes()[0]
    name = sietch.ray.node_name(node_id)
    sandbox_id, _, _ = ray.get(on_node(node_id, deployed.api_key))
    assert deployed.placed_on(sandbox_id) == name
    reaper, server = deployed.server_pids(node_id)
    os.kill(server, signal.SIGKILL)
    until(lambda: assert_gone(reaper, server))
    new_reaper, new_server = until(lambda: deployed.server_pids(node_id))
    assert new_reaper != reaper
    assert alive(new_server)
    actor = ray.get_actor(actor_name(node_id), namespace=NAMESPACE)
    url = ray.get(actor.ready.remote(WAIT_S))
    assert httpx.get(url + "/api/v1/health", timeout=10).status_code == 200
    until(lambda: _reachable(deployed.catalog, name, url))
    with Client(deployed.sietch.gateway_url, deployed.api_key) as client:
        sb = Sandbox.connect(sandbox_id, client=client)
        assert sb.exec("echo still here").stdout == "still here\n"
    deployed.delete(sandbox_id)


def _reachable(catalog: Catalog, name: str, url: str) -> Any:
    record = catalog.node(name)
    assert record is not None
    assert record.reachable
    assert record.url == url
    return record


def assert_gone(*pids: int) -> None:
    assert not [pid for pid in pids if alive(pid)]


def test_servers_end_with_their_actor(deployed: Deployed) -> None:
    """Killing a node's actor for good ends its reaper and server; a task on that Ray node
    then gets a sandbox on another; start() again puts a new server on that Ray node."""
    node_id = worker_nodes()[-1]
    name = sietch.ray.node_name(node_id)
    reaper, server = deployed.server_pids(node_id)
    ray.kill(ray.get_actor(actor_name(node_id), namespace=NAMESPACE), no_restart=True)
    until(lambda: assert_gone(reaper, server))
    # A task on that Ray node now gets a sandbox elsewhere.
    sandbox_id, preferred, _ = ray.get(on_node(node_id, deployed.api_key))
    assert preferred is None
    assert deployed.placed_on(sandbox_id) != name
    deployed.delete(sandbox_id)
    deployed.sietch = deployed.restart()
    new_reaper, new_server = deployed.server_pids(node_id)
    assert new_reaper != reaper
    assert alive(new_server)
    until(lambda: _reachable(deployed.catalog, name, deployed.sietch.nodes[name]))


def test_a_server_refused_by_its_settings_is_reported(ray_nodes: Any) -> None:
    """A server that cannot start (here: a gateway without a catalog) makes ready() fail
    with its exit status, rather than wait out its timeout."""
    actor = (
        ray.remote(ServerProcess)
        .options(num_cpus=0, max_restarts=0)
        .remote("gateway", {"SIETCH_CATALOG_URL": "", "SIETCH_CLUSTER_SECRET": SECRET}, 0, None)
    )
    try:
        with pytest.raises(ray.exceptions.RayTaskError, match=r"--gateway exited \(2\)"):
            ray.get(actor.ready.remote(WAIT_S), timeout=WAIT_S)
    finally:
        ray.kill(actor)


def test_public_surface_is_explicit() -> None:
    """sietch.ray exports exactly its public names (``__all__``)."""
    public = {
        name
        for name, value in vars(sietch.ray).items()
        if not name.startswith("_") and not isinstance(value, type(sys))
    }
    assert public == set(sietch.ray.__all__)


OWNER = """
import subprocess, sys, time
reaper = subprocess.Popen(
    [sys.executable, "-m", "sietch.ray._reaper", "sleep", "600"], stdin=subprocess.PIPE
)
print(reaper.pid, flush=True)
time.sleep(600)
"""


def test_reaper_ends_its_command_when_its_owner_is_killed() -> None:
    """SIGKILL of the process that started the reaper (as Ray kills an actor) ends the
    reaper and its command."""
    with subprocess.Popen(
        [sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True
    ) as owner:
        try:
            assert owner.stdout is not None
            reaper = int(owner.stdout.readline())
            [command] = until(lambda: children(reaper), 30)
            assert alive(command)
        finally:
            owner.kill()
    until(lambda: assert_gone(reaper, command), 60)


def test_reaper_exits_with_its_command_status() -> None:
    """A command that exits on its own ends the reaper with its status (so the actor
    learns of it and Ray restarts it)."""
    # stdin stays open: its EOF would mean the owner is gone.
    reaper = subprocess.Popen(
        [sys.executable, "-m", "sietch.ray._reaper", "sh", "-c", "exit 3"],
        stdin=subprocess.PIPE,
    )
    try:
        assert reaper.wait(60) == 3
    finally:
        reaper.kill()
        reaper.communicate()
