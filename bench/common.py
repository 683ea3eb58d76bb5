"""Shared bits of the benchmark scripts: statistics, a throwaway state dir, JSON output."""

from __future__ import annotations

import asyncio
import contextlib
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
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from sietch.config import Settings
from sietch.core.manager import Manager
from sietch.core.tenants import Tenants
from sietch.errors import VMError
from sietch.vmm.version import version_text


def admin_key(state: Path) -> str:
    """A new admin key of the default tenant in the server's state dir ``state``."""
    tenants = Tenants(state / "tenants.db")
    try:
        return tenants.create_key("default", f"bench-{time.monotonic_ns()}", admin=True)[1]
    finally:
        tenants.close()


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def p95(values: Sequence[float]) -> float:
    return percentile(values, 0.95)


def qemu_version() -> str:
    """The version of the QEMU the sandboxes run (``SIETCH_QEMU_BINARY`` when set)."""
    try:
        return version_text(Settings().qemu_binary)
    except VMError as exc:
        return f"unknown ({exc.message})"


def new_state_dir() -> Path:
    """A fresh state dir with a short path (it holds unix sockets); the caller removes it."""
    return Path(tempfile.mkdtemp(prefix="stb", dir="/tmp"))


def cow_root(state: Path) -> Path:
    """Where a state dir's sandbox and snapshot files live: its XFS ``cow`` mount if any."""
    cow = state / "cow"
    return cow if os.path.ismount(cow) else state


def fs_used(path: Path) -> int:
    """Bytes in use on the filesystem holding ``path`` (shared extents counted once)."""
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def mem_available() -> int:
    """The host's MemAvailable, in bytes."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def leftovers(state: Path) -> dict[str, int]:
    """What is left of a state dir that should be gone: QEMUs, mounts, loop devices.

    Exact counts, unlike memory and disk deltas, which other work on the host blurs.
    """
    marker = str(state).encode()
    vms = 0
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                vms += marker in (proc / "cmdline").read_bytes()
            except OSError:
                continue
    with open("/proc/self/mounts", "rb") as f:
        mounts = sum(marker in line for line in f)
    loops = 0
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        with contextlib.suppress(OSError):
            loops += marker in backing.read_bytes()
    return {"leftover_processes": vms, "leftover_mounts": mounts, "leftover_loops": loops}


@asynccontextmanager
async def bench_manager(**settings: Any) -> AsyncIterator[Manager]:
    """A manager on a fresh state dir, removed after."""
    state = new_state_dir()
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


def start_server(
    state: Path, port: int, settings: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **(settings or {}),
        "SIETCH_STATE_DIR": str(state),
        "SIETCH_HOST": "127.0.0.1",
        "SIETCH_PORT": str(port),
    }
    log = open(state / "server.log", "ab")  # noqa: SIM115 - the child keeps writing to it
    # Its own session: a Ctrl-C reaches only the bench, which then deletes what it made
    # through the server before stopping it.
    proc = subprocess.Popen(
        [sys.executable, "-m", "sietch.server"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
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
def api_server(
    state: Path | None = None, settings: Mapping[str, str] | None = None
) -> Iterator[tuple[str, str]]:
    """A real ``sietch.server`` process: (its URL, an API key).

    ``state``: a dir from :func:`new_state_dir` the caller wants to look into
    (default: a new one); removed after either way. ``settings``: extra
    ``SIETCH_*`` environment variables for the server.
    """
    state = state or new_state_dir()
    try:
        state.chmod(0o755)  # QEMU runs as an unprivileged user when we are root
        port = free_port()
        key = admin_key(state)
        proc = start_server(state, port, settings or {})
        try:
            yield f"http://127.0.0.1:{port}", key
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            asyncio.run(reap(state))
    finally:
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


@dataclass(frozen=True)
class Target:
    """The issue's goal for one figure: at most (or at least) ``limit``."""

    limit: float
    at_least: bool = False

    def __str__(self) -> str:
        return f"{'>=' if self.at_least else '<='} {self.limit:g}"

    def met(self, value: float) -> bool:
        return value >= self.limit if self.at_least else value <= self.limit


def report(figures: dict[str, Any], targets: Mapping[str, Target] | None = None) -> None:
    """Print a human line (each target beside its figure), then the figures as JSON.

    The JSON gains ``qemu_version``, ``machine``, ``load_avg`` (the host was
    this busy at the end) and, with targets, ``targets`` and the ``missed`` ones.
    """
    targets = targets or {}
    figures.setdefault("qemu_version", qemu_version())
    figures.setdefault("machine", f"{platform.node()} {platform.machine()}")
    figures.setdefault("load_avg", [round(x, 2) for x in os.getloadavg()])
    if targets:
        figures["targets"] = {k: t.limit for k, t in targets.items()}
        figures["missed"] = [k for k, t in targets.items() if not t.met(figures[k])]

    def human(key: str, value: Any) -> str:
        return f"{key}={value}" + (f" (target {targets[key]})" if key in targets else "")

    print(", ".join(human(k, v) for k, v in figures.items() if k != "targets"))
    print(json.dumps(figures))
