"""Network: small GETs and a 100 MiB download through an exposed port and through the proxy.

A real server process (``python -m sietch.server``) runs one sandbox with a
web server of the guest's stdlib on port 8000, exposed. This process is the
client (httpx, HTTP/1.1 keep-alive, no env proxies) and measures both routes
to the same guest server:

- ``expose``: straight to the exposed ``127.0.0.1:host_port``;
- ``proxy``: ``/api/v1/sandboxes/{id}/ports/8000/proxy/...`` on the API
  server, with the API key.

Small responses: one keep-alive client per route, GETs of a 3-byte body
alternating between the two routes (drift of a shared host hits both alike);
latency median/p95 and requests/s = 1 / mean latency (sequential). Then N
clients at once (threads, one keep-alive connection each) for a few seconds
per route, alternating, requests/s = completed / elapsed (median block).
Download: a 100 MiB file of random bytes, alternating routes, MiB/s median.

Set-up: a create that starts a QEMU (no-pool create, restore, fork) makes the
sandbox's namespace before QEMU starts (``prepare_ms``) and wires it (nftables
rules, slirp4netns uplink, DNS resolver) while QEMU starts. ``create_added_ms``
is both done back to back, measured on their own in this process: an upper
bound of what networking adds. A create served by the warm pool adds nothing
with the default policy, and one policy change (``policy_change_ms``)
otherwise.

The guest server answers the small GET with one ``send`` of a prebuilt
response (no Nagle, no per-request logging) and sends files with
``sendfile``, so the guest's emulated Python costs as little as it can and
what is left is the network path.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from common import api_server, median, p95, report

from sietch import Sandbox
from sietch.network.policy import NetworkPolicy
from sietch.network.sandbox import SandboxNetwork

MiB = 1024 * 1024
GUEST_PORT = 8000
SMALL = b"ok\n"
BIG = "/srv/big.bin"

GUEST_SERVER = b"""
import functools, http.server

SMALL = (
    b"HTTP/1.1 200 OK\\r\\nContent-Type: text/plain\\r\\nContent-Length: 3\\r\\n\\r\\nok\\n"
)


class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    disable_nagle_algorithm = True

    def do_GET(self):
        if self.path == "/small":
            self.wfile.write(SMALL)
        else:
            super().do_GET()

    def copyfile(self, source, outputfile):
        self.connection.sendfile(source)

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 64


