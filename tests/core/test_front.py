"""sietch-front, the guest agent's compiled hot path, in a real microVM.

The front serves some operations itself and forwards the rest to the Python agent,
so what it must get right on its own is the seam: both kinds on one connection,
its own processes in the shared process table, a host that goes away mid-stream,
and bad input. These speak the wire protocol directly (tests/agent/hostside.py)
over the sandbox's own channel, after the manager's connection let go of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from sietch.agent import protocol as P
from sietch.agent.protocol import Kind
from sietch.core.live import LiveSandbox
from tests.agent.hostside import HostConnection, eventually


@pytest.fixture
async def wire(shared: LiveSandbox) -> AsyncIterator[HostConnection]:
    """A raw connection to the shared sandbox's agent; the manager's own reconnects after."""
    await shared.agent.close()
    conn = await _connect(shared)
    yield conn
    await conn.close()


async def _connect(sandbox: LiveSandbox) -> HostConnection:
    reader, writer = await asyncio.open_unix_connection(str(sandbox.agent.socket_path))
    conn = HostConnection(reader, writer)
    await conn.sync(timeout=30, resend=0.5)
    return conn


async def test_hot_path_is_compiled(wire: HostConnection) -> None:
    """A foreground exec is started by sietch-front, a background one by the Python agent."""
    out = await wire.run(cmd="cat /proc/$PPID/comm")
    assert out.stdout == b"sietch-front\n"
    job = await wire.call("exec", cmd="cat /proc/$PPID/comm", background=True)
    logged = await wire.open("attach", pid=job["pid"]).outcome()
    assert logged.stdout == b"ld-linux-x86-64\n"  # Python, run through the tools' own loader


async def test_native_and_forwarded_ops_share_one_connection(wire: HostConnection) -> None:
    """exec and stat (the front's) and write/read/list (Python's) interleave on one connection."""
    cat = wire.open("exec", argv=["cat"], stdin=True)
    write = wire.open("write", path="/tmp/front/mixed.txt")
    await cat.write(b"through the front\n")
    await write.write(b"through python\n")
    write.eof()
    assert (await write.result())["size"] == 15
    listing = wire.open("list", path="/tmp/front")
    stat = wire.open("stat", path="/tmp/front/mixed.txt")
    cat.eof()
    out = await cat.outcome()
    assert (out.final["exit_code"], out.stdout) == (0, b"through the front\n")
    assert out.msgs[0]["type"] == "started"
    assert (await stat.result())["entry"]["size"] == 15
    assert [e["name"] for e in (await listing.result())["entries"]] == ["mixed.txt"]
    read = await wire.open("read", path="/tmp/front/mixed.txt").outcome()
    assert read.stdout == b"through python\n"


async def test_command_outlives_its_host_and_is_listed_with_pythons(
    shared: LiveSandbox, wire: HostConnection
) -> None:
    """A foreground exec whose host went away lives on, listed beside Python's background jobs,
    and attach replays what it wrote meanwhile and follows it to its end."""
    job = await wire.call("exec", cmd="sleep 300", background=True, tag="python-side")
    fg = wire.open("exec", cmd="echo before; read line; echo after $line", stdin=True)
    started = await fg.next()
    assert started[0] == "msg" and started[1]["type"] == "started"
    pid = started[1]["pid"]
    assert await fg.next() == ("data", P.CHANNEL_STDOUT, b"before\n")
    await wire.close()

    again = await _connect(shared)
    try:
        listed = {p["pid"]: p for p in (await again.call("processes"))["processes"]}
        assert listed[pid]["running"] and listed[pid]["background"]
        assert listed[pid]["cmd"] == "echo before; read line; echo after $line"
        assert listed[job["pid"]]["tag"] == "python-side"
        attached = again.open("attach", pid=pid)
        await attached.write(b"done\n")
        out = await attached.outcome()
        assert out.stdout == b"before\nafter done\n"
        assert (out.final["exit_code"], out.final["running"]) == (0, False)

        async def forgotten() -> None:
            listed = {p["pid"] for p in (await again.call("processes"))["processes"]}
            assert pid not in listed and job["pid"] in listed

        await eventually(forgotten)
        await again.call("signal", pid=job["pid"], signal="KILL")
        assert (await again.call("wait", pid=job["pid"]))["signal"] == 9
    finally:
        await again.close()


async def test_bad_input_fails_only_its_own_stream(wire: HostConnection) -> None:
    """A malformed MSG ends that exec's stream alone; its command is then signalled and
    waited for by pid; a malformed OPEN and an unknown op get their errors as before."""
    sleeper = wire.open("exec", argv=["sleep", "300"])
    started = await sleeper.next()
    pid = started[1]["pid"]
    wire.send(P.encode(Kind.MSG, sleeper.id, b"{not json"))
    out = await sleeper.outcome()
    assert out.final["code"] == "invalid_argument"
    bad_open = await wire.open_raw(b"[1, 2").outcome()
    assert bad_open.final["code"] == "invalid_argument"
    unknown = await wire.open("no-such-op").outcome()
    assert unknown.final["code"] == "invalid_argument"
    echo = await wire.run(argv=["echo", "still here"])
    assert echo.stdout == b"still here\n"
    bad_signal = await wire.open("signal", pid=pid, signal="NOPE").outcome()
    assert bad_signal.final["code"] == "invalid_argument"
    await wire.call("signal", pid=pid, signal="TERM")
    assert (await wire.call("wait", pid=pid, timeout=60))["signal"] == 15
    gone = await wire.open("signal", pid=pid, signal=9).outcome()
    assert gone.final["code"] == "no_such_process"


async def test_a_command_name_is_searched_like_exec_does(wire: HostConnection) -> None:
    """The front looks a name up in PATH without trying execve in entries that lack it, and
    still passes over a directory and a non-executable file of that name to the program."""
    setup = (
        "mkdir -p /tmp/path/a/tool /tmp/path/b /tmp/path/c && echo x > /tmp/path/b/tool"
        " && printf '#!/bin/sh\\necho c $(/bin/cat /proc/$PPID/comm)\\n' > /tmp/path/c/tool"
        " && chmod +x /tmp/path/c/tool"
    )
    assert (await wire.run(cmd=setup)).final["exit_code"] == 0
    path = "/tmp/path/missing:/tmp/path/a:/tmp/path/b:/tmp/path/c"
    out = await wire.run(argv=["tool"], env={"PATH": path})
    assert (out.final["exit_code"], out.stdout) == (0, b"c sietch-front\n")
    missing = await wire.run(argv=["no-such-tool"], env={"PATH": path})
    assert missing.final["code"] == "command_not_found"


# -- small files: the front's own reads and writes ---------------------------------------

HOLDER = (
    "for fd in /proc/[0-9]*/fd/*; do case $(readlink $fd) in *.sietch-*.tmp)"
    " p=${fd%/fd/*}; cat $p/comm;; esac; done"
)
"""Prints the name of the process that holds a write's temp file open."""


