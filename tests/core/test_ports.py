"""Exposed ports on real VMs: a guest web server reached from the host's loopback."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from sietch.core.live import LiveSandbox
from sietch.core.manager import Manager
from sietch.errors import InvalidArgument, NotFound
from tests.conftest import SandboxFactory

PAGE = b"served from the guest\n"


async def serve(sb: LiveSandbox, content: bytes = PAGE, port: int = 8000) -> None:
    """Start ``python3 -m http.server`` in the guest, serving /srv/index.txt."""
    await sb.write_file("/srv/index.txt", content)
    await sb.start_background(
        ["python3", "-m", "http.server", str(port), "--bind", "0.0.0.0"], cwd="/srv", tag="web"
    )
    for _ in range(200):
        probe = await sb.exec(
            ["python3", "-c", f"import socket; socket.create_connection(('127.0.0.1', {port}))"]
        )
        if probe.exit_code == 0:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the guest web server did not start")


async def fetch(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.get(url)


async def test_expose_reaches_a_guest_server(manager: Manager, sandboxes: SandboxFactory) -> None:
    """An exposed guest port serves the host on 127.0.0.1 until it is unexposed."""
    sb = await sandboxes()
    await serve(sb)
    mapping = await manager.expose(sb.id, 8000)
    assert mapping.guest_port == 8000 and mapping.host == "127.0.0.1"
    assert await manager.expose(sb.id, 8000) == mapping
    assert [p.guest_port for p in (await manager.get(sb.id)).ports] == [8000]
    assert await manager.ports(sb.id) == [mapping]
    response = await fetch(f"http://127.0.0.1:{mapping.host_port}/index.txt")
    assert response.status_code == 200 and response.content == PAGE
    await manager.unexpose(sb.id, 8000)
    assert await manager.ports(sb.id) == []
    with pytest.raises(httpx.ConnectError):
        await fetch(f"http://127.0.0.1:{mapping.host_port}/index.txt")
    with pytest.raises(NotFound):
        await manager.unexpose(sb.id, 8000)


@pytest.mark.parametrize("port", [0, -1, 65536])
async def test_bad_ports_are_refused(shared: LiveSandbox, manager: Manager, port: int) -> None:
    """A port outside 1..65535 is an InvalidArgument."""
    with pytest.raises(InvalidArgument):
        await manager.expose(shared.id, port)


async def test_forks_expose_their_own_ports(manager: Manager, sandboxes: SandboxFactory) -> None:
    """Each fork gets the original's exposed guest port on a host port of its own."""
    sb = await sandboxes()
    await serve(sb)
    original = await manager.expose(sb.id, 8000)
    forks = await manager.fork(sb.id, 2)
    try:
        host_ports = {original.host_port}
        for n, info in enumerate(forks):
            [mapping] = info.ports
            assert mapping.guest_port == 8000
            host_ports.add(mapping.host_port)
            await manager.sandbox(info.id).write_file("/srv/index.txt", b"fork %d\n" % n)
            response = await fetch(f"http://127.0.0.1:{mapping.host_port}/index.txt")
            assert response.content == b"fork %d\n" % n
        assert len(host_ports) == 3
        response = await fetch(f"http://127.0.0.1:{original.host_port}/index.txt")
        assert response.content == PAGE
    finally:
        for info in forks:
            await manager.delete(info.id)
        snap_id = forks[0].snapshot_id if forks else None
        if snap_id:
            await manager.delete_snapshot(snap_id)
