"""Three nodes (each in a network namespace of its own) and two gateways on one catalog:
placement, every kind of request through either gateway, snapshots copied between nodes,
tenants across nodes, the nodes' internal port, and a node killed and brought back.

The tests share one cluster and run in file order: the last one kills a node.
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import httpx
import httpx2
import pytest
from e2b import Sandbox as E2BSandbox
from mcp import Client as McpClient
from mcp.client.streamable_http import streamable_http_client
from playwright.sync_api import Browser, expect
from py_arrakis import SandboxManager
from tenacity import Retrying, stop_after_delay, wait_fixed
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from sietch import Sandbox
from sietch.client import Client
from sietch.cluster.wire import CALLER_HEADER, SECRET_HEADER, encode_caller
from sietch.config import Settings
from sietch.core.tenants import Caller
from sietch.images import desktop
from sietch.images.novnc import ENTRY as NOVNC_ENTRY
from sietch.server.console.session import PURPOSE
from sietch.server.routes.viewer import viewer_prefix
from sietch.vmm import accel
from sietch.vmm.version import version_text
from tests.cluster.harness import SECRET, Cluster, cluster
from tests.cluster.network import ClusterNet
from tests.cluster.postgres import Postgres
from tests.desktop.conftest import SPEC as DESKTOP
from tests.desktop.test_viewer import READY_S, Desktop, rfb_session
from tests.server.harness import wait_listening

T = TypeVar("T")
SMALL = {"memory_mib": 256}
LOGIN_COOKIE = f"sietch_{PURPOSE}"
CAPACITY = {"node-1": 8, "node-2": 14, "node-3": 14}
"""Sandbox slots per node (SIETCH_MAX_SANDBOXES): node-1 is the small one."""


@pytest.fixture(scope="module")
def sietch_cluster(cluster_net: ClusterNet, postgres: Postgres) -> Iterator[Cluster]:
    settings = [{"max_sandboxes": str(n)} for n in CAPACITY.values()]
    with cluster(cluster_net, postgres, settings, gateways=2) as made:
        yield made


def _node_of(c: Cluster, sandbox_id: str) -> str:
    placed = c.catalog.locate(sandbox_id)
    assert placed is not None, f"{sandbox_id} is not in the catalog"
    return placed.node


def _create_on(http: httpx.Client, nodes: tuple[str, ...], made: list[str], **body: object) -> None:
    """A small sandbox on each of ``nodes`` (``prefer_node``), its id appended to ``made``
    as soon as it is there, so that a failure part-way still deletes the ones before."""
    for node in nodes:
        answer = http.post("/sandboxes", json={**SMALL, "prefer_node": node, **body})
        assert answer.status_code == 201, answer.text
        made.append(answer.json()["id"])


def _sdk(c: Cluster, gateway: int, key: str | None = None) -> dict[str, str]:
    return {"url": c.gateways[gateway].url, "api_key": key or c.admin_key}


def test_each_node_registers_with_its_capacity(sietch_cluster: Cluster) -> None:
    """Every node is in the catalog, reachable, with what its heartbeat measured: its
    slots as configured, this machine's cores, memory and disk, its accelerator and its
    QEMU's version."""
    c = sietch_cluster
    nodes = {n.name: n for n in c.catalog.nodes()}
    assert set(nodes) == set(CAPACITY)
    for name, node in nodes.items():
        have = node.capacity
        assert node.reachable and node.url == c.node(name).url
        assert have.max_sandboxes == CAPACITY[name]
        assert have.vcpus == os.cpu_count()
        assert 0 < have.free_memory_mib <= have.memory_mib
        assert 0 < have.free_disk_mib <= have.disk_mib
        assert have.accelerator == accel.resolve(Settings().accel)
        assert have.qemu_version == version_text(Settings().qemu_binary)


def test_creates_spread_over_the_nodes_by_capacity(sietch_cluster: Cluster) -> None:
    """30 creates through both gateways land on every node, none past its slots, the
    small node holding no more than the others; each node's list is its own share."""
    c = sietch_cluster

    def create(n: int) -> str:
        with c.client(n % 2) as http:
            answer = http.post("/sandboxes", json={**SMALL, "labels": {"batch": "spread"}})
            assert answer.status_code == 201, answer.text
            return str(answer.json()["id"])

    with ThreadPoolExecutor(3) as pool:
        ids = list(pool.map(create, range(30)))
    try:
        counts = {name: 0 for name in CAPACITY}
        for sandbox_id in ids:
            counts[_node_of(c, sandbox_id)] += 1
        assert all(counts[n] <= CAPACITY[n] for n in CAPACITY), counts
        assert all(counts.values()), counts
        assert counts["node-1"] <= min(counts["node-2"], counts["node-3"]), counts
        print(f"spread {counts}, stddev {statistics.pstdev(counts.values()):.2f}")
        with c.client(1) as http:
            listed = http.get("/sandboxes", params={"label": "batch=spread"}).json()
        assert sorted(s["id"] for s in listed["data"]) == sorted(ids)
        assert listed["count"] == 30
    finally:
        with ThreadPoolExecutor(3) as pool, c.client(0) as http:
            list(pool.map(lambda i: http.delete(f"/sandboxes/{i}"), ids))
    for sandbox_id in ids:
        assert c.catalog.locate(sandbox_id) is None


