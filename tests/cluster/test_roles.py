"""``sietch serve --node`` / ``--gateway``: the CLI sets the role and refuses what can't work."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send
from tenacity import Retrying, stop_after_delay, wait_fixed

from sietch.cluster.catalog import Catalog
from sietch.cluster.tenants import ClusterTenants
from sietch.cluster.wire import SCHEME_HEADER, SECRET_HEADER
from sietch.server.node import InternalPort
from tests.cluster.harness import SECRET
from tests.server.harness import free_port

SIETCH = str(Path(sys.executable).parent / "sietch")


def _serve(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SIETCH, "serve", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_cluster_role_needs_its_catalog_and_secret() -> None:
    """Without a catalog or with a short secret, --node and --gateway exit 2 saying which
    setting is missing; both roles at once are refused."""
    no_catalog = _serve("--node", SIETCH_CLUSTER_SECRET=SECRET)
    assert no_catalog.returncode == 2 and "catalog_url" in no_catalog.stderr
    short = _serve("--gateway", SIETCH_CATALOG_URL="postgresql://x/y", SIETCH_CLUSTER_SECRET="x")
    assert short.returncode == 2 and "cluster_secret" in short.stderr
    both = _serve("--node", "--gateway")
    assert both.returncode == 2 and "exclude each other" in both.stderr


def test_the_first_gateway_prints_an_admin_key_of_the_catalog(catalog_url: str) -> None:
    """sietch serve --gateway migrates an empty catalog, shows the first admin key once,
    and serves; the key is the catalog's."""
    port = free_port()
    env = {**os.environ, "SIETCH_CATALOG_URL": catalog_url, "SIETCH_CLUSTER_SECRET": SECRET}
    proc = subprocess.Popen(
        [SIETCH, "serve", "--gateway", "--port", str(port), "--log-format", "text"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for attempt in Retrying(stop=stop_after_delay(60), wait=wait_fixed(0.2), reraise=True):
            with attempt:
                assert proc.poll() is None
                health = httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=2)
                assert health.status_code == 200
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    key = re.search(r"sk-sietch-[A-Za-z0-9_-]+", stderr)
    assert key is not None, stderr
    catalog = Catalog(catalog_url, migrate_schema=False)
    try:
        found = ClusterTenants(catalog).lookup(key.group())
        assert found is not None and found.admin
    finally:
        catalog.close()


def test_sietch_keys_manage_the_cluster_catalog(catalog_url: str) -> None:
    """With a gateway's settings, sietch keys create makes a key in the catalog, which a
    gateway then resolves."""
    env = {
        **os.environ,
        "SIETCH_ROLE": "gateway",
        "SIETCH_CATALOG_URL": catalog_url,
        "SIETCH_CLUSTER_SECRET": SECRET,
    }
    made = subprocess.run(
        [SIETCH, "keys", "create", "--tenant", "acme", "--name", "ci"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    key = re.search(r"sk-sietch-[A-Za-z0-9_-]+", made.stdout + made.stderr)
    assert key is not None
    catalog = Catalog(catalog_url, migrate_schema=False)
    try:
        assert ClusterTenants(catalog).lookup(key.group()) is not None
    finally:
        catalog.close()


async def test_a_node_takes_the_scheme_a_gateway_saw_only_with_the_secret() -> None:
    """Behind a TLS gateway a node's links and cookies say https (the scheme the gateway
    vouches for); the header alone, without the secret, is refused like any request."""
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["scheme"])
        await PlainTextResponse("ok")(scope, receive, send)

    port = InternalPort(app, SECRET)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=port), base_url="http://node"
    ) as client:
        vouched = {SECRET_HEADER: SECRET, SCHEME_HEADER: "https"}
        assert (await client.get("/ui/", headers=vouched)).status_code == 200
        assert (await client.get("/ui/", headers={SECRET_HEADER: SECRET})).status_code == 200
        alone = await client.get("/ui/", headers={SCHEME_HEADER: "https"})
        assert alone.status_code == 401
    assert seen == ["https", "http"]
