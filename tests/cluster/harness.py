"""Real node and gateway servers for the cluster tests, as ``sietch serve`` runs them.

Each node runs ``python -m sietch.server`` with ``SIETCH_ROLE=node`` inside a network
namespace of its own (:mod:`.network`), with its own address, port and state dir;
gateways run on the host's loopback. Every node's VMs are reaped in teardown, whatever
state the test left the node in.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from sietch.cluster.catalog import Catalog
from sietch.cluster.tenants import ClusterTenants
from sietch.config import Settings
from sietch.core.manager import Manager
from tests.cluster.network import ClusterNet
from tests.cluster.postgres import Postgres
from tests.conftest import short_tmpdir
from tests.server.harness import free_port

START_TIMEOUT_S = 120.0
SECRET = "s3cret-" + secrets.token_hex(16)
FAST = {"heartbeat_s": "0.5", "node_timeout_s": "10"}
"""Heartbeats at test speed; a node is unreachable after the default 10 s of silence (a
busy node on a loaded TCG host can be late by seconds)."""


class Proc:
    """One server process, restartable; its log in its state dir."""

    def __init__(self, state_dir: Path, env: dict[str, str], prefix: list[str]) -> None:
        self.state_dir = state_dir
        self.env = env
        self.prefix = prefix
        self.log_path = state_dir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, health_url: str) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*self.prefix, sys.executable, "-m", "sietch.server"],
                env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        for attempt in Retrying(
            stop=stop_after_delay(START_TIMEOUT_S),
            wait=wait_fixed(0.2),
            retry=retry_if_exception_type((httpx.TransportError, AssertionError)),
            reraise=True,
        ):
            with attempt:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited; log:\n{self.log()[-4000:]}")
                assert httpx.get(health_url, timeout=2.0).status_code == 200

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Node(Proc):
    def __init__(self, name: str, ns: str, address: str, catalog_url: str, **extra: str) -> None:
        self.name = name
        self.address = address
        self.port = 7001 + int(name.rsplit("-", 1)[1])
        state_dir = short_tmpdir("scn")
        state_dir.chmod(0o755)  # QEMU runs as an unprivileged user: it must reach its files
        env = {
            "SIETCH_ROLE": "node",
            "SIETCH_STATE_DIR": str(state_dir),
            "SIETCH_HOST": address,
            "SIETCH_INTERNAL_PORT": str(self.port),
            "SIETCH_NODE_NAME": name,
            "SIETCH_NODE_URL": self.url,
            "SIETCH_CATALOG_URL": catalog_url,
            "SIETCH_CLUSTER_SECRET": SECRET,
            "SIETCH_POOL_SIZE": "0",
            "SIETCH_INTERNET": "false",
            # A node's first create cold-boots its template: minutes on a loaded TCG host.
            "SIETCH_BOOT_TIMEOUT_S": "300",
            **{f"SIETCH_{k.upper()}": v for k, v in {**FAST, **extra}.items()},
        }
        super().__init__(state_dir, env, ["nsenter", f"--net=/run/netns/{ns}", "--"])

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    def up(self) -> None:
        self.start(self.url + "/api/v1/health")


class GatewayProc(Proc):
    def __init__(self, catalog_url: str, **extra: str) -> None:
        self.port = free_port()
        state_dir = short_tmpdir("scg")
        env = {
            "SIETCH_ROLE": "gateway",
            "SIETCH_STATE_DIR": str(state_dir),
            "SIETCH_HOST": "127.0.0.1",
            "SIETCH_PORT": str(self.port),
            "SIETCH_CATALOG_URL": catalog_url,
            "SIETCH_CLUSTER_SECRET": SECRET,
            **{f"SIETCH_{k.upper()}": v for k, v in {**FAST, **extra}.items()},
        }
        super().__init__(state_dir, env, [])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        self.start(self.url + "/api/v1/health")


class Cluster:
    """Nodes, gateways, the catalog's database and an admin key."""

    def __init__(self, nodes: list[Node], gateways: list[GatewayProc], catalog: Catalog) -> None:
        self.nodes = nodes
        self.gateways = gateways
        self.catalog = catalog
        self.tenants = ClusterTenants(catalog)
        self.admin_key = self.tenants.create_key("default", "tests", admin=True)[1]

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def client(self, gateway: int = 0, key: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.gateways[gateway].url + "/api/v1",
            headers={"Authorization": f"Bearer {key or self.admin_key}"},
            timeout=180,
        )

    def env(self, gateway: int = 0, key: str | None = None) -> dict[str, str]:
        """For SDK and CLI processes: a gateway's URL, as for any server."""
        url = self.gateways[gateway].url
        return {**os.environ, "SIETCH_URL": url, "SIETCH_API_KEY": key or self.admin_key}


@contextmanager
def cluster(
    net: ClusterNet, postgres: Postgres, node_settings: list[dict[str, str]], gateways: int = 2
) -> Iterator[Cluster]:
    """Nodes (one per settings dict) and gateways on a fresh catalog; all gone after."""
    with postgres.database() as db:
        catalog = Catalog(postgres.url(db))
        nodes: list[Node] = []
        procs: list[Proc] = []
        namespaces: list[str] = []
        try:
            for i, extra in enumerate(node_settings, 1):
                ns, address = net.add_node()
                namespaces.append(ns)
                node = Node(f"node-{i}", ns, address, postgres.url(db, net.host_address), **extra)
                nodes.append(node)
                procs.append(node)
                node.up()
            started = [GatewayProc(postgres.url(db)) for _ in range(gateways)]
            procs += started
            for gateway in started:
                gateway.up()
            yield Cluster(nodes, started, catalog)
        finally:
            for proc in procs:
                proc.stop()
            for node in nodes:
                asyncio.run(_reap(node.state_dir))
            for ns in namespaces:
                net.remove_node(ns)
            keep = os.environ.get("SIETCH_KEEP_LOGS")
            for n, proc in enumerate(procs):
                if keep and proc.log_path.exists():
                    shutil.copy(proc.log_path, Path(keep) / f"{n}-{proc.state_dir.name}.log")
                shutil.rmtree(proc.state_dir, ignore_errors=True)
            catalog.close()


async def _reap(state_dir: Path) -> None:
    # A non-persistent manager kills the VMs it finds instead of adopting them.
    async with Manager(Settings(state_dir=state_dir), persistent=False):
        pass
