"""The agent as a real PID 1, inside its own pid/mount/UTS/net namespaces.

Nothing here may reach the host: no ``time`` or ``entropy`` in hello (the
clock and the entropy pool are not namespaced) and no resize_fs.
"""

from __future__ import annotations

import asyncio
import os
import signal

from .conftest import AgentUnderTest, children
from .hostside import HostConnection, eventually


async def _ready(agent: AgentUnderTest) -> HostConnection:
    host = await agent.connect()

    async def set_up() -> None:  # exec waits for PID-1 setup; hello does not
        out = await host.run(argv=["true"], deadline=20)
        assert out.final["exit_code"] == 0

    await eventually(set_up, timeout=30)
    return host


async def test_pid1_hello_sets_hostname(pid1_agent: AgentUnderTest) -> None:
    """As PID 1, hello reports init mode and sets the (namespaced) hostname."""
    host = await pid1_agent.connect()
    hello = await host.call("hello", hostname="sbx-test")
    assert (hello["pid"], hello["init"], hello["hostname"]) == (1, True, "sbx-test")
    out = await host.run(argv=["hostname"])
    assert out.stdout == b"sbx-test\n"
    assert os.uname().nodename != "sbx-test"
    # ... and names it in /etc/hosts (the namespace's private copy), once.
    out = await host.run(argv=["grep", "-c", "^127.0.1.1", "/etc/hosts"])
    assert out.stdout == b"1\n"
    out = await host.run(argv=["grep", "^127.0.1.1", "/etc/hosts"])
    assert out.stdout.split() == [b"127.0.1.1", b"sbx-test"]
    with open("/etc/hosts") as f:
        assert "sbx-test" not in f.read()


async def test_pid1_mounts_pts_shm_and_brings_up_lo(pid1_agent: AgentUnderTest) -> None:
    """Setup mounts devpts (ptmxmode=0666) and /dev/shm, and brings lo up with busybox ip."""
    host = await _ready(pid1_agent)
    mounts = (await host.run(argv=["cat", "/proc/mounts"])).stdout.decode().splitlines()
    pts = [m for m in mounts if m.split()[1] == "/dev/pts"]
    shm = [m for m in mounts if m.split()[1] == "/dev/shm"]
    assert pts and pts[-1].split()[2] == "devpts" and "ptmxmode=666" in pts[-1]
    assert shm and shm[-1].split()[2] == "tmpfs"
    out = await host.run(argv=["/run/sietch/bin/busybox", "ip", "link", "show", "lo"])
    assert b"UP" in out.stdout.split(b">")[0]
    out = await host.run(cmd="tty", pty=True)
    assert out.stdout.startswith(b"/dev/pts/")


async def test_pid1_ignores_sigterm_and_reaps_orphans(pid1_agent: AgentUnderTest) -> None:
    """PID 1 shrugs off SIGTERM, and orphans reparented to it do not stay zombies."""
    host = await _ready(pid1_agent)
    agent_pid = next(
        int(p) for p in children(pid1_agent.proc.pid if pid1_agent.proc else 0)
    )  # unshare's child is the namespace's PID 1
    os.kill(agent_pid, signal.SIGTERM)
    os.kill(agent_pid, signal.SIGINT)
    out = await host.run(cmd="sleep 0.3 & sleep 0.3 & echo started")
    assert out.stdout == b"started\n"
    assert len(children(agent_pid)) == 2

    async def reaped() -> None:
        assert children(agent_pid) == []

    await eventually(reaped)
    assert "ignoring SIGTERM as PID 1" in pid1_agent.log_text()


async def test_pid1_children_get_default_signals(pid1_agent: AgentUnderTest) -> None:
    """What PID 1 ignores, its commands do not: SIGTERM still ends them."""
    host = await _ready(pid1_agent)
    pid = (await host.call("exec", argv=["sleep", "30"], background=True))["pid"]
    await host.call("signal", pid=pid, signal="TERM")
    assert (await host.call("wait", pid=pid, timeout=5))["signal"] == signal.SIGTERM


async def test_pid1_shutdown_powers_off(pid1_agent: AgentUnderTest) -> None:
    """shutdown replies, then reboot(RB_POWER_OFF) ends the namespace (the VM, in a VM)."""
    host = await _ready(pid1_agent)
    assert (await host.call("shutdown"))["type"] == "result"
    assert pid1_agent.proc is not None
    status = await asyncio.wait_for(pid1_agent.proc.wait(), 10)
    # The kernel reports a pid namespace's power off as its init dying of SIGINT.
    assert status in (-signal.SIGINT, 128 + signal.SIGINT), status
