"""Hibernation on real VMs: the QEMU goes and its memory with it; resume gives it all back."""

from __future__ import annotations

import httpx
import pytest

from sietch.core.manager import Manager
from sietch.core.models import SandboxState
from sietch.errors import Conflict, InvalidArgument, SandboxNotRunning
from sietch.vmm import process
from tests.agent.hostside import eventually
from tests.core.test_ports import serve
from tests.snapshots.conftest import Tracker
from tests.snapshots.test_incremental import write_memory
from tests.snapshots.test_snapshots import COUNTER, count, counting

WAIT_S = 120.0
KiB = 1024


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * KiB
    raise AssertionError("no MemAvailable in /proc/meminfo")


def anon_bytes(pid: int) -> int:
    """What the QEMU process holds of its own: the guest pages it wrote (RssAnon)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * KiB
    raise AssertionError("no RssAnon")


async def serves(host_port: int, text: str) -> None:
    """The guest's web server answers on ``host_port`` (a loaded host may drop a first try)."""
    async with httpx.AsyncClient(trust_env=False) as http:
        try:
            page = await http.get(f"http://127.0.0.1:{host_port}/index.txt")
        except httpx.TransportError as exc:
            raise AssertionError(f"port {host_port}: {exc!r}") from exc
    assert page.text == text


async def test_hibernate_frees_the_memory_and_resume_gives_everything_back(
    manager: Manager, track: Tracker
) -> None:
    """Hibernate ends QEMU and MemAvailable rises by about what it used; resume, under the
    same id, has the counting process, the files, RAM data and the same exposed host port."""
    sb = await track.create()
    await sb.write_file("/root/kept", b"on disk")
    await sb.start_background(["sh", "-c", COUNTER])
    await serve(sb, b"served")
    sums = await write_memory(sb, 0, 64)
    mapping = await manager.expose(sb.id, 8000)
    before = await counting(sb, 2)
    pid = sb.machine.pid
    assert pid is not None
    used = anon_bytes(pid)
    available = mem_available()

    info = await manager.hibernate(sb.id)
    assert info.state is SandboxState.HIBERNATED and info.snapshot_id is not None
    assert not process.alive(pid)
    assert not list(process.find_by_marker(str(manager.sandboxes_dir / sb.id)))
    with pytest.raises(SandboxNotRunning):
        manager.sandbox(sb.id)
    hibernation = await manager.get_snapshot(info.snapshot_id)
    assert hibernation.hibernation
    assert hibernation.id not in {s.id for s in await manager.list_snapshots(templates=True)}
    with pytest.raises(InvalidArgument):
        await manager.restore(hibernation.id)
    with pytest.raises(Conflict):
        await manager.delete_snapshot(hibernation.id)

    async def freed() -> None:  # other tests share the host: retry until it shows
        assert mem_available() - available >= used // 2, f"{used >> 20} MiB used"

    await eventually(freed, WAIT_S)

    woken = await manager.resume(sb.id)
    assert woken.id == sb.id and woken.state is SandboxState.RUNNING
    assert woken.ports == [mapping]
    back = manager.sandbox(sb.id)

    async def counted_on() -> None:  # the save may have caught it between truncate and write
        assert (await back.exec(["cat", "/dev/shm/count"])).stdout.strip().isdigit()

    await eventually(counted_on, WAIT_S)
    assert await count(back) >= before
    await counting(back, await count(back))
    assert await back.read_bytes("/root/kept") == b"on disk"
    assert (await back.exec(["md5sum", "/dev/shm/data-0"])).stdout == sums
    await eventually(lambda: serves(mapping.host_port, "served"), WAIT_S)

    # Hibernating again replaces the hibernation snapshot; deleting removes the last one.
    again = await manager.hibernate(sb.id)
    assert again.snapshot_id != hibernation.id
    assert manager.store.get_snapshot(hibernation.id) is None
    await manager.delete(sb.id)
    assert manager.store.get_snapshot(again.snapshot_id or "") is None
    assert not (manager.snapshots.dir / (again.snapshot_id or "-")).exists()


async def test_a_snapshot_of_a_woken_sandbox_outlives_its_hibernation(
    manager: Manager, track: Tracker
) -> None:
    """A snapshot taken after a resume restores after the sandbox (and so its hibernation
    snapshot) is gone."""
    sb = await track.create()
    await sb.write_file("/root/kept", b"twice")
    await manager.hibernate(sb.id)
    await manager.resume(sb.id)
    snap = await track.snapshot(manager.sandbox(sb.id))
    await manager.delete(sb.id)
    copy = await track.restore(snap)
    assert await copy.read_bytes("/root/kept") == b"twice"
