"""Per-sandbox cgroup limits and the host memory reserve, with real VMs on this host's v1.

Skipped where Sietch can't make cgroups (not root): the server info says so then.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from sietch.config import MiB
from sietch.core.live import LiveSandbox
from sietch.core.manager import Manager
from sietch.errors import Unavailable
from sietch.vmm import process
from sietch.vmm.cgroups import Cgroup
from tests.agent.hostside import eventually
from tests.conftest import SandboxFactory


def cgroup_of(sandbox: LiveSandbox) -> Cgroup:
    if sandbox.cgroup is None:
        pytest.skip("no per-sandbox cgroups on this host (needs root and cgroup controllers)")
    return sandbox.cgroup


def read(path: Path) -> str:
    return path.read_text().strip()


def in_cgroup(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cgroup").read_text().splitlines()


async def test_limits_are_in_the_cgroup_files_and_hold_qemu_and_its_uplink(
    manager: Manager, sandboxes: SandboxFactory
) -> None:
    """A sandbox's QEMU and slirp4netns run in its own cgroup, whose files hold the limits
    derived from its size and the settings; deleting it removes the cgroup."""
    sb = await sandboxes(vcpus=1, memory_mib=256)
    cgroup = cgroup_of(sb)
    s = manager.settings
    assert sb.machine.pid in cgroup.pids()
    if sb.network is not None and sb.network.uplink is not None:
        assert sb.network.uplink.proc.pid in cgroup.pids()
    if cgroup.version == 1:
        memory, cpu, pids = (cgroup.dirs[c] for c in ("memory", "cpu", "pids"))
        limit = int(read(memory / "memory.limit_in_bytes"))
        assert limit == (256 + manager.memory_overhead_mib()) * MiB
        assert read(cpu / "cpu.cfs_quota_us") == str(int(s.cgroup_cpus_per_vcpu * 100_000))
        assert read(pids / "pids.max") == str(s.cgroup_pids_max)
    else:
        assert read(cgroup.dirs["memory"] / "memory.max") == str(
            (256 + manager.memory_overhead_mib()) * MiB
        )
    # The process itself says where it runs: under the Sietch group, named by the sandbox.
    assert any(line.endswith(f"/sietch/{sb.id}") for line in in_cgroup(sb.machine.pid))
    await manager.delete(sb.id)
    assert not any(path.exists() for path in cgroup.paths)


async def test_a_guest_writing_all_its_ram_stays_under_the_limit_and_alive(
    sandboxes: SandboxFactory,
) -> None:
    """A guest that fills its RAM (until its own OOM killer stops the writer) leaves QEMU
    alive, below its cgroup's memory limit, and the sandbox still answers."""
    sb = await sandboxes(memory_mib=256)
    cgroup = cgroup_of(sb)
    fill = "python3 -c \"chunks = []\nwhile True: chunks.append(b'\\x01' * (8 << 20))\""
    result = await sb.exec(fill, timeout=600)
    assert result.exit_code != 0  # MemoryError or the guest's OOM killer: RAM was full
    usage = cgroup.usage()
    limit = sb.limits.memory_bytes if sb.limits is not None else 0
    assert usage.memory_peak_bytes is not None and usage.memory_peak_bytes <= limit
    assert usage.memory_peak_bytes > 200 * MiB  # the guest's writes were charged here
    assert usage.oom_kills in (0, None)
    assert sb.machine.running
    assert (await sb.exec("echo alive")).stdout == b"alive\n"


async def test_the_pids_limit_holds_for_the_sandbox_host_processes(
    sandboxes: SandboxFactory,
) -> None:
    """Host processes in a sandbox's cgroup can't fork beyond its pids limit."""
    sb = await sandboxes()
    cgroup = cgroup_of(sb)
    pids_dir = cgroup.dirs["pids"]
    limit = int(read(pids_dir / "pids.current")) + 20
    (pids_dir / "pids.max").write_text(str(limit))
    # A fork bomb of sleeps, started the way Sietch starts QEMU: joining the cgroup first.
    bomb = "i=0; while [ $i -lt 200 ]; do sleep 60 & i=$((i+1)); done; wait"
    proc = await asyncio.create_subprocess_exec(
        *cgroup.prefix(), "/bin/sh", "-c", bomb,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:

        async def refused() -> None:
            events = dict(line.split() for line in read(pids_dir / "pids.events").splitlines())
            assert int(events["max"]) > 0

        await eventually(refused, timeout=60)
        assert int(read(pids_dir / "pids.current")) <= limit
        assert sb.machine.running
    finally:
        os.killpg(proc.pid, 9)  # the sleeps are in its process group
        await proc.wait()


async def test_a_create_below_the_memory_reserve_is_refused_and_leaves_nothing(
    manager: Manager, sandboxes: SandboxFactory
) -> None:
    """With a reserve above what the host has, a create and a restore answer Unavailable
    (503) naming the setting, and no VM, work dir or record is made."""
    base = await sandboxes()
    snap = await manager.snapshot(base.id)
    before_dirs = set(manager.sandboxes_dir.iterdir())
    before_records = {i.id for i in manager.store.all()}
    before_vms = {pid for pid, _ in process.find_by_marker(str(manager.sandboxes_dir))}
    guard = manager.memory_guard
    reserve = guard.reserve
    guard.reserve = guard.available() + 1024 * MiB
    try:
        with pytest.raises(Unavailable, match="SIETCH_MEMORY_RESERVE_MIB"):
            await manager.create()
        with pytest.raises(Unavailable):
            await manager.restore(snap.id)
    finally:
        guard.reserve = reserve
    assert set(manager.sandboxes_dir.iterdir()) == before_dirs
    assert {i.id for i in manager.store.all()} == before_records
    after_vms = {pid for pid, _ in process.find_by_marker(str(manager.sandboxes_dir))}
    assert after_vms <= before_vms
    await manager.delete_snapshot(snap.id)
