"""The cgroup backends' file writing and discovery, against temp dirs (no kernel needed).

The real v1 hierarchy of these machines is exercised with real VMs in
tests/core/test_limits.py; v2 can't be mounted here, so its logic is checked
against a directory laid out like one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sietch.config import MiB
from sietch.core.hostmem import FIRST_GUESS, MemoryGuard, expected_use, mem_available
from sietch.errors import Unavailable
from sietch.vmm import cgroups
from sietch.vmm.cgroups import Limits

LIMITS = Limits(memory_bytes=896 * MiB, cpus=2.0, cpu_weight=50, pids_max=256, io_weight=200)

MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / {root}/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / {root}/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / {root}/memory rw,relatime - cgroup cgroup rw,memory
38 31 0:35 / {root}/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / {root}/unified rw,relatime - cgroup2 cgroup2 rw
"""
PROC_CGROUP_V1 = "8:pids:/\n4:memory:/outer/job\n2:cpuacct:/\n1:cpu:/\n0::/\n"


def v2_root(tmp_path: Path, own: str) -> Path:
    """A directory shaped like a v2 hierarchy, with Sietch's own process in ``own``."""
    root = tmp_path / "v2"
    (root / own).mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids\n")
    (root / own / "cgroup.procs").write_text("4242\n")
    return root


def test_v2_group_delegates_controllers_and_moves_sietch_to_a_leaf(tmp_path: Path) -> None:
    """v2: the Sietch group sits under Sietch's own cgroup, which hands it the controllers
    after Sietch itself moved into a leaf (only leaves hold processes)."""
    root = v2_root(tmp_path, "system.slice/sietch.service")
    own = root / "system.slice/sietch.service"
    hierarchy = cgroups.setup_v2(root, "0::/system.slice/sietch.service\n")
    assert (own / "server" / "cgroup.procs").read_text() == "4242"
    assert (own / "cgroup.subtree_control").read_text() == "+memory +cpu +pids +io"
    assert (own / "sietch" / "cgroup.subtree_control").read_text() == "+memory +cpu +pids +io"
    assert set(hierarchy.groups.values()) == {own / "sietch"}


def test_v2_sandbox_limits_are_written_in_v2_syntax(tmp_path: Path) -> None:
    """v2: memory.max in bytes, cpu.max as quota and period, weights, pids.max."""
    root = v2_root(tmp_path, "")
    cgroup = cgroups.setup_v2(root, "0::/\n").cgroup("sb-1")
    (root / "sietch" / "sb-1").mkdir()
    (root / "sietch" / "sb-1" / "io.weight").write_text("default 100\n")
    cgroup.create(LIMITS)
    path = root / "sietch" / "sb-1"
    assert (path / "memory.max").read_text() == str(896 * MiB)
    assert (path / "cpu.max").read_text() == "200000 100000"
    assert (path / "cpu.weight").read_text() == "50"
    assert (path / "pids.max").read_text() == "256"
    assert (path / "io.weight").read_text() == "default 200"
    assert cgroup.procs_files() == [path / "cgroup.procs"]


def test_v2_usage_is_read_from_v2_files(tmp_path: Path) -> None:
    """v2: usage comes from memory.current/peak, cpu.stat's usage_usec, memory.events."""
    path = tmp_path / "sb"
    path.mkdir()
    for name, text in {
        "memory.current": "1048576", "memory.peak": "2097152", "pids.current": "9",
        "cpu.stat": "usage_usec 2500000\nuser_usec 2000000\n", "memory.events": "oom_kill 1\n",
    }.items():  # fmt: skip
        (path / name).write_text(text)
    usage = cgroups.CgroupV2({"memory": path, "cpu": path, "pids": path}).usage()
    assert usage == cgroups.Usage(MiB, 2 * MiB, 2.5, 9, 1)


def test_unlimited_cpu_is_written_as_no_quota(tmp_path: Path) -> None:
    """No CPU cap is ``max`` on v2 and -1 on v1, not a zero quota."""
    path = tmp_path / "sb"
    path.mkdir()
    unlimited = Limits(memory_bytes=MiB, cpus=None, cpu_weight=None, pids_max=64, io_weight=None)
    cgroups.CgroupV2({"memory": path}).apply(unlimited)
    assert (path / "cpu.max").read_text() == "max 100000"
    cgroups.CgroupV1({"memory": path, "cpu": path, "pids": path}).apply(unlimited)
    assert (path / "cpu.cfs_quota_us").read_text() == "-1"


def test_v1_groups_are_found_under_our_own_cgroup_per_controller(tmp_path: Path) -> None:
    """v1: one Sietch group per mounted controller, under the cgroup this process is in."""
    for ctrl in ("cpu", "cpuacct", "memory/outer/job", "pids"):
        (tmp_path / ctrl).mkdir(parents=True)
    hierarchy = cgroups.setup_v1(MOUNTINFO.format(root=tmp_path), PROC_CGROUP_V1)
    assert hierarchy.groups == {
        "cpu": tmp_path / "cpu" / "sietch",
        "cpuacct": tmp_path / "cpuacct" / "sietch",
        "memory": tmp_path / "memory/outer/job/sietch",
        "pids": tmp_path / "pids" / "sietch",
    }
    cgroup = hierarchy.cgroup("sb-2")
    cgroup.create(LIMITS)
    assert (tmp_path / "memory/outer/job/sietch/sb-2/memory.limit_in_bytes").read_text() == str(
        896 * MiB
    )
    assert (tmp_path / "cpu/sietch/sb-2/cpu.cfs_quota_us").read_text() == "200000"
    assert (tmp_path / "cpu/sietch/sb-2/cpu.shares").read_text() == "512"


def test_v1_without_required_controllers_is_refused(tmp_path: Path) -> None:
    """A v1 host without the memory controller has no per-sandbox limits, and says why."""
    mountinfo = "\n".join(
        line for line in MOUNTINFO.format(root=tmp_path).splitlines() if "memory" not in line
    )
    with pytest.raises(OSError, match="memory"):
        cgroups.setup_v1(mountinfo, PROC_CGROUP_V1)


def test_detect_off_says_so() -> None:
    """SIETCH_CGROUPS=off gives no hierarchy and a sentence naming the setting."""
    hierarchy, why = cgroups.detect("off")
    assert hierarchy is None and "SIETCH_CGROUPS" in why


def test_memory_guard_refuses_below_the_reserve_only() -> None:
    """The reserve check counts what sandboxes use (median PSS), and says which setting."""
    assert expected_use([]) == FIRST_GUESS
    assert expected_use([10, 30, 20]) == 20
    guard = MemoryGuard(1024 * MiB, used=list, available=lambda: 1050 * MiB)
    with pytest.raises(Unavailable, match="SIETCH_MEMORY_RESERVE_MIB"):
        guard.check()
    MemoryGuard(1024 * MiB, used=list, available=lambda: 2048 * MiB).check()
    MemoryGuard(0, used=list, available=lambda: 0).check()
    big = MemoryGuard(1024 * MiB, used=lambda: [900 * MiB, None], available=lambda: 1800 * MiB)
    with pytest.raises(Unavailable):
        big.check()  # 1800 - 900 < 1024: what running ones use counts, not a fixed guess
    assert mem_available("MemTotal: 10 kB\nMemAvailable:    2048 kB\n") == 2048 * 1024
