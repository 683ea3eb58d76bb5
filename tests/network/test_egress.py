"""Sandbox networks on real VMs: egress policy, isolation from the host and each other.

Traffic goes only to loopback and to the stand-in internet the tests make
(:mod:`tests.network.outside`).
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sietch.core.live import LiveSandbox
from sietch.core.manager import Manager
from sietch.core.models import CommandResult
from sietch.network.policy import NetworkPolicy, host_addresses
from tests.conftest import SandboxFactory
from tests.core.test_ports import fetch, serve
from tests.network.outside import Outside, uplinks

BUSYBOX = "/run/sietch/bin/busybox"
"""The tools disk's busybox (the default image has no ping)."""

PROBE = r"""
import json, socket, sys, time, urllib.request
out = {}
for url in sys.argv[1:]:
    t = time.monotonic()
    try:
        body = urllib.request.urlopen(url, timeout=15).read().decode()
        out[url] = {"ok": True, "body": body}
    except Exception as exc:
        out[url] = {"ok": False, "error": str(exc)}
    out[url]["seconds"] = time.monotonic() - t
print(json.dumps(out))
"""


async def probe(sb: LiveSandbox, *urls: str) -> dict[str, dict[str, object]]:
    """Fetch each URL from inside the guest: what came back, or the error, and how fast."""
    result = await sb.exec(["python3", "-c", PROBE, *urls], timeout=120)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


async def udp_echo(sb: LiveSandbox, address: str) -> bytes | None:
    """What the outside's UDP echo sent back, or None after a second of silence."""
    script = (
        "import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
        f"s.settimeout(1); s.sendto(b'ping', ('{address}', 7)); "
        "sys.stdout.buffer.write(s.recv(64))"
    )
    result = await sb.exec(["python3", "-c", script], timeout=30)
    return result.stdout if result.exit_code == 0 else None


async def ping(sb: LiveSandbox, address: str) -> CommandResult:
    return await sb.exec([BUSYBOX, "ping", "-c", "1", "-W", "2", address], timeout=30)


def reached(results: dict[str, dict[str, object]], url: str) -> bool:
    return results[url]["ok"] is True


def refused_fast(results: dict[str, dict[str, object]], url: str) -> bool:
    """Failed, and in well under the 15 s the guest would otherwise have waited."""
    entry = results[url]
    return entry["ok"] is False and float(entry["seconds"]) < 5  # type: ignore[arg-type]


async def test_internet_on_reaches_the_outside_by_address_and_name(
    manager: Manager, outside: Outside, sandboxes: SandboxFactory
) -> None:
    sb = await sandboxes()
    assert sb.info.network == NetworkPolicy(internet=True)
    by_ip, by_name = f"http://{outside.web}/hello", "http://good.test/hello"
    results = await probe(sb, by_ip, by_name)
    assert reached(results, by_ip) and reached(results, by_name), results
    assert results[by_name]["body"] == "hello from outside\n"
    assert await udp_echo(sb, outside.web) == b"ping"
    assert (await ping(sb, outside.web)).exit_code == 0


async def test_policy_set_at_create_and_changed_at_run_time(
    manager: Manager, outside: Outside, sandboxes: SandboxFactory
) -> None:
    """internet off refuses at once; allow-lists of CIDRs and names; changes apply live."""
    web, other = f"http://{outside.web}/hello", f"http://{outside.other}/hello"
    good, sub, bad = "http://good.test/hello", "http://www.good.test/hello", "http://other.test/"
    sb = await sandboxes(network=NetworkPolicy(internet=False))
    assert sb.info.network.internet is False
    results = await probe(sb, web, good)
    assert refused_fast(results, web) and refused_fast(results, good), results
    assert await udp_echo(sb, outside.web) is None
    assert (await ping(sb, outside.web)).exit_code != 0

    await manager.set_network(sb.id, NetworkPolicy(internet=False, allow=[outside.web]))
    results = await probe(sb, web, other)
    assert reached(results, web) and refused_fast(results, other), results

    await manager.set_network(sb.id, NetworkPolicy(internet=False, allow=["good.test"]))
    results = await probe(sb, good, sub, bad, other)
    assert reached(results, good) and reached(results, sub), results
    assert refused_fast(results, bad) and refused_fast(results, other), results
    assert (await manager.get(sb.id)).network.allow == ["good.test"]

    await manager.set_network(sb.id, NetworkPolicy(internet=True))
    results = await probe(sb, other, bad)
    assert reached(results, other), results


