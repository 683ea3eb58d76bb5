"""Shared bits of the benchmark scripts: statistics, a throwaway state dir, JSON output."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx

from sietch.config import Settings
from sietch.core.manager import Manager
from sietch.server.auth import ApiKeys


def median(values: list[float]) -> float:
    return statistics.median(values)


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


@asynccontextmanager
async def bench_manager(**settings: Any) -> AsyncIterator[Manager]:
    """A manager on a fresh state dir (short path: it holds unix sockets), removed after."""
    state = Path(tempfile.mkdtemp(prefix="stb", dir="/tmp"))
    try:
        async with Manager(Settings(state_dir=state, **settings)) as manager:
            yield manager
    finally:
        shutil.rmtree(state, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_server(state: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SIETCH_STATE_DIR": str(state),
        "SIETCH_HOST": "127.0.0.1",
        "SIETCH_PORT": str(port),
    }
    log = open(state / "server.log", "ab")  # noqa: SIM115 - the child keeps writing to it
    proc = subprocess.Popen(
        [sys.executable, "-m", "sietch.server"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError((state / "server.log").read_text()[-2000:])
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server did not come up within 60 s")


async def reap(state: Path) -> None:
    """Kill any VM a server left (they are persistent): a plain manager reaps them."""
    async with Manager(Settings(state_dir=state), persistent=False):
        pass


@contextmanager
def api_server() -> Iterator[tuple[str, str]]:
    """A real ``sietch.server`` process on a throwaway state dir: (its URL, an API key)."""
    state = Path(tempfile.mkdtemp(prefix="stb", dir="/tmp"))
    state.chmod(0o755)  # QEMU runs as an unprivileged user when we are root
    port = free_port()
    key = ApiKeys(state / "api_keys").add()
    proc = start_server(state, port)
    try:
        yield f"http://127.0.0.1:{port}", key
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        asyncio.run(reap(state))
        shutil.rmtree(state, ignore_errors=True)


def task_cpu_ns(pid: int) -> dict[int, int]:
    """CPU time (ns) of each live thread of ``pid``, from its schedstat."""
    times = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            times[int(task.name)] = int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return times


def report(figures: dict[str, Any]) -> None:
    """Print a human line, then the figures as JSON on the last line."""
    figures.setdefault("machine", f"{platform.node()} {platform.machine()}")
    print(", ".join(f"{k}={v}" for k, v in figures.items()))
    print(json.dumps(figures))