async def _put(wire: HostConnection, path: str, data: bytes, **args: object) -> dict[str, object]:
    s = wire.open("write", path=path, **args)
    await s.write(data)
    s.eof()
    return await s.result()


@pytest.mark.parametrize(
    ("hint", "server"), [(True, b"sietch-front\n"), (False, b"ld-linux-x86-64\n")]
)
async def test_a_write_the_host_says_is_small_is_the_fronts(
    wire: HostConnection, hint: bool, server: bytes
) -> None:
    """With its size declared (at most 512 KiB) the front writes the file, else Python does;
    either way it stays the old file until EOF and then replaces it whole."""
    path = f"/tmp/front/hinted-{hint}.txt"
    assert (await wire.run(cmd=f"mkdir -p /tmp/front && echo old > {path}")).final["exit_code"] == 0
    s = wire.open("write", path=path, **({"size": 10} if hint else {}))
    await s.write(b"new ")
    holder = await eventually(lambda: _holder(wire))
    assert holder == server
    assert (await wire.run(argv=["cat", path])).stdout == b"old\n"
    await s.write(b"file\n")
    s.eof()
    assert await s.result() == {"type": "result", "path": path, "size": 9}
    assert (await wire.run(argv=["cat", path])).stdout == b"new file\n"


async def _holder(wire: HostConnection) -> bytes:
    out = (await wire.run(cmd=HOLDER)).stdout
    assert out, "no temp file open yet"
    return out


