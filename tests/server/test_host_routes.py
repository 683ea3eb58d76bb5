"""Host routes: with SIETCH_PROXY_DOMAIN set, ``{port}-{id}.{domain}`` is the port proxy.

One server with the setting and one sandbox (a web server and a WebSocket echo,
both exposed) carry every test but the last, which needs a server without it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.server.harness import ApiServer, wait_listening
from tests.server.test_ports import PAGE, WS_ECHO

DOMAIN = "sietch.test"


@dataclass
class Site:
    server: ApiServer
    http: httpx.Client
    sandbox_id: str

    def get(self, path: str, host: str, key: str | None = None) -> httpx.Response:
        """GET ``path`` from this server as if ``host`` resolved to it (wildcard DNS)."""
        headers = {"Host": host, "Authorization": f"Bearer {key or self.server.api_key}"}
        return httpx.get(self.server.url + path, headers=headers, timeout=60)

    def host(self, port: int, sandbox_id: str | None = None) -> str:
        return f"{port}-{sandbox_id or self.sandbox_id}.{DOMAIN}"


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    """A server with a proxy domain; a sandbox serving /srv on 8000 and a WebSocket on 8765."""
    # One cold boot: no template to make and no warm pool to fill for a single sandbox.
    server = ApiServer(proxy_domain=DOMAIN, templates="false", pool_size=0)
    server.start()
    try:
        with httpx.Client(
            base_url=server.url + "/api/v1", headers=server.headers, timeout=120
        ) as http:
            created = http.post("/sandboxes", json={})
            assert created.status_code == 201, created.text
            sandbox_id = created.json()["id"]
            files = f"/sandboxes/{sandbox_id}/files"
            for path, content in [
                ("/srv/index.txt", PAGE),
                ("/srv/sub/x", b""),
                ("/srv/ws.py", WS_ECHO),
            ]:
                written = http.put(files, params={"path": path}, content=content)
                assert written.status_code < 300, written.text
            for cmd in (["python3", "-m", "http.server", "8000"], ["python3", "/srv/ws.py"]):
                started = http.post(
                    f"/sandboxes/{sandbox_id}/processes", json={"cmd": cmd, "cwd": "/srv"}
                )
                assert started.status_code == 201, started.text
            for port in (8000, 8765):
                wait_listening(http, sandbox_id, port)
                exposed = http.post(f"/sandboxes/{sandbox_id}/ports", json={"port": port})
                assert exposed.status_code == 201, exposed.text
            yield Site(server, http, sandbox_id)
    finally:
        server.cleanup()


def test_http_through_the_host_route(site: Site) -> None:
    """Any path and query go to the guest as they are, at its root, host matched in any case."""
    page = site.get("/index.txt", site.host(8000))
    assert page.status_code == 200 and page.content == PAGE
    upper = site.get("/index.txt", site.host(8000).upper() + ":443")
    assert upper.status_code == 200 and upper.content == PAGE
    # http.server redirects a directory to its slashed path, keeping the query: both arrived.
    moved = site.get("/sub?x=1&y=%2F", site.host(8000))
    assert moved.status_code == 301 and moved.headers["location"] == "/sub/?x=1&y=%2F"
    # Even the API's own paths belong to the guest on a port host.
    api = site.get("/api/v1/health", site.host(8000))
    assert api.status_code == 404 and api.headers["content-type"].startswith("text/html")


def test_host_route_needs_the_api_key(site: Site) -> None:
    """No key or a wrong key is refused with the API's 401 JSON; the key never reaches the guest."""
    missing = httpx.get(f"{site.server.url}/index.txt", headers={"Host": site.host(8000)})
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "unauthenticated"
    wrong = site.get("/index.txt", site.host(8000), key="sk-sietch-nope")
    assert wrong.status_code == 401 and wrong.json()["error"]["message"] == "invalid API key"


def test_host_route_errors_are_the_apis(site: Site) -> None:
    """An unknown sandbox or an unexposed port is the API's 404; a port out of range its 400."""
    unknown = site.get("/", site.host(8000, "sb-000000000000"))
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "sandbox_not_found"
    unexposed = site.get("/", site.host(9999))
    assert unexposed.status_code == 404 and unexposed.json()["error"]["code"] == "not_found"
    assert "not exposed" in unexposed.json()["error"]["message"]
    bad = site.get("/", site.host(0))
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_argument"


def test_websocket_through_the_host_route(site: Site) -> None:
    """A WebSocket to ``8765-{id}.{domain}`` reaches the guest's echo server at its own path."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    url = f"ws://{site.host(8765)}:{site.server.port}/chat?room=1"

    def dial() -> socket.socket:  # the name resolves nowhere: connect to the server directly
        return socket.create_connection(("127.0.0.1", site.server.port))

    with connect(url, sock=dial(), additional_headers=site.server.headers) as ws:
        for n in range(2):
            ws.send(f"hello {n}")
            assert ws.recv(timeout=30) == f"/chat?room=1 hello {n}"
    with pytest.raises(InvalidStatus) as refused, connect(url, sock=dial()):
        pass
    assert refused.value.response.status_code == 401


def test_without_a_proxy_domain_a_port_host_is_the_api(api_server: ApiServer) -> None:
    """A server without SIETCH_PROXY_DOMAIN answers a ``{port}-{id}.`` host as its own API."""
    headers = {**api_server.headers, "Host": f"8000-sb-0123456789ab.{DOMAIN}"}
    health = httpx.get(f"{api_server.url}/api/v1/health", headers=headers, timeout=30)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    page = httpx.get(f"{api_server.url}/index.txt", headers=headers, timeout=30)
    assert page.status_code == 404 and page.json()["error"]["code"] == "not_found"
