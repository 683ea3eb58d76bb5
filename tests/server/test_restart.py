"""A restarted server finds its sandboxes: live ones usable, dead ones marked dead."""

from __future__ import annotations

import os
import signal
import socket

import httpx

from sietch.vmm import process
from tests.network.outside import Outside
from tests.server.harness import ApiServer


def test_restart_keeps_running_sandboxes_and_marks_dead_ones(outside: Outside) -> None:
    """Restart the server while sandboxes run: both still listed and usable (snapshots too); a
    killed VM is dead."""
    server = ApiServer()
    server.start()
    out = f"http://{outside.web}/hello"
    try:
        api = server.url + "/api/v1"
        with httpx.Client(base_url=api, headers=server.headers, timeout=120) as c:
            ids = [c.post("/sandboxes", json={"metadata": {"n": str(i)}}).json()["id"]
                   for i in range(3)]  # fmt: skip
            for sandbox_id in ids:
                put = c.put(
                    f"/sandboxes/{sandbox_id}/files",
                    params={"path": "/root/before"},
                    content=sandbox_id.encode(),
                )
                assert put.status_code == 200, put.text
            exposed = c.post(f"/sandboxes/{ids[0]}/ports", json={"port": 8000}).json()
            assert c.post(f"/sandboxes/{ids[2]}/ports", json={"port": 8000}).status_code == 201

        server.stop()
        # While the server is down, one VM dies.
        victim = ids[2]
        marker = str(server.state_dir / "sandboxes" / victim) + os.sep
        pids = [pid for pid, _ in process.find_by_marker(marker)]
        assert pids, "the victim's QEMU is not running"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        server.start()

        with httpx.Client(base_url=api, headers=server.headers, timeout=120) as c:
            listed = {s["id"]: s for s in c.get("/sandboxes").json()["data"]}
            assert set(ids) <= set(listed)
            assert listed[victim]["state"] == "dead"
            assert listed[victim]["ports"] == []
            # The adopted VM kept its forward, and its record still says where it is.
            assert listed[ids[0]]["ports"] == [exposed]
            socket.create_connection(("127.0.0.1", exposed["host_port"]), timeout=10).close()
            for sandbox_id in ids[:2]:
                assert listed[sandbox_id]["state"] == "running"
                run = c.post(
                    f"/sandboxes/{sandbox_id}/exec", json={"cmd": "cat /root/before; echo !"}
                )
                assert run.status_code == 200, run.text
                assert run.json()["stdout"] == f"{sandbox_id}!\n"
            # Its uplink ran on without the server: the way out still works.
            fetch = f"import urllib.request; print(urllib.request.urlopen('{out}').read())"
            run = c.post(f"/sandboxes/{ids[0]}/exec", json={"cmd": ["python3", "-c", fetch]})
            assert run.json()["stdout"] == "b'hello from outside\\n'\n", run.text
            response = c.post(f"/sandboxes/{victim}/exec", json={"cmd": "true"})
            assert response.status_code == 409
            assert response.json()["error"]["code"] == "sandbox_not_running"
            # An adopted sandbox snapshots and restores like any other: the snapshot
            # records the image files its QEMU really runs.
            snap = c.post(f"/sandboxes/{ids[1]}/snapshots", json={})
            assert snap.status_code == 201, snap.text
            restored = c.post(f"/snapshots/{snap.json()['id']}/restore", json={})
            assert restored.status_code == 201, restored.text
            run = c.post(
                f"/sandboxes/{restored.json()['id']}/exec", json={"cmd": "cat /root/before"}
            )
            assert run.json()["stdout"] == ids[1], run.text
    finally:
        server.cleanup()
