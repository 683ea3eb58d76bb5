"""Restart: kill -9 the server while sandboxes run, start it again, time until all answer.

``restart_ready_s`` runs from the new server process's start until
``/api/v1/health`` answers and every sandbox has answered an exec: the
adopted VMs never stopped, so this is what a restart costs their users.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
from common import admin_key, free_port, median, p95, reap, report, start_server


async def all_answer(api: str, headers: dict[str, str], ids: list[str]) -> None:
    async with httpx.AsyncClient(base_url=api, headers=headers, timeout=120) as c:
        (await c.get("/health")).raise_for_status()
        runs = await asyncio.gather(
            *(c.post(f"/sandboxes/{i}/exec", json={"cmd": ["true"]}) for i in ids)
        )
    for run in runs:
        if run.status_code != 200 or run.json()["exit_code"] != 0:
            raise RuntimeError(f"an adopted sandbox did not answer: {run.text}")


def main(sandboxes: int, runs: int) -> None:
    state = Path(tempfile.mkdtemp(prefix="stb", dir="/tmp"))
    state.chmod(0o755)  # QEMU runs as an unprivileged user when we are root
    port = free_port()
    api = f"http://127.0.0.1:{port}/api/v1"
    headers = {"Authorization": f"Bearer {admin_key(state)}"}
    proc: subprocess.Popen[bytes] = start_server(state, port)
    times = []
    try:
        with httpx.Client(base_url=api, headers=headers, timeout=300) as c:
            ids = [c.post("/sandboxes", json={}).json()["id"] for _ in range(sandboxes)]
        asyncio.run(all_answer(api, headers, ids))
        for _ in range(runs):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            started = time.perf_counter()
            proc = start_server(state, port)
            asyncio.run(all_answer(api, headers, ids))
            times.append(time.perf_counter() - started)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        asyncio.run(reap(state))
        shutil.rmtree(state, ignore_errors=True)
    report(
        {
            "sandboxes": sandboxes,
            "runs": runs,
            "restart_ready_s": round(median(times), 2),
            "restart_ready_p95_s": round(p95(times), 2),
        }
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sandboxes", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    main(args.sandboxes, args.runs)
