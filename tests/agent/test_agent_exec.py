"""exec and the process operations, against real processes."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from sietch.agent import protocol as P

from .conftest import children
from .hostside import HostConnection, eventually


async def test_exec_argv_and_cmd(host: HostConnection) -> None:
    """argv runs without a shell, cmd through /bin/sh -c; started comes first."""
    out = await host.run(argv=["printf", "%s|", "a b", "$HOME"])
    assert out.msgs[0]["type"] == "started" and out.msgs[0]["pid"] > 0
    assert out.stdout == b"a b|$HOME|"
    out = await host.run(cmd="echo $((6*7))")
    assert out.stdout == b"42\n"


@pytest.mark.parametrize("code", [0, 1, 137])
async def test_exit_codes(host: HostConnection, code: int) -> None:
    """The exit code is reported as is, with no signal."""
    out = await host.run(cmd=f"exit {code}")
    assert out.final == {"type": "result", "exit_code": code, "signal": None, "timed_out": False}


async def test_killed_by_signal(host: HostConnection) -> None:
    """A command killed by a signal reports the signal and no exit code."""
    out = await host.run(cmd="kill -9 $$")
    assert out.final["exit_code"] is None and out.final["signal"] == 9


async def test_stdout_and_stderr_are_separate(host: HostConnection) -> None:
    """stdout arrives on channel 1, stderr on channel 2."""
    out = await host.run(cmd="echo out; echo err >&2; echo out2")
    assert out.stdout == b"out\nout2\n" and out.stderr == b"err\n"


async def test_ten_mib_of_output_arrives_complete(host: HostConnection) -> None:
    """10 MiB streamed through a 1 MiB window arrives byte for byte."""
    size = 10 << 20
    out = await host.run(cmd=f"head -c {size} /dev/urandom | tee /dev/stderr | sha256sum")
    assert len(out.stderr) == size
    assert out.stdout.split()[0].decode() == hashlib.sha256(out.stderr).hexdigest()
    assert out.final["exit_code"] == 0


async def test_output_backpressure_blocks_the_command(host: HostConnection) -> None:
    """Without credit the agent stops reading: the command blocks, nothing piles up."""
    s = host.open("exec", auto_window=False, cmd="head -c 8000000 /dev/zero; echo done >&2")
    pid = (await s.next())[1]["pid"]
    got = 0
    while got < P.INITIAL_WINDOW:
        got += len((await s.next())[2])
    await asyncio.sleep(0.5)
    assert s.received == P.INITIAL_WINDOW
    with open(f"/proc/{pid}/stat") as f:  # the shell waits on head, which sleeps in write()
        assert f.read().rsplit(")", 1)[1].split()[0] == "S"
    s.auto_window = True
    s.grant(got)
    out = await s.outcome()
    assert got + len(out.stdout) == 8000000 and out.stderr == b"done\n"


async def test_stdin_round_trip(host: HostConnection) -> None:
    """Bytes sent on channel 0 reach the command; EOF closes its stdin."""
    data = os.urandom(3 << 20)  # more than one window: stdin is flow-controlled too
    s = host.open("exec", argv=["cat"], stdin=True)

    async def feed() -> None:
        # Concurrently with reading: cat's output is flow-controlled as well.
        await s.write(data)
        s.eof()

    out, _ = await asyncio.gather(s.outcome(), feed())
    assert out.stdout == data and out.final["exit_code"] == 0


async def test_stdin_defaults_to_dev_null(host: HostConnection) -> None:
    """Without stdin=true a command reading stdin sees end of file at once."""
    out = await host.run(argv=["cat"], deadline=10)
    assert out.stdout == b"" and out.final["exit_code"] == 0


async def test_timeout_kills_the_process_group(host: HostConnection) -> None:
    """On timeout the whole group is SIGKILLed and the result says so."""
    # Only the group's kill can end this before the run's deadline.
    out = await host.run(cmd="sleep 3600 & sleep 3600; echo never", timeout=0.5, deadline=60)
    assert out.final == {"type": "result", "exit_code": None, "signal": 9, "timed_out": True}


async def test_signal_message_on_the_stream(host: HostConnection) -> None:
    """A signal MSG on an exec stream signals that command."""
    s = host.open("exec", argv=["sleep", "30"])
    await s.next()
    s.msg({"type": "signal", "signal": "TERM"})
    assert (await s.outcome()).final["signal"] == 15


async def test_command_not_found_and_bad_cwd(host: HostConnection, tmp_path: Path) -> None:
    """A missing command and a missing cwd are errors before start, naming the culprit."""
    out = await host.run(argv=["no-such-command-xyz"])
    assert (
        out.final["code"] == "command_not_found" and "no-such-command-xyz" in out.final["message"]
    )
    out = await host.run(argv=["true"], cwd=str(tmp_path / "missing"))
    assert out.final["code"] == "not_found" and "missing" in out.final["message"]
    out = await host.run(argv=["true"], cmd="true")
    assert out.final["code"] == "invalid_argument"


async def test_a_command_name_is_searched_like_exec_does(
    host: HostConnection, tmp_path: Path
) -> None:
    """A name is found in PATH past entries without it, a directory of that name and a
    non-executable file of that name; one in no entry is not found."""
    (tmp_path / "a" / "tool").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "tool").write_text("x\n")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "tool").write_text("#!/bin/sh\necho c\n")
    (tmp_path / "c" / "tool").chmod(0o755)
    path = ":".join(str(tmp_path / d) for d in ("missing", "a", "b", "c"))
    out = await host.run(argv=["tool"], env={"PATH": path})
    assert (out.final["exit_code"], out.stdout) == (0, b"c\n")
    out = await host.run(argv=["tool"], env={"PATH": f"{tmp_path / 'c'}:{tmp_path / 'b'}"})
    assert out.stdout == b"c\n"
    missing = await host.run(argv=["no-such-tool"], env={"PATH": path})
    assert missing.final["code"] == "command_not_found"


async def test_clean_environment(host: HostConnection, tmp_path: Path) -> None:
    """Children get a fixed environment plus env, never the agent's own PYTHONPATH."""
    out = await host.run(argv=["env"], env={"FOO": "bar"}, cwd=str(tmp_path))
    env = dict(line.split("=", 1) for line in out.stdout.decode().splitlines())
    assert env["FOO"] == "bar" and env["LANG"] == "C.UTF-8"
    assert env["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert env["USER"] == "root" and env["HOME"] == "/root"
    assert "PYTHONPATH" not in env and "TERM" not in env
    out = await host.run(argv=["pwd"], cwd=str(tmp_path))
    assert out.stdout.decode().strip() == str(tmp_path)


async def test_runs_in_its_own_session(host: HostConnection) -> None:
    """Each command leads its own session (so signals reach its whole group)."""
    out = await host.run(cmd="cat /proc/$$/stat")
    fields = out.stdout.decode().rsplit(")", 1)[1].split()
    pid = out.msgs[0]["pid"]
    assert int(fields[2]) == pid and int(fields[3]) == pid  # pgrp, session


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
async def test_user_switch(host: HostConnection) -> None:
    """user= runs the command with that passwd entry's ids and environment."""
    out = await host.run(cmd="id -u; id -g; echo $USER", user="nobody")
    uid, gid, name = out.stdout.decode().split()
    assert (uid, gid, name) == ("65534", "65534", "nobody")
    out = await host.run(argv=["true"], user="no-such-user-xyz")
    assert out.final["code"] == "invalid_argument"


async def test_pty_size_and_resize(host: HostConnection) -> None:
    """A pty command sees its size, a resize message changes it, and it has a controlling tty."""
    s = host.open(
        "exec",
        cmd="stty size; tty >/dev/null && echo tty-ok; [ -t 0 ] && echo t0; read x; stty size",
        pty=True,
        cols=100,
        rows=30,
    )
    buf = b""
    while b"t0" not in buf:
        event = await s.next()
        if event[0] == "data":
            assert event[1] == P.CHANNEL_STDOUT
            buf += event[2]
    assert b"30 100" in buf and b"tty-ok" in buf
    s.msg({"type": "resize", "cols": 120, "rows": 40})
    await s.write(b"go\n")
    out = await s.outcome()
    assert b"40 120" in out.stdout and out.final["exit_code"] == 0


async def test_pty_term_and_ctrl_c(host: HostConnection) -> None:
    """A pty gets TERM=xterm-256color, and ^C interrupts its foreground job."""
    s = host.open("exec", cmd="echo $TERM; exec sleep 30", pty=True)
    pid = (await s.next())[1]["pid"]
    buf = b""
    while b"xterm-256color" not in buf:
        event = await s.next()
        buf += event[2] if event[0] == "data" else b""

    # ^C before the exec would race with the shell's own SIGINT handling.
    async def sleeping() -> None:
        assert _comm(pid) == "sleep"

    await eventually(sleeping)
    await s.write(b"\x03")
    out = await s.outcome(timeout=10)
    assert out.final["signal"] == 2


def _comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


async def test_background_listed_attached_signalled_waited(host: HostConnection) -> None:
    """A background command is listed, replays its output on attach, obeys signal and wait."""
    res = await host.call(
        "exec",
        cmd="echo one; echo two >&2; trap 'echo bye; exit 3' TERM; sleep 30 & wait",
        background=True,
        tag="job",
    )
    pid = res["pid"]
    listed = [p for p in (await host.call("processes"))["processes"] if p["pid"] == pid]
    assert listed and listed[0]["running"] and listed[0]["tag"] == "job" and listed[0]["background"]
    assert listed[0]["cmd"].startswith("echo one")

    async def peek() -> None:
        out = await host.open("attach", pid=pid, follow=False).outcome()
        assert (out.stdout, out.stderr) == (b"one\n", b"two\n") and out.final["running"]

    await eventually(peek)
    follow = host.open("attach", pid=pid, from_start=False)
    await host.call("signal", pid=pid, signal="SIGTERM")
    out = await follow.outcome()
    assert out.stdout == b"bye\n" and out.final["exit_code"] == 3
    # The host saw it end through attach, so the agent forgets it.
    assert pid not in [p["pid"] for p in (await host.call("processes"))["processes"]]
    pid = (await host.call("exec", argv=["sleep", "0.2"], background=True))["pid"]
    assert (await host.call("wait", pid=pid, timeout=5))["exit_code"] == 0


async def test_attach_after_exit_replays_and_forgets(host: HostConnection) -> None:
    """Attaching to an exited background process replays its output, then it is gone."""
    pid = (await host.call("exec", cmd="echo done", background=True))["pid"]
    waited = await host.call("wait", pid=pid, timeout=5)
    assert waited["exit_code"] == 0
    out = await host.open("attach", pid=pid).outcome()
    assert out.final["code"] == "no_such_process"  # waited: already forgotten
    pid = (await host.call("exec", cmd="echo again", background=True))["pid"]

    async def exited() -> None:
        assert [p["running"] for p in (await host.call("processes"))["processes"]] == [False]

    await eventually(exited)
    out = await host.open("attach", pid=pid).outcome()
    assert out.stdout == b"again\n" and out.final["exit_code"] == 0
    assert pid not in [p["pid"] for p in (await host.call("processes"))["processes"]]


async def test_background_output_keeps_the_last_mib(host: HostConnection) -> None:
    """A detached process's output is kept up to 1 MiB per channel, counting what was dropped."""
    pid = (await host.call("exec", cmd="head -c 3000000 /dev/zero", background=True))["pid"]
    await host.call("wait", pid=pid, timeout=10)
    pid = (await host.call("exec", cmd="head -c 3000000 /dev/zero; sleep 30", background=True))[
        "pid"
    ]

    async def all_produced() -> None:
        out = await host.open("attach", pid=pid, follow=False).outcome()
        assert len(out.stdout) == 1 << 20
        assert out.final["dropped"] == {"stdout": 3000000 - (1 << 20), "stderr": 0}

    await eventually(all_produced)
    await host.call("signal", pid=pid, signal=9)


async def test_signal_and_wait_errors(host: HostConnection) -> None:
    """Unknown pids are no_such_process; a wait that runs out is a timeout error."""
    out = await host.open("signal", pid=999999, signal=15).outcome()
    assert out.final["code"] == "no_such_process"
    pid = (await host.call("exec", argv=["sleep", "30"], background=True))["pid"]
    out = await host.open("wait", pid=pid, timeout=0.2).outcome()
    assert out.final["code"] == "timeout" and str(pid) in out.final["message"]
    out = await host.open("signal", pid=pid, signal="SIGNOPE").outcome()
    assert out.final["code"] == "invalid_argument"
    await host.call("signal", pid=pid, signal="KILL")
    assert (await host.call("wait", pid=pid))["signal"] == 9


async def test_orphans_are_reaped(host: HostConnection) -> None:
    """Grandchildren left behind by a finished command are reaped, not left as zombies."""
    out = await host.run(cmd="sleep 1 & sleep 1 & echo $!")
    assert out.final["exit_code"] == 0
    agent_pid = (await host.call("hello"))["pid"]
    assert len(children(agent_pid)) == 2, "the orphans were handed to the agent"

    async def reaped() -> None:
        assert not children(agent_pid)

    await eventually(reaped)
