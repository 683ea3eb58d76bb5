"""API overhead: exec `true` through the SDK over HTTP vs. the manager directly, interleaved.

This process runs the server (uvicorn + manager, on uvloop like ``sietch
serve``) and times the direct path, ``Sandbox.exec`` on the server's own
loop. A child process uses the sync SDK for the API path, one call each time
we ask, so client and server don't share a GIL. Alternating the two cancels
drift (TCG timer noise, a busy host) out of the difference.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import socket
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import uvicorn
from common import Target, median, p95, reap, report

from sietch.config import Settings
from sietch.core.manager import Manager
from sietch.core.tenants import Tenants
from sietch.server import create_app

CLIENT = textwrap.dedent(
    """
    import sys, time
    from sietch import Sandbox
    sb = Sandbox.connect(sys.argv[1], url=sys.argv[2], api_key=sys.argv[3])
    for line in sys.stdin:
        started = time.perf_counter()
        result = sb.exec(["true"])
        elapsed = (time.perf_counter() - started) * 1000
        assert result.exit_code == 0, result
        print(elapsed, flush=True)
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def measure(runs: int, state: Path) -> dict[str, float | int | str]:
    settings = Settings(state_dir=state, port=free_port())
    tenants = Tenants(settings.tenants_path)
    key = tenants.create_key("default", "bench", admin=True)[1]
    app = create_app(settings, tenants=tenants)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level="warning")
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()
        await asyncio.sleep(0.05)
    try:
        manager: Manager = app.state.sietch.manager
        info = await manager.create()
        sandbox = manager.sandbox(info.id)
        url = f"http://127.0.0.1:{settings.port}"
        client = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CLIENT, info.id, url, key,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert client.stdin is not None and client.stdout is not None

        async def api_call() -> float:
            client.stdin.write(b"go\n")  # type: ignore[union-attr]
            line = await client.stdout.readline()  # type: ignore[union-attr]
            if not line:
                raise RuntimeError("the SDK client process died")
            return float(line)

        async def direct_call() -> float:
            started = time.perf_counter()
            await sandbox.exec(["true"])
            return (time.perf_counter() - started) * 1000

        api_ms: list[float] = []
        direct_ms: list[float] = []
        try:
            for _ in range(5):
                await api_call()
                await direct_call()
            for _ in range(runs):
                api_ms.append(await api_call())
                direct_ms.append(await direct_call())
        finally:
            client.stdin.close()
            await client.wait()
            await manager.delete(info.id)
    finally:  # stops the server (and its manager's VMs) on any error too
        server.should_exit = True
        await serving
    return {
        "runs": runs,
        "api_median_ms": round(median(api_ms), 2),
        "direct_median_ms": round(median(direct_ms), 2),
        # Median of the paired differences: each API call against the direct call right
        # after it, so a slow stretch of the host hits both halves of a pair.
        "added_median_ms": round(
            median([a - d for a, d in zip(api_ms, direct_ms, strict=True)]), 2
        ),
        "api_p95_ms": round(p95(api_ms), 2),
        "direct_p95_ms": round(p95(direct_ms), 2),
        "accel": manager.accel,
    }


def main(runs: int) -> None:
    state = Path(tempfile.mkdtemp(prefix="stb", dir="/tmp"))
    state.chmod(0o755)
    try:
        try:
            import uvloop
        except ImportError:
            figures = asyncio.run(measure(runs, state))
        else:
            figures = uvloop.run(measure(runs, state))
    finally:
        with contextlib.suppress(Exception):
            asyncio.run(reap(state))
        shutil.rmtree(state, ignore_errors=True)
    report(figures, {"added_median_ms": Target(2)})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    main(parser.parse_args().runs)