@pytest.fixture(scope="module")
def host_server() -> Iterator[int]:
    """A web server on all of the host's addresses, loopback included."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"host secret\n")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("0.0.0.0", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


async def test_host_and_other_sandboxes_are_unreachable(
    manager: Manager, outside: Outside, host_server: int, sandboxes: SandboxFactory
) -> None:
    """Not the host's loopback (slirp's gateway), not its other addresses, not a neighbour's
    exposed port: with the internet on, and even when allow-listed."""
    neighbour = await sandboxes()
    sb = await sandboxes()
    await serve(neighbour)
    exposed = (await manager.expose(neighbour.id, 8000)).host_port
    assert (await fetch(f"http://127.0.0.1:{exposed}/index.txt")).status_code == 200
    urls = [
        f"http://10.0.2.2:{host_server}/",
        f"http://10.0.2.2:{exposed}/index.txt",
        f"http://{outside.host_end}:{host_server}/",
        f"http://{outside.host_end}:{exposed}/index.txt",
    ]
    results = await probe(sb, *urls)
    assert all(refused_fast(results, u) for u in urls), results
    await manager.set_network(sb.id, NetworkPolicy(allow=[f"{outside.host_end}/32"]))
    results = await probe(sb, urls[2])
    assert refused_fast(results, urls[2]), results


async def test_guest_has_dns_hostname_hosts_and_mtu(
    manager: Manager, outside: Outside, sandboxes: SandboxFactory
) -> None:
    sb = await sandboxes()
    script = (
        "import socket; h = socket.gethostname(); "
        "print(h, socket.gethostbyname(h), socket.gethostbyname('localhost'), "
        "socket.gethostbyname('good.test'), open('/sys/class/net/eth0/mtu').read().strip(), "
        "len(socket.gethostbyname_ex('big.test')[2]))"
    )
    result = await sb.exec(["python3", "-c", script])
    assert result.exit_code == 0, result.stderr
    hostname, own, localhost, good, mtu, big = result.stdout.decode().split()
    assert hostname and own.startswith("127.") and localhost == "127.0.0.1"
    assert good == outside.web and mtu == "1500"
    assert big == "40", "an answer too big for UDP arrives whole over TCP"


async def test_forks_keep_the_policy_and_their_own_network(
    manager: Manager, outside: Outside, sandboxes: SandboxFactory
) -> None:
    web, other = f"http://{outside.web}/hello", f"http://{outside.other}/hello"
    sb = await sandboxes(network=NetworkPolicy(internet=False, allow=[outside.web]))
    forks = []
    try:
        forks = [manager.sandbox(i.id) for i in await manager.fork(sb.id, 2)]
        assert len({f.machine.config.mac for f in forks}) == 2
        for fork in forks:
            assert fork.info.network == sb.info.network
            results = await probe(fork, web, other)
            assert reached(results, web) and refused_fast(results, other), results
    finally:
        for fork in forks:
            await manager.delete(fork.id)


def _host_state() -> tuple[str, str, list[str]]:
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    rules = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, check=True)
    return links.stdout, rules.stdout, host_addresses()


async def test_nothing_is_left_on_the_host(manager: Manager, sandboxes: SandboxFactory) -> None:
    """A sandbox's namespace, uplink and rules go with it; the host's own are never touched."""
    before = _host_state()
    sb = await sandboxes()
    assert uplinks(manager.settings.state_dir), "a running sandbox has an uplink"
    assert _host_state() == before
    await manager.delete(sb.id)
    # Only the warm pool's sandbox (one) may still have an uplink.
    assert len(uplinks(manager.settings.state_dir)) <= manager.settings.pool_size
    assert _host_state() == before
