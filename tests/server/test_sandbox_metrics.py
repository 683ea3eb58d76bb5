"""Per-sandbox metrics through a real server: REST, Prometheus, SDK and ``sietch top``; and
the memory reserve refusing creates with 503."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tenacity import Retrying, stop_after_delay, wait_fixed

from sietch.client import Sandbox, SandboxMetrics
from sietch.core.store import Store
from tests.cli.conftest import SIETCH
from tests.server.harness import ApiServer, run
from tests.server.test_errors import assert_error


@pytest.fixture(scope="module")
def server() -> Iterator[ApiServer]:
    """A server sampling every half second, with per-sandbox series for one sandbox only."""
    server = ApiServer(metrics_interval_s=0.5, metrics_max_sandboxes=1)
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
def api(server: ApiServer) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=server.url + "/api/v1", headers=server.headers, timeout=120
    ) as client:
        yield client


def create(api: httpx.Client) -> str:
    response = api.post("/sandboxes", json={})
    assert response.status_code == 201, response.text
    sandbox_id: str = response.json()["id"]
    return sandbox_id


def metrics(api: httpx.Client, sandbox_id: str) -> dict[str, Any]:
    response = api.get(f"/sandboxes/{sandbox_id}/metrics")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_metrics_are_sane_and_follow_what_the_guest_does(api: httpx.Client) -> None:
    """Current figures lie in sane ranges; after the guest computes, writes 32 MiB and sends
    packets, CPU, disk and network counters have grown, and the history fills."""
    sandbox_id = create(api)
    try:
        before = metrics(api, sandbox_id)["current"]
        assert before["memory_pss_bytes"] > 0 and before["cpu_seconds"] > 0
        assert 0 < before["guest_memory_used_bytes"] < before["guest_memory_total_bytes"]
        assert before["uptime_s"] >= 0 and before["disk_bytes"] >= 0
        if before["memory_limit_bytes"] is not None:  # root, with cgroups
            assert 0 < before["memory_bytes"] <= before["memory_limit_bytes"]
            assert before["pids"] >= 1
        work = (
            "dd if=/dev/urandom of=/root/blob bs=1M count=32 2>/dev/null && sync && python3 -c "
            '"import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n'
            "for _ in range(100): s.sendto(b'x' * 1000, ('10.0.2.2', 9))\""
        )
        assert run(api, sandbox_id, ["sh", "-c", work])["exit_code"] == 0
        after = metrics(api, sandbox_id)["current"]
        assert after["cpu_seconds"] > before["cpu_seconds"]
        assert after["disk_bytes"] >= before["disk_bytes"] + 16 * 2**20
        assert after["guest_disk_used_bytes"] >= before["guest_disk_used_bytes"] + 16 * 2**20
        assert after["net_tx_bytes"] >= before["net_tx_bytes"] + 100_000
        assert after["uptime_s"] > before["uptime_s"]
        for attempt in Retrying(stop=stop_after_delay(60), wait=wait_fixed(0.5), reraise=True):
            with attempt:
                history = metrics(api, sandbox_id)["history"]
                assert len(history) >= 3
        times = [h["at"] for h in history]
        assert times == sorted(times)
    finally:
        api.delete(f"/sandboxes/{sandbox_id}")


def test_prometheus_series_per_sandbox_are_capped(server: ApiServer, api: httpx.Client) -> None:
    """With a cap of one, the longest-running sandbox has series of its own and the other is
    summed under ``_other``."""
    first, second = create(api), create(api)
    try:

        def labels() -> set[str]:
            text = httpx.get(server.url + "/metrics", headers=server.headers).text
            found = set()
            for family in text_string_to_metric_families(text):
                if family.name == "sietch_sandbox_memory_bytes":
                    found |= {s.labels["sandbox"] for s in family.samples}
            return found

        for attempt in Retrying(stop=stop_after_delay(60), wait=wait_fixed(0.5), reraise=True):
            with attempt:
                assert labels() == {first, "_other"}
    finally:
        api.delete(f"/sandboxes/{first}")
        api.delete(f"/sandboxes/{second}")


def test_sdk_metrics_and_sietch_top(server: ApiServer) -> None:
    """``sb.metrics()`` returns the typed record, and ``sietch top --once`` lists the sandbox."""
    with Sandbox.create(url=server.url, api_key=server.api_key) as sb:
        found = sb.metrics()
        assert isinstance(found, SandboxMetrics) and found.sandbox_id == sb.id
        assert found.current.memory_pss_bytes
        top = subprocess.run(
            [str(SIETCH), "top", "--once"],
            check=False,
            env={**os.environ, **server.env, "COLUMNS": "250"},
            capture_output=True,
            timeout=120,
        )
        assert top.returncode == 0, top.stderr
        assert sb.id.encode() in top.stdout


def test_info_says_where_sandbox_limits_are(api: httpx.Client) -> None:
    """/info reports the cgroup hierarchy in use (or why none) and the memory reserve."""
    body = api.get("/info").json()
    if os.geteuid() == 0:
        assert "cgroup v" in body["cgroups"]
    else:
        assert "root" in body["cgroups"]
    assert body["memory_reserve_mib"] == 512


def test_a_create_below_the_memory_reserve_answers_503_and_leaves_nothing() -> None:
    """A server whose reserve exceeds the host's memory refuses creates with 503, naming
    the setting, and makes no VM, work dir or record."""
    server = ApiServer(memory_reserve_mib=1 << 30)
    server.start()
    try:
        with httpx.Client(base_url=server.url + "/api/v1", headers=server.headers) as api:
            body = assert_error(api.post("/sandboxes", json={}), 503, "unavailable")
            assert "SIETCH_MEMORY_RESERVE_MIB" in body["message"]
            assert api.get("/sandboxes").json()["count"] == 0
        sandboxes = server.state_dir / "sandboxes"
        assert not sandboxes.exists() or not any(sandboxes.iterdir())
        store = Store(server.state_dir / "sietch.db")
        try:
            assert store.all() == []
        finally:
            store.close()
    finally:
        server.cleanup()
