"""SYNC handshake, reconnects, the stream mux and its flow control."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from sietch.agent import protocol as P
from sietch.agent.protocol import Kind

from .conftest import AgentUnderTest
from .hostside import HostConnection, eventually


async def test_sync_after_junk_and_torn_frame(agent_proc: AgentUnderTest) -> None:
    """Junk and half a frame before SYNC are skipped; the echo carries our nonce."""
    torn = P.HEADER.pack(Kind.OPEN, 7, 500) + b'{"op": "hel'
    host = await agent_proc.connect(junk=b"\x00garbage\xff" * 100 + torn)
    hello = await host.call("hello")
    assert hello["protocol"] == P.PROTOCOL_VERSION


async def test_hello_reports_identity(host: HostConnection) -> None:
    """hello answers version, pid, boot id, uptime and kernel, and leaves the host's clock alone."""
    before = time.time()
    hello = await host.call("hello", time=before - 3600, hostname="ignored-here", entropy="AAEC")
    assert hello["agent_version"]
    assert hello["pid"] > 1
    assert hello["kernel"] == os.uname().release
    assert hello["hostname"] == os.uname().nodename
    assert len(hello["boot_id"]) == 36
    assert hello["uptime_s"] > 0
    assert hello["init"] is False and hello["clock_set"] is False
    assert abs(time.time() - before) < 60


async def test_hello_rejects_bad_entropy(host: HostConnection) -> None:
    """Arguments are validated even where they would not be applied."""
    out = await host.open("hello", entropy="not base64!").outcome()
    assert out.final["code"] == "invalid_argument"


async def test_second_sync_keeps_processes(agent_proc: AgentUnderTest) -> None:
    """A new SYNC drops every stream of the old connection but no process."""
    host = await agent_proc.connect()
    bg = await host.call("exec", argv=["sleep", "30"], background=True)
    fg = host.open("exec", cmd="echo early; sleep 30")
    started = await fg.next()
    assert started[1]["type"] == "started"
    assert (await fg.next())[2] == b"early\n"
    await host.sync()  # same socket, new connection
    listed = {p["pid"]: p for p in (await host.call("processes"))["processes"]}
    fg_pid = started[1]["pid"]
    assert listed[bg["pid"]]["running"] and listed[fg_pid]["running"]
    assert listed[fg_pid]["background"] is True, "an orphaned foreground exec is kept"
    # Its output was buffered and can be attached to.
    att = host.open("attach", pid=fg_pid, follow=False)
    out = await att.outcome()
    assert out.stdout == b"early\n" and out.final["running"] is True
    for pid in (bg["pid"], fg_pid):
        await host.call("signal", pid=pid, signal="KILL")
        assert (await host.call("wait", pid=pid))["signal"] == 9


async def test_repeated_sync_keeps_the_connection(host: HostConnection) -> None:
    """A re-sent SYNC (same nonce) is answered again without dropping open streams."""
    s = host.open("exec", cmd="echo a; read x; echo b", stdin=True)
    assert (await s.next())[1]["type"] == "started"
    assert (await s.next())[2] == b"a\n"
    host.send(P.encode_sync(host.nonce))
    await s.write(b"go\n")
    out = await s.outcome()
    assert out.stdout == b"b\n" and out.final["exit_code"] == 0
    assert [f.payload[-8:] for f in host.stray if f.kind is Kind.SYNC] == [host.nonce]


async def test_reconnect_after_host_goes_away(agent_proc: AgentUnderTest) -> None:
    """When the socket closes the agent reconnects; processes and their output survive."""
    host = await agent_proc.connect()
    bg = await host.call("exec", cmd="echo before; sleep 30", background=True)
    await host.close()
    host2 = await agent_proc.connect()
    procs = (await host2.call("processes"))["processes"]
    assert [p["running"] for p in procs if p["pid"] == bg["pid"]] == [True]
    out = await host2.open("attach", pid=bg["pid"], follow=False).outcome()
    assert out.stdout == b"before\n"
    await host2.call("signal", pid=bg["pid"], signal=9)


