"""Tenants on a real server: each sees, drives and deletes only its own; quotas answer 429.

One server with a proxy domain; tenant ``tb`` has one sandbox (made through
Arrakis' /v1, so it is an Arrakis VM too) serving HTTP on an exposed port, and a
snapshot; tenant ``ta`` has one sandbox. Every route naming tb's sandbox or
snapshot answers ta's key exactly as for an id that does not exist. Keys and
quotas are changed in the server's ``tenants.db`` while it runs, as
``sietch keys`` / ``sietch tenants`` do.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client as McpClient
from mcp.client.streamable_http import streamable_http_client

from sietch.client import AsyncClient, AsyncSandbox
from sietch.client import Client as SdkClient
from sietch.errors import SandboxNotFound
from tests.server.harness import ApiServer, wait_listening

DOMAIN = "tenants.test"
SIETCH = Path(sys.executable).parent / "sietch"


@dataclass
class World:
    server: ApiServer
    keys: dict[str, str]
    """Tenant (or "admin") to its key."""
    a: str
    """ta's sandbox."""
    b: str
    """tb's sandbox (the Arrakis VM ``bvm``), serving HTTP on exposed guest port 8000."""
    snap_b: str

    def http(self, who: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.server.url,
            headers={"Authorization": f"Bearer {self.keys[who]}"},
            timeout=120,
        )


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    # No warm pool (no VM beyond those asked for); the server-wide create rate out of the way;
    # a default quota every tenant has (the module never holds more than 2 per tenant).
    server = ApiServer(
        proxy_domain=DOMAIN, pool_size=0, create_burst=100, tenant_quota='{"max_sandboxes": 3}'
    )
    keys = {"admin": server.api_key}
    for tenant in ("ta", "tb", "tm", "tburst"):
        keys[tenant] = server.tenants.create_key(tenant, "test")[1]
    server.start()
    try:
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {keys['tb']}"}, timeout=180
        ) as b:
            started = b.post(
                "/v1/vms",
                json={"vmName": "bvm", "entryPoint": "python3 -m http.server 8000"},
            )
            assert started.status_code == 200, started.text
            b_id = b.get("/api/v1/sandboxes").json()["data"][0]["id"]
            api = httpx.Client(base_url=server.url + "/api/v1", headers=b.headers, timeout=180)
            with api:
                wait_listening(api, b_id, 8000)
                assert api.post(f"/sandboxes/{b_id}/ports", json={"port": 8000}).is_success
                written = api.put(
                    f"/sandboxes/{b_id}/files", params={"path": "/root/secret"}, content=b"tb's"
                )
                assert written.is_success, written.text
            snapped = b.post("/v1/vms/bvm/snapshots", json={"snapshotId": "b-snap"})
            assert snapped.status_code == 200, snapped.text
            snaps = b.get("/api/v1/snapshots").json()["data"]
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {keys['ta']}"}, timeout=180
        ) as a:
            made = a.post("/api/v1/sandboxes", json={})
            assert made.status_code == 201, made.text
        yield World(server, keys, made.json()["id"], b_id, snaps[0]["id"])
    finally:
        server.cleanup()


