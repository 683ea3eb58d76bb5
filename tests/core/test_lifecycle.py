"""Sandbox lifecycle on real VMs: isolation, confinement, clean deletion, bad input."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from sietch.core.live import LiveSandbox
from sietch.core.manager import Manager
from sietch.errors import ImageNotFound, InvalidArgument, SandboxNotFound, SandboxNotRunning
from sietch.vmm import process
from tests.conftest import SandboxFactory


async def test_two_sandboxes_are_isolated(sandboxes: SandboxFactory) -> None:
    """Neither sandbox sees the other's files or processes."""
    a, b = await asyncio.gather(sandboxes(), sandboxes())
    await a.write_file("/root/secret", b"only-a")
    pid = await a.start_background(["sleep", "301"])
    assert (await b.exec(["ls", "/root"])).stdout == b""
    assert b"sleep 301" not in (await b.exec(["ps", "-eo", "args"])).stdout
    assert b"sleep 301" in (await a.exec(["ps", "-eo", "args"])).stdout
    assert (await a.exec(["cat", "/root/secret"])).stdout == b"only-a"
    await a.signal(pid, "SIGKILL")


async def test_delete_reaps_the_vm_and_its_files(manager: Manager) -> None:
    """Deleting a sandbox ends its QEMU process and removes its directory and record."""
    info = await manager.create()
    workdir = manager.sandboxes_dir / info.id
    assert info.pid is not None and process.alive(info.pid)
    await manager.delete(info.id)
    assert not process.alive(info.pid)
    assert not workdir.exists()
    with pytest.raises(SandboxNotFound):
        await manager.get(info.id)
    with pytest.raises(SandboxNotFound):
        manager.sandbox(info.id)


async def test_qemu_runs_confined(shared: LiveSandbox) -> None:
    """QEMU runs under seccomp and, as root, as the unprivileged VM user."""
    pid = shared.machine.pid
    assert pid is not None
    args = process.cmdline(pid)
    assert "-sandbox" in args and args[args.index("-sandbox") + 1].startswith("on")
    with open(f"/proc/{pid}/status") as f:
        status = dict(line.split(":", 1) for line in f)
    assert "2" in status["Seccomp"]
    if os.geteuid() == 0 and shared.machine.config.run_as is not None:
        assert int(status["Uid"].split()[0]) == shared.machine.config.run_as[0] != 0


async def test_console_log_has_the_boot(shared: LiveSandbox) -> None:
    """The guest's serial console is captured for debugging boot failures."""
    log = shared.console_log()
    assert "sietch-agent" in log


async def test_minimal_image_without_python(sandboxes: SandboxFactory) -> None:
    """A root filesystem with no python3 still runs commands and moves files."""
    sb = await sandboxes(image="minimal")
    result = await sb.exec("echo hello from busybox; ls /usr/bin/python3 2>&1")
    assert result.stdout.startswith(b"hello from busybox\n")
    assert result.exit_code != 0
    await sb.write_file("/tmp/x", b"data")
    assert await sb.read_bytes("/tmp/x") == b"data"


async def test_no_route_to_host_loopback(shared: LiveSandbox) -> None:
    """Code in a sandbox cannot reach services on the host's loopback."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    try:
        probe = (
            "import socket,sys\n"
            "for host in ('10.0.2.2', '127.0.0.1'):\n"
            "    try:\n"
            f"        socket.create_connection((host, {port}), timeout=3).close()\n"
            "        print('reached', host); sys.exit(1)\n"
            "    except OSError as e:\n"
            "        print('blocked', host, e)\n"
        )
        result = await shared.exec(["python3", "-c", probe])
        assert result.exit_code == 0, result.stdout
        assert result.stdout.count(b"blocked") == 2
    finally:
        server.close()


@pytest.mark.parametrize(
    ("spec", "error", "words"),
    [
        ({"memory_mib": 0}, InvalidArgument, "memory_mib"),
        ({"memory_mib": 10**7}, InvalidArgument, "memory_mib"),
        ({"vcpus": 1000}, InvalidArgument, "vcpus"),
        ({"disk_mib": 1}, InvalidArgument, "disk_mib"),
        ({"image": "no-such-image"}, ImageNotFound, "no-such-image"),
        ({"env": {"A=B": "x"}}, InvalidArgument, "A=B"),
        ({"colour": "blue"}, InvalidArgument, "colour"),
    ],
)
async def test_bad_specs_are_refused(manager: Manager, spec: dict, error: type, words: str) -> None:
    """Bad create requests fail with a clear error naming the problem, leaving nothing behind."""
    before = sorted(os.listdir(manager.sandboxes_dir))
    with pytest.raises(error, match=words):
        await manager.create(**spec)
    assert sorted(os.listdir(manager.sandboxes_dir)) == before


async def test_unknown_sandbox_id(manager: Manager) -> None:
    """Unknown ids raise SandboxNotFound everywhere."""
    with pytest.raises(SandboxNotFound, match="sb-missing"):
        await manager.get("sb-missing")
    with pytest.raises(SandboxNotFound):
        await manager.delete("sb-missing")
    with pytest.raises(SandboxNotFound):
        manager.sandbox("sb-missing")


async def test_dead_vm_is_marked_not_dropped(manager: Manager) -> None:
    """A sandbox whose QEMU dies is kept and marked dead; commands on it fail clearly."""
    info = await manager.create()
    assert info.pid is not None
    os.kill(info.pid, 9)
    for _ in range(100):
        if (await manager.get(info.id)).state == "dead":
            break
        await asyncio.sleep(0.05)
    dead = await manager.get(info.id)
    assert dead.state == "dead" and dead.error
    with pytest.raises(SandboxNotRunning):
        manager.sandbox(info.id)
    await manager.delete(info.id)