def test_every_operation_works_through_either_gateway(sietch_cluster: Cluster) -> None:
    """A sandbox made through one gateway is driven through the other with the SDK,
    unchanged: streamed exec, files, processes, a PTY, the port proxy; the CLI lists it."""
    c = sietch_cluster
    with (
        Sandbox.create(**SMALL, **_sdk(c, 0)) as made,
        Sandbox.connect(made.id, **_sdk(c, 1)) as sb,
    ):
        seen: list[bytes] = []
        result = sb.exec("for i in 1 2 3; do echo line$i; done", on_stdout=seen.append)
        assert result.exit_code == 0 and b"".join(seen) == b"line1\nline2\nline3\n"
        payload = os.urandom(3 << 20)
        sb.files.write("/tmp/blob", payload)
        assert made.files.read("/tmp/blob") == payload
        server = sb.exec("cd /tmp && python3 -m http.server 8000", background=True)
        assert any(p.pid == server.pid for p in made.process.list())
        term = sb.pty("sh")
        term.send("echo $((6*7))\nexit\n")
        assert b"42" in b"".join(term)
        sb.expose(8000)
        with c.client(1) as http:
            wait_listening(http, made.id, 8000)
        headers = {"Authorization": f"Bearer {c.admin_key}"}
        for attempt in Retrying(stop=stop_after_delay(60), wait=wait_fixed(0.3), reraise=True):
            with attempt:
                page = httpx.get(made.proxy_url(8000, "blob"), headers=headers, timeout=30)
                assert page.status_code == 200 and page.content == payload
        cli = subprocess.run(
            [str(Path(sys.executable).parent / "sietch"), "ls", "--json"],
            env=c.env(1),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert cli.returncode == 0, cli.stderr
        assert made.id in cli.stdout


def test_e2b_and_arrakis_clients_work_through_a_gateway(
    sietch_cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The e2b SDK (REST and envd, routed by its sandbox header) and py-arrakis (routed
    by VM name) create, run and kill through a gateway with only a URL change."""
    c = sietch_cluster
    url = c.gateways[1].url
    for name, value in {
        "E2B_API_KEY": c.admin_key,
        "E2B_API_URL": url,
        "E2B_SANDBOX_URL": url,
    }.items():
        monkeypatch.setenv(name, value)
    e2b = E2BSandbox.create()
    try:
        assert e2b.commands.run("echo e2b").stdout == "e2b\n"
        assert c.catalog.locate(e2b.sandbox_id) is not None
    finally:
        e2b.kill()
    arrakis = SandboxManager(f"http://arrakis:{c.admin_key}@127.0.0.1:{c.gateways[0].port}")
    vm = arrakis.start_sandbox("cluster-vm")
    try:
        assert "hi" in vm.run_cmd("echo hi")["output"]
        assert "cluster-vm" in [v.name for v in arrakis.list_all()]
    finally:
        vm.destroy()


def test_a_snapshot_taken_on_one_node_is_restored_on_another(sietch_cluster: Cluster) -> None:
    """A snapshot on node-1, restored with prefer_node=node-2 through the other gateway,
    is copied there first (checksummed) and comes back with its files; both hold it."""
    c = sietch_cluster
    with Sandbox.create(**SMALL, prefer_node="node-1", **_sdk(c, 0)) as source:
        assert _node_of(c, source.id) == "node-1"
        source.files.write("/root/note", b"taken on node-1")
        snap = source.snapshot(name="to-copy")
    with Sandbox.restore(snap.id, prefer_node="node-2", **_sdk(c, 1)) as copy:
        assert _node_of(c, copy.id) == "node-2"
        assert copy.files.read("/root/note") == b"taken on node-1"
        assert copy.exec("echo restored").stdout == "restored\n"
    assert [node for node, _ in c.catalog.snapshot_holders(snap.id)] == ["node-1", "node-2"]
    with c.client(0) as http:
        assert http.delete(f"/snapshots/{snap.id}").status_code == 204
    for attempt in Retrying(stop=stop_after_delay(30), wait=wait_fixed(0.3), reraise=True):
        with attempt:  # the other holder's copy goes too, and its report says so
            assert c.catalog.snapshot_holders(snap.id) == []


def test_tenants_are_isolated_and_quotas_hold_across_nodes(sietch_cluster: Cluster) -> None:
    """A tenant's quota counts its sandboxes on every node; another tenant sees none of
    them (404, as for an unknown id), through either gateway."""
    c = sietch_cluster
    c.tenants.set_quota("acme", max_sandboxes=2)
    _, acme = c.tenants.create_key("acme", "ci")
    _, beta = c.tenants.create_key("beta", "ci")
    made = []
    try:
        for gateway, node in ((0, "node-2"), (1, "node-3")):
            with c.client(gateway, acme) as http:
                _create_on(http, (node,), made)
        assert {_node_of(c, i) for i in made} == {"node-2", "node-3"}
        with c.client(1, acme) as http:
            refused = http.post("/sandboxes", json=SMALL)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "quota_exceeded"
        with c.client(0, beta) as http:
            assert http.get(f"/sandboxes/{made[0]}").status_code == 404
            exec_other = http.post(f"/sandboxes/{made[1]}/exec", json={"cmd": ["true"]})
            assert exec_other.status_code == 404
            assert http.get("/sandboxes").json()["count"] == 0
    finally:
        with c.client(0, acme) as http:
            for sandbox_id in made:
                http.delete(f"/sandboxes/{sandbox_id}")


def _until(check: Callable[[], T], timeout_s: float = 60) -> T:
    """``check()``'s value once it stops raising AssertionError (catalog reports lag a
    heartbeat behind)."""
    for attempt in Retrying(stop=stop_after_delay(timeout_s), wait=wait_fixed(0.3), reraise=True):
        with attempt:
            return check()
    raise AssertionError("unreachable")


def _holders(c: Cluster, image: str, count: int) -> list[str]:
    holders = c.catalog.image_holders(image)
    assert len(holders) == count, holders
    return sorted(holders)


def _backings(directory: Path, c: Cluster, node: str) -> list[str]:
    """The backing files of the disk layers under ``directory`` in other nodes' state."""
    others = [str(n.state_dir) for n in c.nodes if n.name != node]
    found = []
    for layer in directory.rglob("*.qcow2"):
        info = subprocess.run(
            ["qemu-img", "info", "--output=json", str(layer)],
            capture_output=True,
            text=True,
            check=True,
        )
        backing = json.loads(info.stdout).get("backing-filename", "")
        found += [backing] if backing.startswith(tuple(others)) else []
    return found


def test_an_image_is_built_once_and_copied_where_it_is_used(
    sietch_cluster: Cluster, tmp_path: Path
) -> None:
    """A user image built through a gateway is on one node; a create of it on another
    node copies it there first (record and layers, checksummed) and runs what the build
    wrote; the catalog then lists both holders. A snapshot of that sandbox restored on
    the third node has the image copied there first, its layers pointed at that copy,
    and runs. A delete through a gateway removes the image from every holder."""
    c = sietch_cluster
    (tmp_path / "Dockerfile").write_text("FROM minimal\nRUN echo built-once > /etc/built\n")
    with Client(c.gateways[0].url, c.admin_key) as client:
        client.images.build("copied", tmp_path)
        [home] = _until(lambda: _holders(c, "copied", 1))
        elsewhere = next(name for name in CAPACITY if name != home)
        with Sandbox.create("copied", prefer_node=elsewhere, client=client, **SMALL) as sb:
            assert _node_of(c, sb.id) == elsewhere
            assert sb.exec("cat /etc/built").stdout == "built-once\n"
            sb.exec("echo mine > /tmp/mine")
            snap = sb.snapshot()
        assert _until(lambda: _holders(c, "copied", 2)) == sorted([home, elsewhere])
        third = next(name for name in CAPACITY if name not in (home, elsewhere))
        with Sandbox.restore(snap.id, prefer_node=third, client=client) as back:
            assert _node_of(c, back.id) == third
            assert back.exec("cat /etc/built /tmp/mine").stdout == "built-once\nmine\n"
        # Its layers name this node's copy of the image, not the other node's files (which
        # this one machine would reach, but another would not).
        assert _backings(c.node(third).state_dir / "snapshots" / snap.id, c, third) == []
        assert _until(lambda: _holders(c, "copied", 3)) == sorted(CAPACITY)
        Sandbox.delete_snapshot(snap.id, client=client)
        client.images.delete("copied")
    _until(lambda: _holders(c, "copied", 0))


def test_a_hibernated_sandbox_resumes_on_another_node_when_its_own_is_full(
    sietch_cluster: Cluster,
) -> None:
    """A sandbox hibernated on node-1, which then fills up, resumes on another node under
    the same id with its files; the catalog and the other gateway follow it there."""
    c = sietch_cluster

    def fill(_: int) -> str:
        with c.client(0) as http:
            answer = http.post("/sandboxes", json={**SMALL, "prefer_node": "node-1"})
            assert answer.status_code == 201, answer.text
            return str(answer.json()["id"])

    with Sandbox.create(**SMALL, prefer_node="node-1", **_sdk(c, 0)) as sb:
        sb.files.write("/root/note", b"before the move")
        sb.hibernate()
        with ThreadPoolExecutor(3) as pool:
            filled = list(pool.map(fill, range(CAPACITY["node-1"])))
        try:
            assert {_node_of(c, i) for i in filled} == {"node-1"}
            assert sb.resume().state == "running"
            moved_to = _node_of(c, sb.id)
            assert moved_to != "node-1"
            assert sb.files.read("/root/note") == b"before the move"
            with Sandbox.connect(sb.id, **_sdk(c, 1)) as again:
                ran = _until(lambda: again.exec("echo moved"))
                assert ran.stdout == "moved\n"
        finally:
            with ThreadPoolExecutor(3) as pool, c.client(0) as http:
                list(pool.map(lambda i: http.delete(f"/sandboxes/{i}"), filled))
    assert c.catalog.locate(sb.id) is None


def test_forks_count_against_the_cluster_wide_quota(sietch_cluster: Cluster) -> None:
    """A tenant allowed 3 sandboxes, with one on each of two nodes, may not fork 2 more
    of one of them (429), though that node alone holds only one of its sandboxes."""
    c = sietch_cluster
    c.tenants.set_quota("gamma", max_sandboxes=3)
    _, gamma = c.tenants.create_key("gamma", "ci")
    made = []
    try:
        with c.client(0, gamma) as http:
            _create_on(http, ("node-2", "node-3"), made)
            refused = http.post(f"/sandboxes/{made[0]}/fork", json={"count": 2})
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"]["code"] == "quota_exceeded"
    finally:
        with c.client(0, gamma) as http:
            for sandbox_id in made:
                http.delete(f"/sandboxes/{sandbox_id}")


def test_a_revoked_key_is_refused_on_its_next_record_read(sietch_cluster: Cluster) -> None:
    """A record read goes to the node before the key is checked again (read-ahead), yet a
    key revoked between two reads gets 401 on the second, through either gateway."""
    c = sietch_cluster
    _, key = c.tenants.create_key("epsilon", "ci")
    with c.client(0, key) as http:
        answer = http.post("/sandboxes", json=SMALL)
        assert answer.status_code == 201, answer.text
        sandbox_id = answer.json()["id"]
    try:
        for gateway in (0, 1):
            with c.client(gateway, key) as http:
                for _ in range(2):  # the second read is sent ahead
                    assert http.get(f"/sandboxes/{sandbox_id}").status_code == 200
        c.tenants.revoke("ci", "epsilon")
        for gateway in (0, 1):
            with c.client(gateway, key) as http:
                refused = http.get(f"/sandboxes/{sandbox_id}")
                assert refused.status_code == 401, refused.text
                assert sandbox_id not in refused.text
    finally:
        with c.client(0) as http:
            http.delete(f"/sandboxes/{sandbox_id}")


def test_templates_are_found_by_id_through_a_gateway(sietch_cluster: Cluster) -> None:
    """A node's template, listed through a gateway, is read by its id through either
    gateway, and a tenant restores it by id (templates are everyone's)."""
    c = sietch_cluster
    _, delta = c.tenants.create_key("delta", "ci")
    with c.client(0) as http:
        listed = http.get("/snapshots", params={"templates": "true"}).json()["data"]
    template = next(s for s in listed if s["template"] and s["image"] == "default")
    for gateway in (0, 1):
        with c.client(gateway, delta) as http:
            got = http.get(f"/snapshots/{template['id']}")
            assert got.status_code == 200 and got.json()["id"] == template["id"], got.text
    with Sandbox.restore(template["id"], **_sdk(c, 1, delta)) as sb:
        assert sb.exec("echo from-template").stdout == "from-template\n"


async def test_mcp_through_a_gateway_sees_every_node(sietch_cluster: Cluster) -> None:
    """The MCP tools at a gateway's /mcp act on the whole cluster: they list sandboxes of
    two nodes and run a command in each."""
    c = sietch_cluster
    made = []
    with c.client(0) as http:
        _create_on(http, ("node-1", "node-2"), made)
    try:
        headers = {"Authorization": f"Bearer {c.admin_key}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=120) as http2,
            McpClient(streamable_http_client(f"{c.gateways[1].url}/mcp", http_client=http2)) as mcp,
        ):
            listed = await mcp.call_tool("list_sandboxes", {})
            assert not listed.is_error, listed.content
            assert listed.structured_content is not None
            seen = {s["sandbox_id"] for s in listed.structured_content["result"]}
            assert set(made) <= seen
            for sandbox_id in made:
                ran = await mcp.call_tool(
                    "run_command", {"sandbox_id": sandbox_id, "command": "echo $((6*7))"}
                )
                assert not ran.is_error, ran.content
                assert ran.structured_content is not None
                assert ran.structured_content["stdout"] == "42\n"
    finally:
        with c.client(0) as http:
            for sandbox_id in made:
                http.delete(f"/sandboxes/{sandbox_id}")


def _console(c: Cluster, gateway: int, login: str = "") -> httpx.Client:
    """The console of a gateway, as a browser of its origin calls it (with a login)."""
    url = c.gateways[gateway].url
    cookies = {LOGIN_COOKIE: login} if login else None
    return httpx.Client(base_url=url + "/ui", headers={"Origin": url}, cookies=cookies, timeout=180)


def _sign_in(c: Cluster, gateway: int, key: str) -> str:
    """The login id a sign-in through ``gateway`` sets in its cookie."""
    with _console(c, gateway) as ui:
        answer = ui.post("/login", data={"key": key, "next": "/ui/"})
    assert answer.status_code == 303, answer.text
    return answer.cookies[LOGIN_COOKIE]


def _signed_out(answer: httpx.Response) -> bool:
    return answer.status_code == 303 and answer.headers["location"].startswith("/ui/login")


def test_the_console_works_through_either_gateway(sietch_cluster: Cluster) -> None:
    """Signed in through one gateway, the other's console lists the tenant's sandboxes of
    every node, creates one with placement under the cluster-wide quota, pauses one on
    another node, deletes a selection spread over nodes and a snapshot held by two."""
    c = sietch_cluster
    c.tenants.set_quota("zeta", max_sandboxes=3)
    _, key = c.tenants.create_key("zeta", "console")
    made: list[str] = []
    try:
        with c.client(0, key) as http:
            _create_on(http, ("node-2", "node-3"), made, labels={"via": "api"})
        login = _sign_in(c, 0, key)
        with _console(c, 1, login) as ui:
            listed = ui.get("/")
            assert listed.status_code == 200, listed.text
            assert all(sandbox_id in listed.text for sandbox_id in made)
            created = ui.post("/sandboxes", data={"memory_mib": "256", "labels": "via=console"})
            assert created.status_code == 303, created.text
            made.append(created.headers["location"].rpartition("+")[2])
            placed = c.catalog.locate(made[2])
            assert placed is not None and placed.tenant == "zeta"
            over = ui.post("/sandboxes", data={"memory_mib": "256"})
            assert over.status_code == 303 and "max-sandboxes" in over.headers["location"]
            rows = ui.get("/sandboxes/rows", params={"label": "via=api"}).text
            assert made[0] in rows and made[1] in rows and made[2] not in rows
            paused = ui.post(f"/sandboxes/{made[1]}/lifecycle/pause")
            assert paused.status_code == 303 and "error" not in paused.headers["location"]
        with c.client(1, key) as http:
            assert http.get(f"/sandboxes/{made[1]}").json()["state"] == "paused"
            taken = http.post(f"/sandboxes/{made[0]}/snapshots", json={})
            assert taken.status_code == 201, taken.text
        with _console(c, 0, login) as ui:
            page = ui.get(f"/sandboxes/{made[1]}")
            assert page.status_code == 200 and "paused" in page.text
            gone = ui.post("/sandboxes/delete", data={"ids": made})
            assert gone.status_code == 303 and "deleted+3" in gone.headers["location"]
        assert [c.catalog.locate(sandbox_id) for sandbox_id in made] == [None] * 3
        made.clear()
        _console_deletes_every_copy(c, key, login, taken.json()["id"])
    finally:
        with c.client(0) as http:
            for sandbox_id in made:
                http.delete(f"/sandboxes/{sandbox_id}")


def _console_deletes_every_copy(c: Cluster, key: str, login: str, snap: str) -> None:
    with c.client(1, key) as http:  # a copy of the snapshot on node-3 too
        restored = http.post(f"/snapshots/{snap}/restore", json={"prefer_node": "node-3"})
        assert restored.status_code == 201, restored.text
        assert http.delete(f"/sandboxes/{restored.json()['id']}").status_code == 204
    assert sorted(n for n, _ in c.catalog.snapshot_holders(snap)) == ["node-2", "node-3"]
    with _console(c, 1, login) as ui:
        assert ui.post(f"/snapshots/{snap}/delete").status_code == 303
    assert c.catalog.snapshot_holders(snap) == []


def _tree_edges(page: str) -> set[tuple[str, str]]:
    """The snapshot tree's parent links on a console page: (parent, child) ids."""
    return set(re.findall(r'data-parent="(snap-[0-9a-f]+)" data-child="(snap-[0-9a-f]+)"', page))


def test_the_consoles_snapshot_tree_spans_every_node(sietch_cluster: Cluster) -> None:
    """Through either gateway, whichever node draws it, the console's snapshot tree has the
    tenant's snapshots of two nodes (a child on node-3 below its parent on node-1) and the
    sandbox restored between them; its restore works, and its fork of N is counted
    against the tenant's cluster-wide quota (refused, though no node alone is over it)."""
    c = sietch_cluster
    c.tenants.set_quota("theta", max_sandboxes=3)
    _, key = c.tenants.create_key("theta", "console")
    made: list[str] = []
    snaps: list[str] = []
    try:
        with c.client(0, key) as http:
            answer = http.post("/sandboxes", json={**SMALL, "prefer_node": "node-1"})
            assert answer.status_code == 201, answer.text
            made.append(answer.json()["id"])
            snaps.append(root := http.post(f"/sandboxes/{made[0]}/snapshots", json={}).json()["id"])
            answer = http.post(f"/snapshots/{root}/restore", json={"prefer_node": "node-3"})
            assert answer.status_code == 201, answer.text
            made.append(answer.json()["id"])
            child = http.post(f"/sandboxes/{made[1]}/snapshots", json={}).json()["id"]
            snaps.insert(0, child)
        assert [n for n, _ in c.catalog.snapshot_holders(child)] == ["node-3"]
        login = _sign_in(c, 0, key)
        for gateway in (0, 1, 0, 1):  # any node draws it: the others' snapshots come too
            with _console(c, gateway, login) as ui:
                tree = ui.get("/snapshots")
            assert tree.status_code == 200, tree.text
            assert _tree_edges(tree.text) == {(root, child)}
            assert f'data-restored-from="{root}" data-sandbox="{made[1]}"' in tree.text
        with _console(c, 1, login) as ui:
            restored = ui.post(f"/snapshots/{child}/restore")
            assert restored.status_code == 303 and "restored" in restored.headers["location"]
            made.append(restored.headers["location"].split("+")[1])
            placed = c.catalog.locate(made[2])
            assert placed is not None and placed.tenant == "theta"
            with c.client(1, key) as http:
                echoed = http.post(f"/sandboxes/{made[2]}/exec", json={"cmd": ["echo", "up"]})
                assert echoed.json()["stdout"] == "up\n"
                assert http.delete(f"/sandboxes/{made.pop()}").status_code == 204
            over = ui.post(f"/snapshots/{root}/fork", data={"count": "2"})
            assert over.status_code == 303 and "max-sandboxes" in over.headers["location"]
        assert len(c.catalog.sandboxes_on([n.name for n in c.nodes], "theta")) == 2
    finally:
        with c.client(0) as http:
            for sandbox_id in made:
                http.delete(f"/sandboxes/{sandbox_id}")
            for snap in snaps:  # the child first: its parent is kept while it is there
                http.delete(f"/snapshots/{snap}")


def test_a_console_login_ends_at_every_gateway(sietch_cluster: Cluster) -> None:
    """A sign-out through one gateway ends the login at the other; so does the key's
    revocation, at both, for pages and for the create form."""
    c = sietch_cluster
    _, key = c.tenants.create_key("eta", "console")
    login = _sign_in(c, 0, key)
    with _console(c, 1, login) as ui:
        assert ui.get("/").status_code == 200
        assert ui.post("/logout").status_code == 303
    with _console(c, 0, login) as ui:
        assert _signed_out(ui.get("/"))
    login = _sign_in(c, 1, key)
    with _console(c, 0, login) as ui:
        assert ui.get("/").status_code == 200
    c.tenants.revoke("console", "eta")
    for gateway in (0, 1):
        with _console(c, gateway, login) as ui:
            assert _signed_out(ui.get("/"))
            refused = ui.post("/sandboxes", data={"memory_mib": "256"})
            assert refused.status_code == 303 and "error=" in refused.headers["location"]
    assert c.catalog.sandboxes_on([n.name for n in c.nodes], "eta") == []


def test_the_console_in_a_browser_behind_two_gateways(
    sietch_cluster: Cluster, browser: Browser
) -> None:
    """In Chromium, signed in through one gateway: the other (the same host, so the same
    cookie) lists sandboxes of two nodes, and its terminal page runs a command in one
    (the WebSocket relayed, its origin checked by the gateway)."""
    c = sietch_cluster
    made = []
    with c.client(0) as http:
        _create_on(http, ("node-1", "node-3"), made)
    context = browser.new_context()
    context.set_default_timeout(120_000)
    try:
        page = context.new_page()
        page.goto(c.gateways[0].url + "/ui/")
        page.get_by_label("API key").fill(c.admin_key)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(c.gateways[0].url + "/ui/")
        page.goto(c.gateways[1].url + "/ui/")
        for sandbox_id in made:
            expect(page.locator(f"tr[data-sandbox={sandbox_id}]")).to_have_count(1)
        page.goto(f"{c.gateways[1].url}/ui/sandboxes/{made[1]}/terminal")
        terminal = page.locator("#terminal")
        expect(terminal).to_have_attribute("data-state", "connected", timeout=120_000)
        page.keyboard.type("echo hi-$((6*7))\n")
        expect(page.locator("#terminal .xterm-rows")).to_contain_text("hi-42", timeout=120_000)
    finally:
        context.close()
        with c.client(0) as http:
            for sandbox_id in made:
                http.delete(f"/sandboxes/{sandbox_id}")


# The node imports the desktop's template from the machine's template cache (seconds);
# on a cold cache it boots it (minutes under TCG) and publishes it, and tests/console and
# tests/desktop, later in the run, import it instead of booting it: one boot either way.
@pytest.mark.timeout(1500)
def test_the_desktop_viewer_works_through_a_gateway(sietch_cluster: Cluster) -> None:
    """A desktop sandbox on node-2, made through one gateway: the other hands out a viewer
    link on its own address; the link's visit, the viewer page, noVNC and the viewer's
    WebSocket all go through it, and the WebSocket (gateway -> node -> the guest's VNC
    port) logs in with the link's password and moves the guest's pointer; a screenshot
    of the computer-use API comes through it too."""
    c = sietch_cluster
    with c.client(0) as http:
        answer = http.post("/sandboxes", json={**DESKTOP, "prefer_node": "node-2"}, timeout=READY_S)
        assert answer.status_code == 201, answer.text
        sandbox_id = answer.json()["id"]
    assert _node_of(c, sandbox_id) == "node-2"
    gateway = c.gateways[1].url
    try:
        with c.client(1) as http:
            http.timeout = httpx.Timeout(READY_S)
            sandbox = Desktop(http, sandbox_id, gateway)
            sandbox.wait_for(f"xdpyinfo -display {desktop.DISPLAY}")
            link = sandbox.get("desktop")["viewer_url"]
            assert link.startswith(f"{gateway}/api/v1/sandboxes/{sandbox_id}/desktop/viewer/")
            visit = httpx.get(link, timeout=60)
            assert visit.status_code == 303, visit.text
            viewer = httpx.get(
                f"{gateway}/api/v1/sandboxes/{sandbox_id}/desktop/viewer/",
                headers={"Cookie": visit.headers["set-cookie"].partition(";")[0]},
                timeout=60,
            )
            assert viewer.status_code == 200 and "websockify" in viewer.text, viewer.text
            novnc = httpx.get(f"{gateway}/static/novnc/{NOVNC_ENTRY}", timeout=60)
            assert novnc.status_code == 200 and novnc.content
            _viewer_socket_checks_its_origin(gateway, sandbox_id, visit.headers["set-cookie"])
            with rfb_session(sandbox, view_only=False) as rfb:
                assert (rfb.width, rfb.height) == (1280, 800)
                rfb.pointer(211, 123)
                rfb.barrier()
            assert sandbox.mouse() == (211, 123)
            shot = http.get(f"/sandboxes/{sandbox_id}/desktop/screenshot")
            assert shot.status_code == 200 and shot.content.startswith(b"\x89PNG\r\n\x1a\n")
    finally:
        with c.client(0) as http:
            http.delete(f"/sandboxes/{sandbox_id}")


def _viewer_socket_checks_its_origin(gateway: str, sandbox_id: str, set_cookie: str) -> None:
    """As a browser opens it: from the gateway's own page the viewer's WebSocket reaches
    the guest's VNC server (its RFB banner); from another site's, it is refused."""
    url = gateway.replace("http", "ws", 1) + viewer_prefix(sandbox_id) + "websockify"
    cookie = set_cookie.partition(";")[0]
    own = {"Cookie": cookie, "Origin": gateway}
    with ws_connect(url, additional_headers=own, open_timeout=30) as ws:
        banner = ws.recv(timeout=60)
        assert isinstance(banner, bytes) and banner.startswith(b"RFB 003."), banner
    foreign = {"Cookie": cookie, "Origin": "http://elsewhere.example"}
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(url, additional_headers=foreign, open_timeout=30).close()
    assert refused.value.response.status_code == 403


def test_a_nodes_internal_port_refuses_public_api_keys(sietch_cluster: Cluster) -> None:
    """Straight to a node, a valid API key is refused (401); only the cluster secret
    gets in, and then only as the caller a gateway vouches for."""
    c = sietch_cluster
    node = c.nodes[0].url + "/api/v1/sandboxes"
    keyed = httpx.get(node, headers={"Authorization": f"Bearer {c.admin_key}"})
    assert keyed.status_code == 401
    assert "cluster secret" in keyed.json()["error"]["message"]
    assert httpx.get(node, headers={SECRET_HEADER: "wrong" * 8}).status_code == 401
    no_caller = httpx.get(node, headers={SECRET_HEADER: SECRET})
    assert no_caller.status_code == 401
    vouched = {SECRET_HEADER: SECRET, CALLER_HEADER: encode_caller(Caller("default", "t", True))}
    assert httpx.get(node, headers=vouched).status_code == 200
    # What nodes copy between them (snapshots, images, moved sandboxes) wants it too.
    export = c.nodes[0].url + "/internal/snapshots/snap-000000000000/export"
    refused = httpx.get(export, headers={"Authorization": f"Bearer {c.admin_key}"})
    assert refused.status_code == 401 and "cluster secret" in refused.text
    assert httpx.get(export, headers={SECRET_HEADER: SECRET}).status_code == 404


def test_a_gateway_restart_loses_nothing(sietch_cluster: Cluster) -> None:
    """Gateways keep no state: one restarted routes to the sandboxes made before."""
    c = sietch_cluster
    with Sandbox.create(**SMALL, **_sdk(c, 0)) as sb:
        c.gateways[0].stop()
        c.gateways[0].up()
        with Sandbox.connect(sb.id, **_sdk(c, 0)) as again:
            assert again.exec("echo still").stdout == "still\n"


def test_a_call_on_a_frozen_node_ends_in_a_503(sietch_cluster: Cluster) -> None:
    """A node whose server stops answering mid-call (SIGSTOP): a blocking exec on it ends
    in a 503 naming the node once its heartbeats stop, not when the command would end;
    the node thawed, the sandbox answers again."""
    c = sietch_cluster
    frozen = c.node("node-2")
    assert frozen.proc is not None
    with c.client(1) as http:
        answer = http.post("/sandboxes", json={**SMALL, "prefer_node": "node-2"})
        assert answer.status_code == 201, answer.text
        sandbox_id = answer.json()["id"]
        assert _node_of(c, sandbox_id) == "node-2"
        with ThreadPoolExecutor(1) as pool:
            call = pool.submit(
                http.post, f"/sandboxes/{sandbox_id}/exec", json={"cmd": ["sleep", "3600"]}
            )
            frozen.proc.send_signal(signal.SIGSTOP)
            try:
                cut = call.result()
            finally:
                frozen.proc.send_signal(signal.SIGCONT)
        assert cut.status_code == 503 and "node-2" in cut.json()["error"]["message"]
        for attempt in Retrying(stop=stop_after_delay(60), wait=wait_fixed(0.5), reraise=True):
            with attempt:
                back = http.post(f"/sandboxes/{sandbox_id}/exec", json={"cmd": ["echo", "up"]})
                assert back.status_code == 200 and back.json()["stdout"] == "up\n"
        assert http.delete(f"/sandboxes/{sandbox_id}").status_code == 204


def test_a_killed_node_loses_its_sandboxes_until_it_returns(sietch_cluster: Cluster) -> None:
    """SIGKILL a node's server: requests for its sandbox get 503 naming it (never a hang),
    listings show it lost, creates go to the other nodes, and a hibernated one of it does
    not resume elsewhere (its files are on it: 503 naming it); restarted, the node re-adopts
    both sandboxes and they answer again."""
    c = sietch_cluster
    victim = c.node("node-3")
    with c.client(0) as http:
        ids = []
        for _ in range(2):
            answer = http.post("/sandboxes", json={**SMALL, "prefer_node": "node-3"})
            assert answer.status_code == 201, answer.text
            ids.append(answer.json()["id"])
        sandbox_id, sleeper = ids
        assert {_node_of(c, i) for i in ids} == {"node-3"}
        http.post(f"/sandboxes/{sleeper}/exec", json={"cmd": ["sh", "-c", "echo kept > /root/f"]})
        assert http.post(f"/sandboxes/{sleeper}/hibernate").json()["state"] == "hibernated"
        victim.stop(signal.SIGKILL)
        try:
            down = http.post(f"/sandboxes/{sandbox_id}/exec", json={"cmd": ["true"]}, timeout=30)
            assert down.status_code == 503 and "node-3" in down.json()["error"]["message"]
            woken = http.post(f"/sandboxes/{sleeper}/resume", timeout=30)
            assert woken.status_code == 503 and "node-3" in woken.json()["error"]["message"]
            for attempt in Retrying(stop=stop_after_delay(60), wait=wait_fixed(0.5), reraise=True):
                with attempt:
                    listed = {s["id"]: s["state"] for s in http.get("/sandboxes").json()["data"]}
                    assert listed.get(sandbox_id) == listed.get(sleeper) == "lost"
            woken = http.post(f"/sandboxes/{sleeper}/resume", timeout=30)
            assert woken.status_code == 503 and "node-3" in woken.json()["error"]["message"]
            assert _node_of(c, sleeper) == "node-3"
            elsewhere = http.post("/sandboxes", json={**SMALL, "prefer_node": "node-3"})
            assert elsewhere.status_code == 201, elsewhere.text
            assert _node_of(c, elsewhere.json()["id"]) != "node-3"
            http.delete(f"/sandboxes/{elsewhere.json()['id']}")
        finally:
            victim.up()
        for attempt in Retrying(stop=stop_after_delay(60), wait=wait_fixed(0.5), reraise=True):
            with attempt:
                back = http.post(f"/sandboxes/{sandbox_id}/exec", json={"cmd": ["echo", "back"]})
                assert back.status_code == 200 and back.json()["stdout"] == "back\n"
        assert http.get(f"/sandboxes/{sandbox_id}").json()["state"] == "running"
        assert http.post(f"/sandboxes/{sleeper}/resume").json()["state"] == "running"
        assert _node_of(c, sleeper) == "node-3"
        kept = http.post(f"/sandboxes/{sleeper}/exec", json={"cmd": ["cat", "/root/f"]})
        assert kept.json()["stdout"] == "kept\n"
        for gone in ids:
            assert http.delete(f"/sandboxes/{gone}").status_code == 204
