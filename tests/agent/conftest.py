"""Runs the real guest agent as a subprocess against a socket the test listens on."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from .hostside import HostConnection

REPO = Path(__file__).resolve().parents[2]


def _proc_table() -> Iterator[tuple[int, str, int]]:
    """(pid, state, parent pid) of every process, from /proc."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        yield int(entry), fields[0], int(fields[1])


def children(pid: int) -> list[str]:
    """Children (zombies included) of pid."""
    return [str(child) for child, _, parent in _proc_table() if parent == pid]


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``, found through /proc."""
    below: dict[int, list[int]] = {}
    for child, state, parent in _proc_table():
        if state != "Z":
            below.setdefault(parent, []).append(child)
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in below.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# Makes a namespace look like the VM after switch_root: a /dev without pts or
# shm (the agent mounts those), busybox at /run/sietch/bin, then the agent as
# PID 1. Everything it mounts stays inside the private mount namespace.
PID1_SCRIPT = """
set -e
mount -t tmpfs -o mode=755 sietch-run /run
mkdir -p /run/sietch/bin /run/hostdev
cp /usr/bin/busybox /run/sietch/bin/busybox
mount --rbind /dev /run/hostdev
mount -t tmpfs -o mode=755 sietch-dev /dev
for n in null zero full random urandom tty; do
    touch /dev/$n
    mount --bind /run/hostdev/$n /dev/$n
done
ln -s pts/ptmx /dev/ptmx
umount -l /run/hostdev
cp /etc/hosts /run/hosts
mount --bind /run/hosts /etc/hosts
exec "$0" -m sietch.agent.guest --connect "$1" --give-up 20
"""


class AgentUnderTest:
    """One agent process, the socket it connects to, and the connections it made.

    With ``pid1`` it runs as PID 1 of fresh pid, mount, UTS and network
    namespaces, so the PID-1 duties run for real without touching the host.
    """

    def __init__(self, tmp: Path, *, pid1: bool = False) -> None:
        self.tmp = tmp
        self.pid1 = pid1
        self.sock = str(tmp / "agent.sock")
        self.log = tmp / "agent.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.server: asyncio.Server | None = None
        self.accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self.conns: list[HostConnection] = []

    async def start(self) -> None:
        async def on_connect(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await self.accepted.put((r, w))

        self.server = await asyncio.start_unix_server(on_connect, self.sock, limit=1 << 22)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
        env["PYTHONPATH"] = str(REPO)
        with open(self.log, "wb") as log:
            command = [sys.executable, "-m", "sietch.agent.guest", "--connect", self.sock]
            command += ["--give-up", "20"]
            if self.pid1:
                command = [
                    *("unshare", "--mount", "--uts", "--pid", "--net", "--fork"),
                    *("--mount-proc", "--kill-child", "sh", "-c", PID1_SCRIPT),
                    *(sys.executable, self.sock),
                ]
            # A guest's kernel starts the agent with every signal at its default; a test
            # run in the background (no job control) has SIGINT and SIGQUIT ignored, which
            # every command the agent starts would inherit (^C in a pty would do nothing).
            command = ["env", "--default-signal=INT,QUIT", *command]
            self.proc = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                cwd=self.tmp,
            )

    async def connect(self, junk: bytes = b"", timeout: float = 20) -> HostConnection:
        """Accept the agent's next connection and do the SYNC handshake on it."""
        reader, writer = await asyncio.wait_for(self.accepted.get(), timeout)
        conn = HostConnection(reader, writer)
        await conn.sync(junk)
        self.conns.append(conn)
        return conn

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    async def stop(self) -> None:
        for conn in self.conns:
            await conn.close()
        if self.server is not None:
            self.server.close()
        proc = self.proc
        if proc is None:
            return
        # Freeze the agent so it cannot start more children while we sweep.
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while (kids := descendants(proc.pid)) and time.monotonic() < deadline:
            for pid in kids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(0.02)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
            os.kill(proc.pid, signal.SIGCONT)
        await asyncio.wait_for(proc.wait(), 10)
        assert not kids, f"agent children survived: {kids}"


@pytest.fixture
async def agent_proc(tmp_path: Path) -> AsyncIterator[AgentUnderTest]:
    """A started agent, not yet connected; killed with all its children afterwards."""
    agent = AgentUnderTest(tmp_path)
    await agent.start()
    try:
        yield agent
    finally:
        await agent.stop()


@pytest.fixture
async def pid1_agent(tmp_path: Path) -> AsyncIterator[AgentUnderTest]:
    """An agent that is PID 1 of its own namespaces, killed with them afterwards."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("busybox"):
        pytest.skip("needs root, unshare and busybox")
    agent = AgentUnderTest(tmp_path, pid1=True)
    await agent.start()
    try:
        yield agent
    finally:
        await agent.stop()


@pytest.fixture
async def host(agent_proc: AgentUnderTest) -> HostConnection:
    """The host end of a fresh agent, SYNC done."""
    return await agent_proc.connect()
