"""Snapshots through the REST API and the SDK: the same operations, over HTTP."""

from __future__ import annotations

import httpx
import pytest

from sietch.client import Client, Sandbox
from sietch.errors import Conflict, SandboxNotRunning
from tests.server.harness import ApiServer, api_server, http

__all__ = ["api_server", "http"]


def test_sdk_pause_snapshot_restore_fork(api_server: ApiServer) -> None:
    """sb.pause/resume/snapshot/fork and Sandbox.restore work end to end over HTTP."""
    with Client(api_server.url, api_server.api_key) as client:
        made: list[Sandbox] = []
        snaps: list[str] = []
        try:
            sb = Sandbox.create(client=client, auto_resume=False)  # a paused one refuses
            made.append(sb)
            sb.files.write("/root/x", b"saved")
            assert sb.pause().state == "paused"
            with pytest.raises(SandboxNotRunning):
                sb.exec("true")
            assert sb.resume().state == "running"
            snap = sb.snapshot("first", labels={"step": "1"})
            snaps.append(snap.id)
            assert snap.name == "first" and snap.labels == {"step": "1"}
            assert snap.parent_id == sb.info.snapshot_id
            sb.files.write("/root/x", b"changed")
            restored = Sandbox.restore(snap.id, client=client, hostname="again")
            made.append(restored)
            assert restored.info.snapshot_id == snap.id
            assert restored.files.read("/root/x") == b"saved"
            assert restored.exec("hostname").stdout.strip() == "again"
            assert restored.exec("getent hosts again").stdout.split() == ["127.0.1.1", "again"]
            forks = restored.fork(2)
            made.extend(forks)
            assert [f.files.read("/root/x") for f in forks] == [b"saved", b"saved"]
            listed = {s.id: s for s in Sandbox.list_snapshots(client=client)}
            assert snap.id in listed
            fork_snap = listed[forks[0].info.snapshot_id or ""]
            snaps.append(fork_snap.id)
            assert fork_snap.parent_id == snap.id
            with pytest.raises(Conflict):
                Sandbox.delete_snapshot(snap.id, client=client)
        finally:
            for s in reversed(made):
                s.kill()
            for snap_id in reversed(snaps):
                Sandbox.delete_snapshot(snap_id, client=client)


def test_unknown_snapshot_is_a_404_with_its_code(http: httpx.Client) -> None:
    """Restoring a snapshot that does not exist answers 404 snapshot_not_found."""
    response = http.post("/snapshots/snap-nope/restore", json={})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "snapshot_not_found"