@pytest.mark.parametrize("hint", [True, False])
async def test_a_written_file_gets_the_same_mode_and_owner_from_front_and_python(
    wire: HostConnection, hint: bool
) -> None:
    """A new file takes its directory's owner, an overwritten one keeps its mode and owner,
    an explicit mode is exact: as files.py does, whichever side writes."""
    home = f"/tmp/front/home-{hint}"
    setup = (
        f"mkdir -p {home} && chown 1000:1001 {home} && touch {home}/kept && chown 7:8 {home}/kept"
    )
    assert (await wire.run(cmd=f"{setup} && chmod 0604 {home}/kept")).final["exit_code"] == 0
    size = {"size": 3} if hint else {}
    await _put(wire, f"{home}/new", b"new", **size)
    await _put(wire, f"{home}/kept", b"new", **size)
    await _put(wire, f"{home}/exact", b"new", mode=0o750, **size)
    await _put(wire, f"{home}/setuid", b"new", mode=0o4755, **size)  # kept through the chown
    out = await wire.run(cmd=f"cd {home} && stat -c '%n %a %u:%g %s' new kept exact setuid")
    assert out.stdout.decode().splitlines() == [
        "new 644 1000:1001 3",
        "kept 604 7:8 3",
        "exact 750 1000:1001 3",
        "setuid 4755 1000:1001 3",
    ]


async def test_a_native_write_closed_early_or_cut_off_leaves_nothing(shared: LiveSandbox) -> None:
    """The stream closed before EOF, or the host's connection gone mid-write: no temp file
    stays behind, and the old file is untouched."""
    await shared.agent.close()
    wire = await _connect(shared)
    try:
        made = await wire.run(cmd="mkdir -p /tmp/front/cut && echo old > /tmp/front/cut/f")
        assert made.final["exit_code"] == 0
        closed = wire.open("write", path="/tmp/front/cut/f", size=100)
        await closed.write(b"part")
        assert await eventually(lambda: _holder(wire)) == b"sietch-front\n"
        closed.close()
        cut = wire.open("write", path="/tmp/front/cut/g", size=100)
        await cut.write(b"part")
        await eventually(lambda: _holder(wire))
    finally:
        await wire.close()
    again = await _connect(shared)
    try:
        listing = await again.run(cmd="ls -A /tmp/front/cut && cat /tmp/front/cut/f")
        assert listing.stdout == b"f\nold\n"
    finally:
        await again.close()


async def test_reads_from_front_and_python_agree(wire: HostConnection) -> None:
    """A small file is the front's to read (a symlink to it and a big file Python's): the
    stat message, the bytes, offsets and lengths are the same either way."""
    data = bytes(range(256)) * 3000  # 750 KiB: more than the front reads itself
    assert (await _put(wire, "/tmp/front/big", data))["size"] == len(data)
    make = "cd /tmp/front && head -c 1000 big > small && ln -sf small link && ln -sf big biglink"
    assert (await wire.run(cmd=make)).final["exit_code"] == 0
    for args in ({}, {"offset": 10, "length": 5}, {"offset": 990, "length": 100}, {"offset": 5000}):
        front = await wire.open("read", path="/tmp/front/small", **args).outcome()
        python = await wire.open("read", path="/tmp/front/link", **args).outcome()
        assert (front.msgs, front.final, front.stdout) == (python.msgs, python.final, python.stdout)
        start = args.get("offset", 0)
        end = min(1000, start + args.get("length", 1000))
        assert front.stdout == data[start:end]
    big = await wire.open("read", path="/tmp/front/big", offset=1).outcome()
    assert big.stdout == data[1:] and big.final == {"type": "result", "size": len(data) - 1}


async def test_small_files_are_served_while_pythons_threads_are_stuck(
    wire: HostConnection,
) -> None:
    """With every worker thread of the Python agent held (appends to FIFOs wait for a writer)
    a small write and read still complete: the front does them alone."""
    fifos = [f"/tmp/front/fifo{i}" for i in range(40)]  # more than Python's threads
    made = await wire.run(cmd=f"mkdir -p /tmp/front && mkfifo {' '.join(fifos)}")
    assert made.final["exit_code"] == 0
    stuck = [wire.open("write", path=fifo, append=True) for fifo in fifos]
    try:
        written = await _put(wire, "/tmp/front/while-stuck", b"still served", size=12)
        assert written["size"] == 12
        read = await wire.open("read", path="/tmp/front/while-stuck").outcome(timeout=20)
        assert read.stdout == b"still served"
    finally:
        # Each append fails once a writer opens its FIFO (sendfile cannot read a pipe).
        writers = (
            f'for f in {" ".join(fifos)}; do (timeout 60 sh -c ": > $f" >/dev/null 2>&1 &); done'
        )
        assert (await wire.run(cmd=writers)).final["exit_code"] == 0
        for s in stuck:
            assert (await s.outcome()).final["type"] == "error"
        await wire.run(cmd=f"rm -f {' '.join(fifos)}")
