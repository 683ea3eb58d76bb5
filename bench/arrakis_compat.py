"""Arrakis compatibility cost: ``run_cmd("true")`` through /v1 with py-arrakis vs. Sietch's SDK.

Starts ``python -m sietch.server`` (as users run it) on a free loopback port
with a fresh state dir, makes one VM through /v1 and one through Sietch's own
API, then alternates the two calls so drift (TCG timer noise, a busy host)
hits both alike. py-arrakis opens a new HTTP connection per call (it uses
``requests`` without a session), Sietch's SDK keeps one: that difference is
part of what a user of each sees, so it is measured, not removed.

The last line is JSON: ``{"arrakis_median_ms", "sietch_median_ms", ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from common import admin_key, free_port, median, p95, reap, report, start_server
from py_arrakis import SandboxManager

from sietch import Sandbox


def measure(runs: int, warmup: int, state: Path) -> dict[str, float | int]:
    port = free_port()
    key = admin_key(state)
    proc = start_server(state, port)
    try:
        arrakis = SandboxManager(f"http://arrakis:{key}@127.0.0.1:{port}")
        vm = arrakis.start_sandbox("bench")
        own = Sandbox.create(url=f"http://127.0.0.1:{port}", api_key=key)
        try:
            a_ms: list[float] = []
            s_ms: list[float] = []
            for i in range(warmup + runs):
                started = time.perf_counter()
                assert vm.run_cmd("true") == {"output": "", "error": ""}
                a = (time.perf_counter() - started) * 1000
                started = time.perf_counter()
                assert own.exec("true").exit_code == 0
                s = (time.perf_counter() - started) * 1000
                if i >= warmup:
                    a_ms.append(a)
                    s_ms.append(s)
        finally:
            own.kill()
            own.close()
            arrakis.destroy_all()
    finally:
        proc.terminate()
        proc.wait(15)
    return {
        "arrakis_median_ms": round(median(a_ms), 2),
        "sietch_median_ms": round(median(s_ms), 2),
        "arrakis_p95_ms": round(p95(a_ms), 2),
        "sietch_p95_ms": round(p95(s_ms), 2),
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="stb", dir="/tmp"))
    state.chmod(0o755)  # QEMU may run as an unprivileged user: it must reach its work dir
    try:
        figures = measure(args.runs, args.warmup, state)
    finally:
        asyncio.run(reap(state))
        shutil.rmtree(state, ignore_errors=True)
    report(figures)


if __name__ == "__main__":
    main()
