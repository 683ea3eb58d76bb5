"""Hibernation and timeouts through the real server: restarts, kill -9, auto-resume, idleness."""

from __future__ import annotations

import os
import signal

import httpx
from tenacity import Retrying, stop_after_delay, wait_fixed

from sietch.client import Sandbox
from sietch.vmm import process
from tests.server.harness import ApiServer, run, wait_listening
from tests.server.test_ports import WS_ECHO

WAIT_S = 120.0


def state(http: httpx.Client, sandbox_id: str) -> str:
    response = http.get(f"/sandboxes/{sandbox_id}")
    assert response.status_code == 200, response.text
    value: str = response.json()["state"]
    return value


def becomes(http: httpx.Client, sandbox_id: str, wanted: str) -> None:
    for attempt in Retrying(stop=stop_after_delay(WAIT_S), wait=wait_fixed(0.2), reraise=True):
        with attempt:
            assert state(http, sandbox_id) == wanted


def hibernate(http: httpx.Client, sandbox_id: str) -> None:
    response = http.post(f"/sandboxes/{sandbox_id}/hibernate")
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "hibernated"


def resumed_intact(http: httpx.Client, sandbox_id: str) -> None:
    """Resume it; its file and its background process (still counting) came back."""
    response = http.post(f"/sandboxes/{sandbox_id}/resume")
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "running" and response.json()["id"] == sandbox_id
    assert run(http, sandbox_id, ["cat", "/root/kept"])["stdout"] == "kept"
    probe = ["sh", "-c", "a=$(cat /root/count); sleep 1; b=$(cat /root/count); [ $b -gt $a ]"]
    for attempt in Retrying(stop=stop_after_delay(WAIT_S), wait=wait_fixed(0.2), reraise=True):
        with attempt:
            assert run(http, sandbox_id, probe)["exit_code"] == 0, "not counting"


def test_hibernated_sandbox_survives_a_restart_and_a_kill_9() -> None:
    """Hibernate, restart the server, resume: intact. Hibernate, kill -9 the server and every
    process of its state dir, start again, resume: intact."""
    server = ApiServer()
    server.start()
    try:
        api = server.url + "/api/v1"
        with httpx.Client(base_url=api, headers=server.headers, timeout=WAIT_S) as http:
            sandbox_id = http.post("/sandboxes", json={}).json()["id"]
            http.put(
                f"/sandboxes/{sandbox_id}/files", params={"path": "/root/kept"}, content=b"kept"
            )
            counter = "i=0; while :; do i=$((i+1)); echo $i > /root/count.new; "
            counter += "mv /root/count.new /root/count; sleep 0.1; done"
            started = http.post(f"/sandboxes/{sandbox_id}/processes", json={"cmd": counter})
            assert started.status_code == 201, started.text
            hibernate(http, sandbox_id)
        marker = str(server.state_dir / "sandboxes" / sandbox_id) + os.sep
        assert not list(process.find_by_marker(marker)), "its QEMU still runs"

        server.stop()
        server.start()
        with httpx.Client(base_url=api, headers=server.headers, timeout=WAIT_S) as http:
            assert state(http, sandbox_id) == "hibernated"
            resumed_intact(http, sandbox_id)
            hibernate(http, sandbox_id)

        server.stop(signal.SIGKILL)
        for pid, _ in process.find_by_marker(str(server.state_dir)):
            os.kill(pid, signal.SIGKILL)
        server.start()
        with httpx.Client(base_url=api, headers=server.headers, timeout=WAIT_S) as http:
            assert state(http, sandbox_id) == "hibernated"
            resumed_intact(http, sandbox_id)
    finally:
        server.cleanup()