def routes(sandbox: str, snapshot: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Every REST route that names a sandbox or a snapshot, with a valid request."""
    sb, snap = f"/api/v1/sandboxes/{sandbox}", f"/api/v1/snapshots/{snapshot}"
    return [
        ("GET", sb, {}),
        ("GET", f"{sb}/logs", {}),
        ("POST", f"{sb}/exec", {"json": {"cmd": ["cat", "/root/secret"]}}),
        ("GET", f"{sb}/files", {"params": {"path": "/root/secret"}}),
        ("GET", f"{sb}/files/list", {"params": {"path": "/root"}}),
        ("GET", f"{sb}/files/stat", {"params": {"path": "/root/secret"}}),
        ("PUT", f"{sb}/files", {"params": {"path": "/root/x"}, "content": b"x"}),
        ("GET", f"{sb}/processes", {}),
        ("POST", f"{sb}/processes", {"json": {"cmd": ["sleep", "1"]}}),
        ("GET", f"{sb}/ports", {}),
        ("POST", f"{sb}/ports", {"json": {"port": 9000}}),
        ("GET", f"{sb}/ports/8000/proxy/", {}),
        ("PUT", f"{sb}/network", {"json": {"internet": False}}),
        ("POST", f"{sb}/pause", {}),
        ("POST", f"{sb}/snapshots", {"json": {}}),
        ("POST", f"{sb}/fork", {"json": {"count": 1}}),
        ("DELETE", sb, {}),
        ("GET", snap, {}),
        ("POST", f"{snap}/restore", {"json": {}}),
        ("DELETE", snap, {}),
    ]


def error(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()["error"]
    return response.status_code, body["code"], body["message"]


def test_another_tenants_ids_are_not_found(world: World) -> None:
    """Each route naming tb's sandbox or snapshot answers ta exactly as it answers the admin
    for an id that does not exist: 404, same code, same message."""
    fake_sb, fake_snap = "sb-000000000000", "snap-000000000000"
    mine = routes(world.b, world.snap_b)
    unknown = routes(fake_sb, fake_snap)
    with world.http("ta") as a, world.http("admin") as admin:
        for (method, path, options), (_, nowhere, _) in zip(mine, unknown, strict=True):
            expected = error(admin.request(method, nowhere, **options))
            assert expected[0] == 404, (nowhere, expected)
            status, code, message = error(a.request(method, path, **options))
            message = message.replace(world.b, fake_sb).replace(world.snap_b, fake_snap)
            assert (status, code, message) == expected, (method, path)
    with world.http("tb") as b:  # and they all still exist and work for tb
        assert b.get(f"/api/v1/sandboxes/{world.b}").json()["state"] == "running"
        assert b.get(f"/api/v1/sandboxes/{world.b}/ports/8000/proxy/").status_code == 200
        assert b.get(f"/api/v1/snapshots/{world.snap_b}").status_code == 200
        read = b.get(f"/api/v1/sandboxes/{world.b}/files", params={"path": "/root/secret"})
        assert read.content == b"tb's"


def test_listings_show_only_the_tenants_own(world: World) -> None:
    """ta lists only its sandbox and no snapshot; the admin lists both tenants'."""
    with world.http("ta") as a:
        assert [s["id"] for s in a.get("/api/v1/sandboxes").json()["data"]] == [world.a]
        assert a.get("/api/v1/snapshots").json()["data"] == []
        assert a.get("/api/v1/info").json()["sandboxes"] == 1
    with world.http("admin") as admin:
        listed = {s["id"]: s["tenant"] for s in admin.get("/api/v1/sandboxes").json()["data"]}
        assert listed == {world.a: "ta", world.b: "tb"}
        assert world.snap_b in {s["id"] for s in admin.get("/api/v1/snapshots").json()["data"]}
        stat = admin.get(f"/api/v1/sandboxes/{world.b}/files/stat", params={"path": "/root"})
        assert stat.status_code == 200


def test_websockets_refuse_another_tenants_sandbox(world: World) -> None:
    """The exec and the port-relay WebSockets refuse tb's sandbox to ta as not found."""
    with SdkClient(world.server.url, world.keys["ta"]) as a:
        for path in (f"/sandboxes/{world.b}/exec/ws", f"/sandboxes/{world.b}/ports/8000/proxy/"):
            with pytest.raises(SandboxNotFound):
                a.websocket(path)


def test_host_routes_refuse_another_tenants_sandbox(world: World) -> None:
    """``8000-{tb's id}.{domain}`` is tb's web server to tb, and not found to ta."""
    host = {"Host": f"8000-{world.b}.{DOMAIN}"}
    with world.http("tb") as b, world.http("ta") as a:
        assert b.get("/", headers=host).status_code == 200
        refused = a.get("/", headers=host)
        assert refused.status_code == 404
        assert refused.json()["error"]["code"] == "sandbox_not_found"


def test_arrakis_sees_only_the_tenants_vms(world: World) -> None:
    """Through /v1, ta finds none of tb's VMs or snapshots; tb finds its own."""
    with world.http("ta") as a, world.http("tb") as b:
        assert a.get("/v1/vms").json()["vms"] == []
        assert [v["vmName"] for v in b.get("/v1/vms").json()["vms"]] == ["bvm"]
        for method, path, body in [
            ("GET", "/v1/vms/bvm", None),
            ("POST", "/v1/vms/bvm/cmd", {"cmd": "cat /root/secret"}),
            ("GET", "/v1/vms/bvm/files?paths=/root/secret", None),
            ("POST", "/v1/vms/bvm/snapshots", {"snapshotId": "stolen"}),
            ("PATCH", "/v1/vms/bvm", {"status": "paused"}),
            ("DELETE", "/v1/vms/bvm", None),
            ("POST", "/v1/vms", {"vmName": "copy", "snapshotId": "b-snap"}),
        ]:
            refused = a.request(method, path, json=body)
            assert refused.status_code == 404, (method, path, refused.text)
        assert a.delete("/v1/vms").status_code == 200  # "destroy all" destroys only ta's (none)
        assert b.get("/v1/vms/bvm").json()["status"] == "RUNNING"


@contextlib.asynccontextmanager
async def mcp_client(world: World, who: str) -> AsyncIterator[McpClient]:
    headers = {"Authorization": f"Bearer {world.keys[who]}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=120) as http,
        McpClient(streamable_http_client(f"{world.server.url}/mcp", http_client=http)) as client,
    ):
        yield client


async def test_mcp_sees_only_the_tenants_sandboxes(world: World) -> None:
    """Over /mcp, ta's tools list only ta's sandbox and can't touch tb's or its snapshot."""
    async with mcp_client(world, "ta") as client:
        listed = await client.call_tool("list_sandboxes", {})
        assert listed.structured_content is not None
        assert [s["sandbox_id"] for s in listed.structured_content["result"]] == [world.a]
        for tool, arguments in [
            ("run_command", {"sandbox_id": world.b, "command": "cat /root/secret"}),
            ("read_file", {"sandbox_id": world.b, "path": "/root/secret"}),
            ("snapshot", {"sandbox_id": world.b}),
            ("destroy_sandbox", {"sandbox_id": world.b}),
            ("restore", {"snapshot_id": world.snap_b}),
        ]:
            result = await client.call_tool(tool, arguments)
            text = " ".join(getattr(c, "text", "") for c in result.content)
            assert result.is_error and "not_found" in text, (tool, text)
    async with mcp_client(world, "tb") as client:
        listed = await client.call_tool("list_sandboxes", {})
        assert listed.structured_content is not None
        assert [s["sandbox_id"] for s in listed.structured_content["result"]] == [world.b]


def test_tenant_shows_quota_and_use(world: World) -> None:
    """GET /tenant names the key's tenant, its quota (SIETCH_TENANT_QUOTA's, the rest
    unlimited) and what it holds."""
    with world.http("ta") as a:
        body = a.get("/api/v1/tenant").json()
    assert (body["name"], body["key"], body["admin"]) == ("ta", "test", False)
    assert body["quota"]["max_sandboxes"] == 3 and body["quota"]["max_vcpus"] is None
    assert body["usage"]["sandboxes"] == 1 and body["usage"]["vcpus"] >= 1
    with world.http("admin") as admin:
        assert admin.get("/api/v1/tenant").json()["admin"] is True


def assert_quota_429(response: httpx.Response, quota: str) -> None:
    assert response.status_code == 429, response.text
    assert int(response.headers["retry-after"]) >= 1
    body = response.json()["error"]
    assert body["code"] == "quota_exceeded" and body["details"]["quota"] == quota
    assert "sietch tenants set" in body["message"]


def test_quotas_answer_429_with_retry_after(world: World) -> None:
    """A tenant at its sandbox, memory or snapshot-disk quota gets 429, Retry-After, a code,
    whether it creates, restores or forks."""
    tenants = world.server.tenants
    tenants.set_quota("ta", max_sandboxes=1)
    tenants.set_quota("tm", max_memory_mib=64)
    tenants.set_quota("tb", max_sandboxes=1, max_snapshot_disk_mib=0)
    try:
        with world.http("ta") as a, world.http("tm") as m, world.http("tb") as b:
            assert_quota_429(a.post("/api/v1/sandboxes", json={}), "max_sandboxes")
            fork = a.post(f"/api/v1/sandboxes/{world.a}/fork", json={"count": 1})
            assert_quota_429(fork, "max_sandboxes")
            restore = b.post(f"/api/v1/snapshots/{world.snap_b}/restore", json={})
            assert_quota_429(restore, "max_sandboxes")
            assert_quota_429(m.post("/api/v1/sandboxes", json={}), "max_memory_mib")
            assert m.get("/api/v1/sandboxes").json()["data"] == []  # nothing half-made
            snap = b.post(f"/api/v1/sandboxes/{world.b}/snapshots", json={})
            assert_quota_429(snap, "max_snapshot_disk_mib")
    finally:
        for tenant in ("ta", "tm", "tb"):
            tenants.set_quota(
                tenant, max_sandboxes=None, max_memory_mib=None, max_snapshot_disk_mib=None
            )


def test_create_rate_is_per_tenant(world: World) -> None:
    """Past its create burst a tenant gets 429 with Retry-After; another is not held back.

    The first create is admitted (it takes the token) and then fails on its unknown image,
    so no VM is made.
    """
    world.server.tenants.set_quota("tm", create_rate_per_min=1, create_burst=1)
    try:
        with world.http("tm") as m:
            first = m.post("/api/v1/sandboxes", json={"image": "no-such-image"})
            assert first.status_code == 404, first.text
            assert_quota_429(m.post("/api/v1/sandboxes", json={}), "create_rate_per_min")
    finally:
        world.server.tenants.set_quota("tm", create_rate_per_min=None)


def test_a_revoked_key_is_refused_at_once(world: World) -> None:
    """``sietch keys create`` makes a key that works at once; after ``sietch keys revoke``
    the running server refuses it at the next request."""
    env = {**os.environ, "SIETCH_STATE_DIR": str(world.server.state_dir)}

    def sietch(*args: str) -> str:
        done = subprocess.run(
            [str(SIETCH), *args], env=env, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    key = sietch("keys", "create", "--tenant", "ta", "--name", "temp")
    headers = {"Authorization": f"Bearer {key}"}
    tenant = httpx.get(f"{world.server.url}/api/v1/tenant", headers=headers)
    assert tenant.json()["key"] == "temp"
    assert "temp" in sietch("keys", "ls", "--tenant", "ta")
    sietch("keys", "revoke", "temp", "--tenant", "ta")
    refused = httpx.get(f"{world.server.url}/api/v1/tenant", headers=headers)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthenticated"


async def test_sdk_retries_a_burst_past_the_create_burst(world: World) -> None:
    """Two creates at once against a burst of one: the SDK waits out the 429 and both are
    made, within its configured bound (it would raise the 429 past it)."""
    world.server.tenants.set_quota("tburst", create_rate_per_min=30, create_burst=1)
    async with AsyncClient(
        world.server.url, world.keys["tburst"], max_retries=10, retry_max_wait_s=120
    ) as client:
        made = await asyncio.gather(
            *(AsyncSandbox.create(client=client) for _ in range(2)), return_exceptions=True
        )
        try:
            assert all(isinstance(m, AsyncSandbox) for m in made), made
        finally:
            for sandbox in made:
                if isinstance(sandbox, AsyncSandbox):
                    await sandbox.kill()
