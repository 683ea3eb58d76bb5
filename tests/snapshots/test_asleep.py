"""Requests to a hibernated sandbox: each wakes it (auto_resume) or answers a clear 409."""

from __future__ import annotations

import asyncio

import pytest

from sietch.core.live import LiveSandbox
from sietch.core.manager import Manager
from sietch.core.models import SandboxState
from sietch.errors import SandboxNotRunning
from sietch.network.policy import NetworkPolicy
from tests.agent.hostside import eventually
from tests.core.test_ports import serve
from tests.core.test_timeouts import WAIT_S, becomes
from tests.snapshots.conftest import Tracker
from tests.snapshots.test_hibernate import serves


async def serve_daemon(sb: LiveSandbox, content: bytes, port: int = 8000) -> None:
    """A guest web server the guest daemonised itself: no API process keeps it awake."""
    await sb.write_file("/srv/index.txt", content)
    daemon = f"cd /srv && nohup python3 -m http.server {port} >/dev/null 2>&1 &"
    assert (await sb.exec(["sh", "-c", daemon])).exit_code == 0

    async def listening() -> None:
        probe = f"import socket; socket.create_connection(('127.0.0.1', {port}))"
        assert (await sb.exec(["python3", "-c", probe])).exit_code == 0

    await eventually(listening, WAIT_S)


async def refused(host_port: int) -> None:
    """Nothing listens on the host port any more."""
    with pytest.raises(ConnectionRefusedError):
        _, writer = await asyncio.open_connection("127.0.0.1", host_port)
        writer.close()


async def test_each_request_to_a_hibernated_sandbox_wakes_it_or_says_why_not(
    manager: Manager, track: Tracker
) -> None:
    """Pause and metrics answer 409 sandbox_not_running (state hibernated) and leave it
    asleep; a network policy and an unexpose change only its record; snapshot, fork, expose
    and a connection to its exposed host port wake it, with the changed policy and ports."""
    sb = await track.create()
    await serve(sb, b"knock knock")
    kept = await manager.expose(sb.id, 8000)
    dropped = await manager.expose(sb.id, 8001)
    await manager.hibernate(sb.id)

    for refusal in (manager.pause, manager.metrics):
        with pytest.raises(SandboxNotRunning, match=r"is hibernated.*resume it first") as exc:
            await refusal(sb.id)
        assert exc.value.details["state"] is SandboxState.HIBERNATED
    closed = NetworkPolicy(internet=False, allow=["203.0.113.0/24"])
    assert (await manager.set_network(sb.id, closed)).network == closed
    await manager.unexpose(sb.id, 8001)
    await refused(dropped.host_port)
    assert (await manager.get(sb.id)).state is SandboxState.HIBERNATED

    snap = await manager.snapshot(sb.id, name="of a sleeper")
    track.snapshot_ids.append(snap.id)
    woken = await manager.get(sb.id)
    assert woken.state is SandboxState.RUNNING
    assert woken.network == closed and woken.ports == [kept]

    await manager.hibernate(sb.id)
    forks = await manager.fork(sb.id, 1)
    track.sandbox_ids += [f.id for f in forks]
    assert (await manager.get(sb.id)).state is SandboxState.RUNNING

    await manager.hibernate(sb.id)
    assert (await manager.expose(sb.id, 8002)).guest_port == 8002
    assert (await manager.get(sb.id)).state is SandboxState.RUNNING

    await manager.hibernate(sb.id)
    await eventually(lambda: serves(kept.host_port, "knock knock"), WAIT_S)
    assert (await manager.get(sb.id)).state is SandboxState.RUNNING
    assert kept in (await manager.get(sb.id)).ports


async def test_without_auto_resume_nothing_wakes_it(manager: Manager, track: Tracker) -> None:
    """With auto_resume off a snapshot, a command and a connection to its host port are
    refused (409 naming auto_resume; the connection closed) and it stays hibernated."""
    sb = await track.create(auto_resume=False)
    await serve(sb, b"asleep")
    mapping = await manager.expose(sb.id, 8000)
    await manager.hibernate(sb.id)

    with pytest.raises(SandboxNotRunning, match="auto_resume is off"):
        await manager.snapshot(sb.id)
    with pytest.raises(SandboxNotRunning, match="auto_resume is off"):
        async with manager.use(sb.id):
            pass
    reader, writer = await asyncio.open_connection("127.0.0.1", mapping.host_port)
    writer.write(b"GET /index.txt HTTP/1.0\r\n\r\n")
    try:
        answer = await asyncio.wait_for(reader.read(), WAIT_S)
    except ConnectionResetError:
        answer = b""  # reset, not closed: refused all the same
    assert answer == b""
    writer.close()
    assert (await manager.get(sb.id)).state is SandboxState.HIBERNATED
    assert (await manager.resume(sb.id)).ports == [mapping]


async def test_an_open_host_port_connection_keeps_it_awake(
    manager: Manager, track: Tracker
) -> None:
    """With idle_timeout_s, a sandbox with a connection open on its exposed host port (the
    raw TCP relay) stays running while an idle twin pauses; closed, it pauses too."""
    relayed, twin = await track.create(), await track.create()
    await serve_daemon(relayed, b"held")
    mapping = await manager.expose(relayed.id, 8000)
    _, writer = await asyncio.open_connection("127.0.0.1", mapping.host_port)
    try:
        for sb in (relayed, twin):
            await manager.set_timeout(sb.id, idle_timeout_s=1, on_idle="pause")
        await becomes(manager, twin.id, SandboxState.PAUSED)
        assert (await manager.get(relayed.id)).state is SandboxState.RUNNING
    finally:
        writer.close()
    await becomes(manager, relayed.id, SandboxState.PAUSED)
