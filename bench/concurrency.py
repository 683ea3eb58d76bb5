"""Concurrency: 50 exec requests at once across 5 sandboxes, through a real server process."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from common import median, p95, report

from sietch import AsyncClient, AsyncSandbox, SietchError
from sietch.config import Settings
from sietch.manager.manager import Manager
from sietch.server.auth import ApiKeys


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_server(state: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SIETCH_STATE_DIR": str(state), "SIETCH_PORT": str(port)}
    log = open(state / "server.log", "wb")  # noqa: SIM115 - the server process owns it
    proc = subprocess.Popen(
        [sys.executable, "-m", "sietch.server"], env=env, stdout=log, stderr=log
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/health").status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError((state / "server.log").read_text())
        time.sleep(0.1)


async def run(url: str, key: str, sandboxes: int, requests: int) -> dict[str, float | int]:
    async with AsyncClient(url, key) as client:
        boxes = [
            await AsyncSandbox.create(client=client, labels={"bench": "concurrency"})
            for _ in range(sandboxes)
        ]
        try:
            for sb in boxes:
                await sb.exec(["true"])

            async def one(i: int) -> float | None:
                started = time.perf_counter()
                try:
                    result = await boxes[i % len(boxes)].exec(["echo", str(i)])
                except SietchError as exc:
                    print(f"request {i} failed: {exc!r}", file=sys.stderr)
                    return None
                if result.exit_code != 0 or result.stdout != f"{i}\n":
                    print(f"request {i} wrong result: {result}", file=sys.stderr)
                    return None
                return (time.perf_counter() - started) * 1000

            times = await asyncio.gather(*(one(i) for i in range(requests)))
        finally:
            for sb in boxes:
                await sb.kill()
    ok = [t for t in times if t is not None]
    return {
        "ok": len(ok),
        "failed": requests - len(ok),
        "median_ms": round(median(ok), 2) if ok else 0.0,
        "p95_ms": round(p95(ok), 2) if ok else 0.0,
    }


async def _reap(state: Path) -> None:
    async with Manager(Settings(state_dir=state), persistent=False):
        pass


def main(sandboxes: int, requests: int) -> None:
    state = Path(tempfile.mkdtemp(prefix="stb", dir="/tmp"))
    state.chmod(0o755)  # QEMU runs as an unprivileged user when we are root
    port = free_port()
    key = ApiKeys(state / "api_keys").add()
    proc = start_server(state, port)
    try:
        figures = asyncio.run(run(f"http://127.0.0.1:{port}", key, sandboxes, requests))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        asyncio.run(_reap(state))
        shutil.rmtree(state, ignore_errors=True)
    report({"sandboxes": sandboxes, "requests": requests, **figures})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sandboxes", type=int, default=5)
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    main(args.sandboxes, args.requests)
