"""A hibernated sandbox through the real server: what wakes it, what answers 409, and its
host port across a restart."""

from __future__ import annotations

import httpx
from tenacity import Retrying, stop_after_delay, wait_fixed

from sietch.client import Sandbox
from tests.server.harness import ApiServer, wait_listening
from tests.server.test_lifecycle_api import WAIT_S, hibernate, state


def not_running(response: httpx.Response) -> None:
    """A 409 with the stable code and the state it is in."""
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] == "sandbox_not_running", error
    assert error["details"]["state"] == "hibernated" and "resume" in error["message"]


def test_links_and_snapshots_of_a_hibernated_sandbox(http: httpx.Client) -> None:
    """An IDE link is handed out without waking it and a snapshot wakes it; with
    auto_resume off both, and pause, answer 409 sandbox_not_running and it sleeps on."""
    woken = http.post("/sandboxes", json={}).json()["id"]
    sleeper = http.post("/sandboxes", json={"auto_resume": False}).json()["id"]
    try:
        hibernate(http, woken)
        assert http.get(f"/sandboxes/{woken}/ide").status_code == 200
        assert state(http, woken) == "hibernated"
        snap = http.post(f"/sandboxes/{woken}/snapshots", json={})
        assert snap.status_code == 201, snap.text
        assert state(http, woken) == "running"
        assert http.delete(f"/snapshots/{snap.json()['id']}").status_code == 204

        hibernate(http, sleeper)
        not_running(http.get(f"/sandboxes/{sleeper}/ide"))
        not_running(http.post(f"/sandboxes/{sleeper}/snapshots", json={}))
        not_running(http.post(f"/sandboxes/{sleeper}/pause"))
        assert state(http, sleeper) == "hibernated"
    finally:
        for sandbox_id in (woken, sleeper):
            http.delete(f"/sandboxes/{sandbox_id}")


def test_a_connection_to_its_host_port_wakes_it_after_a_restart() -> None:
    """A hibernated sandbox keeps its exposed host port across a server restart, and a plain
    HTTP request to that port wakes it and is answered by the guest."""
    server = ApiServer()
    server.start()
    try:
        with Sandbox.create(url=server.url, api_key=server.api_key) as sb:
            sb.files.write("/srv/index.txt", b"after the restart")
            sb.process.start(["python3", "-m", "http.server", "8000"], cwd="/srv")
            api = server.url + "/api/v1"
            with httpx.Client(base_url=api, headers=server.headers, timeout=WAIT_S) as http:
                wait_listening(http, sb.id, 8000)
                port = sb.expose(8000)
                hibernate(http, sb.id)
            server.stop()
            server.start()
            for attempt in Retrying(stop=stop_after_delay(WAIT_S), wait=wait_fixed(0.5)):
                with attempt, httpx.Client(trust_env=False, timeout=WAIT_S) as plain:
                    page = plain.get(f"http://127.0.0.1:{port.host_port}/index.txt")
            assert page.text == "after the restart"
            assert sb.refresh().state == "running"
            assert [p.host_port for p in sb.ports()] == [port.host_port]
    finally:
        server.cleanup()