@pytest.mark.parametrize("resend", [None, 0.1])
async def test_torn_frame_inside_a_connection_recovers(
    agent_proc: AgentUnderTest, resend: float | None
) -> None:
    """Half a frame left by a vanished host swallows the next SYNC only briefly,
    even while the host keeps re-sending it (so bytes never stop arriving)."""
    host = await agent_proc.connect()
    host.send(P.HEADER.pack(Kind.OPEN, 9, 4000) + b'{"op": "exec", "cmd": "')
    await host.drain()
    await host.sync(timeout=15, resend=resend)  # absorbed by the torn frame at first
    assert (await host.call("hello"))["protocol"] == P.PROTOCOL_VERSION
    assert "presumed torn" in agent_proc.log_text()


async def test_malformed_open_fails_only_that_stream(host: HostConnection) -> None:
    """Bad JSON in OPEN gets an error on its own stream; other streams carry on."""
    slow = host.open("exec", cmd="sleep 0.5; echo done")
    out = await host.open_raw(b"{not json").outcome()
    assert out.final["type"] == "error" and out.final["code"] == "invalid_argument"
    assert "malformed" in out.final["message"]
    ok = await slow.outcome()
    assert ok.stdout == b"done\n"


async def test_unknown_op(host: HostConnection) -> None:
    """An op the agent does not know is an invalid_argument error naming it."""
    out = await host.open("frobnicate").outcome()
    assert out.final["code"] == "invalid_argument" and "frobnicate" in out.final["message"]


async def test_fifty_concurrent_execs(host: HostConnection) -> None:
    """50 streams at once each get their own output and exit code."""
    streams = [host.open("exec", cmd=f"sleep 0.2; echo n{i}; exit {i % 7}") for i in range(50)]
    outs = await asyncio.gather(*(s.outcome() for s in streams))
    for i, out in enumerate(outs):
        assert out.stdout == f"n{i}\n".encode()
        assert out.final["exit_code"] == i % 7


async def test_stalled_stream_blocks_no_other(host: HostConnection, tmp_path: Path) -> None:
    """A stream out of credit stops at exactly its window while others keep flowing."""
    big = tmp_path / "big"
    big.write_bytes(os.urandom(3 << 20))
    stalled = host.open("read", auto_window=False, path=str(big))
    got = 0
    while got < P.INITIAL_WINDOW:
        event = await stalled.next()
        if event[0] == "data":
            got += len(event[2])
    for _ in range(5):
        out = await host.run(argv=["echo", "meanwhile"], deadline=10)
        assert out.stdout == b"meanwhile\n"
    await asyncio.sleep(0.2)
    assert stalled.received == P.INITIAL_WINDOW, "no byte beyond the granted window"
    stalled.auto_window = True
    stalled.grant(stalled.received)
    rest = await stalled.outcome()
    assert got + len(rest.stdout) == 3 << 20


async def test_host_close_abandons_stream(host: HostConnection) -> None:
    """CLOSE from the host ends the guest's side; the process lives on, listed."""
    s = host.open("exec", cmd="echo hi; sleep 30")
    pid = (await s.next())[1]["pid"]
    s.close()

    async def orphaned() -> None:
        procs = {p["pid"]: p for p in (await host.call("processes"))["processes"]}
        assert procs[pid]["running"] and procs[pid]["background"]

    await eventually(orphaned)
    await host.call("signal", pid=pid, signal="SIGKILL")
    assert (await host.call("wait", pid=pid, timeout=5))["signal"] == 9


async def test_shutdown_outside_pid1_exits_cleanly(agent_proc: AgentUnderTest) -> None:
    """shutdown answers first, then (not being PID 1) the agent exits with status 0."""
    host = await agent_proc.connect()
    assert (await host.call("shutdown"))["type"] == "result"
    assert agent_proc.proc is not None
    assert await asyncio.wait_for(agent_proc.proc.wait(), 10) == 0


async def test_resize_fs_refused_outside_the_vm(host: HostConnection) -> None:
    """resize_fs never touches a development host's disks."""
    out = await host.open("resize_fs").outcome()
    assert out.final["code"] == "permission_denied"