Server(("0.0.0.0", 8000), functools.partial(Handler, directory="/srv")).serve_forever()
"""


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Route:
    """One way to the guest web server: a base URL and the headers it needs."""

    def __init__(self, name: str, base: str, headers: dict[str, str]) -> None:
        self.name = name
        self.base = base.rstrip("/")
        self.headers = headers

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base,
            headers=self.headers,
            timeout=httpx.Timeout(30.0, read=120.0),
            trust_env=False,
        )


def get_small(http: httpx.Client) -> float:
    started = time.perf_counter()
    response = http.get("/small")
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200 or response.content != SMALL:
        raise RuntimeError(f"{http.base_url}/small: {response.status_code} {response.text[:200]}")
    return elapsed


def sequential(routes: list[Route], requests: int) -> dict[str, float]:
    """One keep-alive client per route, GETs alternating between the routes."""
    clients = [p.client() for p in routes]
    times: list[list[float]] = [[] for _ in routes]
    try:
        for _ in range(20):
            for http in clients:
                get_small(http)
        for _ in range(requests):
            for http, ms in zip(clients, times, strict=True):
                ms.append(get_small(http))
    finally:
        for http in clients:
            http.close()
    figures: dict[str, float] = {}
    for route, ms in zip(routes, times, strict=True):
        figures[f"{route.name}_rps"] = round(1000 * len(ms) / sum(ms), 1)
        figures[f"{route.name}_median_ms"] = round(median(ms), 2)
        figures[f"{route.name}_p95_ms"] = round(p95(ms), 2)
    return figures


def concurrent_block(route: Route, clients: int, seconds: float) -> float:
    """Requests/s of ``clients`` threads, each with its own connection, for ``seconds``."""
    counts = [0] * clients
    errors: list[BaseException] = []
    ready = threading.Barrier(clients + 1)
    stop = threading.Event()

    def worker(i: int) -> None:
        with route.client() as http:
            try:
                get_small(http)  # connect before the clock starts
                ready.wait()
                while not stop.is_set():
                    get_small(http)
                    counts[i] += 1
            except BaseException as exc:  # reported below
                errors.append(exc)
                ready.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    started = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{route.name}: {errors[0]!r}")
    return sum(counts) / elapsed


def concurrent(
    routes: list[Route], clients: int, seconds: float, rounds: int
) -> dict[str, float | int]:
    rps: list[list[float]] = [[] for _ in routes]
    for _ in range(rounds):
        for route, values in zip(routes, rps, strict=True):
            values.append(concurrent_block(route, clients, seconds))
    figures: dict[str, float | int] = {"clients": clients}
    for route, values in zip(routes, rps, strict=True):
        figures[f"{route.name}_rps_{clients}_clients"] = round(median(values), 1)
    return figures


def download(route: Route, size_mib: int) -> float:
    with route.client() as http:
        started = time.perf_counter()
        received = 0
        with http.stream("GET", "/" + BIG.removeprefix("/srv/")) as response:
            if response.status_code != 200:
                raise RuntimeError(f"{route.name} download: {response.status_code}")
            for chunk in response.iter_raw():
                received += len(chunk)
        elapsed = time.perf_counter() - started
    if received != size_mib * MiB:
        raise RuntimeError(f"{route.name} download: {received} bytes, not {size_mib} MiB")
    return size_mib / elapsed


def downloads(routes: list[Route], size_mib: int, runs: int) -> dict[str, float | int]:
    speeds: list[list[float]] = [[] for _ in routes]
    for _ in range(runs):
        for route, values in zip(routes, speeds, strict=True):
            values.append(download(route, size_mib))
            progress(f"  {route.name}: {values[-1]:.1f} MiB/s")
    figures: dict[str, float | int] = {"size_mib": size_mib, "download_runs": runs}
    for route, values in zip(routes, speeds, strict=True):
        figures[f"{route.name}_download_mib_s"] = round(median(values), 1)
    return figures


def serve_in_guest(sb: Sandbox, size_mib: int) -> None:
    """The guest web server on GUEST_PORT, answering, and the big file in place."""
    sb.files.write("/srv/server.py", GUEST_SERVER)
    made = sb.exec(["sh", "-c", f"head -c {size_mib * MiB} /dev/urandom > {BIG}"])
    if made.exit_code != 0:
        raise RuntimeError(f"making {BIG}: {made}")
    sb.process.start(["python3", "/srv/server.py"], cwd="/srv")
    probe = f"import socket; socket.create_connection(('127.0.0.1', {GUEST_PORT}))"
    for _ in range(300):
        if sb.exec(["python3", "-c", probe]).exit_code == 0:
            return
        time.sleep(0.1)
    raise RuntimeError("the guest web server did not start")


def run(url: str, key: str, args: argparse.Namespace) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    # Each measurement is a function of the routes returning named figures; a new one is one
    # more entry here.
    steps: list[tuple[str, Callable[[list[Route]], dict[str, Any]]]] = [
        (
            f"small GETs: {args.requests} per route, sequential, one keep-alive client each",
            lambda routes: sequential(routes, args.requests),
        ),
        (
            f"small GETs: {args.clients} clients, {args.rounds} x {args.seconds:g} s per route",
            lambda routes: concurrent(routes, args.clients, args.seconds, args.rounds),
        ),
        (
            f"download: {args.size_mib} MiB, {args.download_runs} runs per route",
            lambda routes: downloads(routes, args.size_mib, args.download_runs),
        ),
        (
            f"network set-up: {args.setup_runs} sandbox networks made and removed",
            lambda routes: asyncio.run(setup_cost(args.setup_runs, Path(tempfile.gettempdir()))),
        ),
    ]
    progress("creating the sandbox")
    with Sandbox.create(url=url, api_key=key, labels={"bench": "network"}) as sb:
        figures["accel"] = sb.info.accel
        progress(f"guest web server and {args.size_mib} MiB file ({sb.info.accel})")
        serve_in_guest(sb, args.size_mib)
        mapping = sb.expose(GUEST_PORT)
        routes = [
            Route("expose", f"http://{mapping.host}:{mapping.host_port}", {}),
            Route("proxy", sb.proxy_url(GUEST_PORT), {"Authorization": f"Bearer {key}"}),
        ]
        for title, step in steps:
            progress(title)
            figures.update(step(routes))
    return {"requests": args.requests, **figures}


async def setup_cost(runs: int, scratch: Path) -> dict[str, float]:
    made, prepared, changed = [], [], []
    for _ in range(runs):
        started = time.perf_counter()
        net = await SandboxNetwork.prepare(NetworkPolicy(), [])
        prepared.append(time.perf_counter() - started)
        await net.connect(scratch / "bench-uplink.log")
        made.append(time.perf_counter() - started)
        started = time.perf_counter()
        await net.apply(NetworkPolicy(internet=False, allow=["203.0.113.0/24", "example.com"]))
        changed.append(time.perf_counter() - started)
        await net.close()
    (scratch / "bench-uplink.log").unlink(missing_ok=True)
    return {
        "create_added_ms": median(made) * 1000,
        "create_added_p95_ms": p95(made) * 1000,
        "prepare_ms": median(prepared) * 1000,
        "policy_change_ms": median(changed) * 1000,
    }


def main(args: argparse.Namespace) -> None:
    with api_server() as (url, key):
        figures = run(url, key, args)
    report(figures)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size-mib", type=int, default=100)
    parser.add_argument("--download-runs", type=int, default=5)
    parser.add_argument("--setup-runs", type=int, default=30)
    main(parser.parse_args())