def test_auto_resume_on_a_proxied_request_and_sdk_calls(api_server: ApiServer) -> None:
    """A proxied HTTP request wakes a hibernated sandbox; an exec wakes a paused one; the SDK's
    hibernate and set_timeout drive it."""
    with (
        httpx.Client(base_url=api_server.url + "/api/v1", headers=api_server.headers) as http,
        Sandbox.create(url=api_server.url, api_key=api_server.api_key) as sb,
    ):
        sb.files.write("/srv/index.txt", b"woken")
        sb.process.start(["python3", "-m", "http.server", "8000", "--bind", "0.0.0.0"], cwd="/srv")
        wait_listening(http, sb.id, 8000)
        sb.expose(8000)
        assert sb.hibernate().state == "hibernated"
        page = http.get(f"/sandboxes/{sb.id}/ports/8000/proxy/index.txt", timeout=WAIT_S)
        assert page.status_code == 200, page.text
        assert page.text == "woken"
        assert sb.refresh().state == "running"

        info = sb.set_timeout(3600, on_timeout="pause")
        assert info.on_timeout == "pause" and info.expires_at is not None
        assert sb.pause().state == "paused"
        assert sb.exec("echo up").stdout == "up\n"
        assert sb.refresh().state == "running"
        assert sb.set_timeout(None).expires_at is None


def test_an_open_relay_keeps_a_sandbox_from_idling(api_server: ApiServer) -> None:
    """With idle_timeout_s, a sandbox with a WebSocket relay open stays running while an idle
    twin pauses; once the relay closes it pauses too."""
    from websockets.sync.client import connect

    with httpx.Client(
        base_url=api_server.url + "/api/v1", headers=api_server.headers, timeout=WAIT_S
    ) as http:
        ids = [http.post("/sandboxes", json={}).json()["id"] for _ in range(2)]
        relayed, twin = ids
        try:
            files = f"/sandboxes/{relayed}/files"
            http.put(files, params={"path": "/srv/ws_echo.py"}, content=WS_ECHO)
            # Daemonised by the guest, not an API process: that alone would keep it awake.
            daemon = "nohup python3 /srv/ws_echo.py >/dev/null 2>&1 &"
            assert run(http, relayed, ["sh", "-c", daemon])["exit_code"] == 0
            wait_listening(http, relayed, 8765)
            assert http.post(f"/sandboxes/{relayed}/ports", json={"port": 8765}).is_success
            url = api_server.url.replace("http", "ws", 1)
            url += f"/api/v1/sandboxes/{relayed}/ports/8765/proxy/idle"
            with connect(url, additional_headers=api_server.headers) as ws:
                ws.send("open")
                assert ws.recv(timeout=WAIT_S) == "/idle open"
                for sandbox_id in ids:
                    body = {"idle_timeout_s": 1, "on_idle": "pause"}
                    answer = http.post(f"/sandboxes/{sandbox_id}/timeout", json=body)
                    assert answer.status_code == 200, answer.text
                becomes(http, twin, "paused")
                assert state(http, relayed) == "running"
            becomes(http, relayed, "paused")
        finally:
            for sandbox_id in ids:
                http.delete(f"/sandboxes/{sandbox_id}")


def test_arrakis_stopped_hibernates_and_started_resumes(api_server: ApiServer) -> None:
    """Arrakis' PATCH status=stopped hibernates the VM (no QEMU left), started brings it back."""
    with httpx.Client(
        base_url=api_server.url + "/v1", headers=api_server.headers, timeout=WAIT_S
    ) as v1:
        assert v1.post("/vms", json={"vmName": "sleeper"}).status_code == 200
        try:
            stopped = v1.patch("/vms/sleeper", json={"status": "stopped"})
            assert stopped.status_code == 200, stopped.text
            assert v1.get("/vms/sleeper").json()["status"] == "STOPPED"
            started = v1.patch("/vms/sleeper", json={"status": "started"})
            assert started.status_code == 200, started.text
            assert v1.get("/vms/sleeper").json()["status"] == "RUNNING"
            ran = v1.post("/vms/sleeper/cmd", json={"cmd": "echo back"})
            assert ran.json()["output"] == "back\n", ran.text
        finally:
            v1.delete("/vms/sleeper")
