"""Ports over the API: expose, list, unexpose, and the HTTP proxy to a guest web server."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.server.harness import ApiServer

PAGE = b"served from the guest\n"


def run(http: httpx.Client, sandbox_id: str, cmd: list[str]) -> dict[str, object]:
    response = http.post(f"/sandboxes/{sandbox_id}/exec", json={"cmd": cmd})
    assert response.status_code == 200, response.text
    result: dict[str, object] = response.json()
    return result


@pytest.fixture(scope="module")
def web(api_server: ApiServer) -> Iterator[tuple[httpx.Client, str]]:
    """A sandbox running ``python3 -m http.server 8000`` in /srv, deleted afterwards."""
    with httpx.Client(
        base_url=api_server.url + "/api/v1", headers=api_server.headers, timeout=120
    ) as http:
        created = http.post("/sandboxes", json={})
        assert created.status_code == 201, created.text
        sandbox_id = created.json()["id"]
        try:
            files = f"/sandboxes/{sandbox_id}/files"
            written = http.put(files, params={"path": "/srv/index.txt"}, content=PAGE)
            assert written.status_code < 300, written.text
            started = http.post(
                f"/sandboxes/{sandbox_id}/processes",
                json={"cmd": ["python3", "-m", "http.server", "8000"], "cwd": "/srv"},
            )
            assert started.status_code == 201, started.text
            probe = "import socket; socket.create_connection(('127.0.0.1', 8000))"
            for _ in range(200):
                if run(http, sandbox_id, ["python3", "-c", probe])["exit_code"] == 0:
                    break
                time.sleep(0.1)
            yield http, sandbox_id
        finally:
            http.delete(f"/sandboxes/{sandbox_id}")


def test_expose_list_proxy_unexpose(web: tuple[httpx.Client, str]) -> None:
    """An exposed port answers on its host port and through the proxy until it is unexposed."""
    http, sandbox_id = web
    exposed = http.post(f"/sandboxes/{sandbox_id}/ports", json={"port": 8000})
    assert exposed.status_code == 201, exposed.text
    mapping = exposed.json()
    assert mapping["guest_port"] == 8000 and mapping["host"] == "127.0.0.1"
    again = http.post(f"/sandboxes/{sandbox_id}/ports", json={"port": 8000})
    assert again.json() == mapping
    assert http.get(f"/sandboxes/{sandbox_id}/ports").json() == {"data": [mapping], "count": 1}
    assert http.get(f"/sandboxes/{sandbox_id}").json()["ports"] == [mapping]

    direct = httpx.get(f"http://127.0.0.1:{mapping['host_port']}/index.txt", timeout=30)
    assert direct.status_code == 200 and direct.content == PAGE
    proxy = f"/sandboxes/{sandbox_id}/ports/8000/proxy"
    via = http.get(f"{proxy}/index.txt")
    assert via.status_code == 200 and via.content == PAGE
    assert via.headers["content-length"] == str(len(PAGE))
    assert http.get(f"{proxy}/missing.txt").status_code == 404  # the guest server's own 404
    listing = http.get(f"{proxy}/", params={"x": "1"})
    assert listing.status_code == 200 and b"index.txt" in listing.content
    posted = http.post(f"{proxy}/index.txt", content=b"x" * 100_000)
    assert posted.status_code == 501  # http.server has no POST: the guest's own answer
    unauthenticated = httpx.get(f"{str(http.base_url).rstrip('/')}{proxy}/index.txt", timeout=30)
    assert unauthenticated.status_code == 401

    gone = http.delete(f"/sandboxes/{sandbox_id}/ports/8000")
    assert gone.status_code == 204, gone.text
    assert http.get(f"/sandboxes/{sandbox_id}/ports").json() == {"data": [], "count": 0}
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{mapping['host_port']}/index.txt", timeout=30)
    assert http.get(f"{proxy}/index.txt").json()["error"]["code"] == "not_found"
    assert http.delete(f"/sandboxes/{sandbox_id}/ports/8000").status_code == 404


def test_proxy_to_a_port_nobody_listens_on_is_502(web: tuple[httpx.Client, str]) -> None:
    """An exposed port with no server behind it answers 502 bad_gateway through the proxy."""
    http, sandbox_id = web
    assert http.post(f"/sandboxes/{sandbox_id}/ports", json={"port": 8001}).status_code == 201
    try:
        answer = http.get(f"/sandboxes/{sandbox_id}/ports/8001/proxy/")
        assert answer.status_code == 502 and answer.json()["error"]["code"] == "bad_gateway"
    finally:
        http.delete(f"/sandboxes/{sandbox_id}/ports/8001")


@pytest.mark.parametrize("port", [0, 65536, -5])
def test_bad_ports_are_400(web: tuple[httpx.Client, str], port: int) -> None:
    """Ports outside 1..65535 are refused with 400 invalid_argument."""
    http, sandbox_id = web
    exposed = http.post(f"/sandboxes/{sandbox_id}/ports", json={"port": port})
    assert exposed.status_code == 400 and exposed.json()["error"]["code"] == "invalid_argument"
    removed = http.delete(f"/sandboxes/{sandbox_id}/ports/{port}")
    assert removed.status_code == 400
    proxied = http.get(f"/sandboxes/{sandbox_id}/ports/{port}/proxy/")
    assert proxied.status_code == 400


def test_ports_of_an_unknown_sandbox_are_404(http: httpx.Client) -> None:
    """Every ports route answers 404 for a sandbox that does not exist."""
    assert http.get("/sandboxes/sb-nope/ports").status_code == 404
    assert http.post("/sandboxes/sb-nope/ports", json={"port": 80}).status_code == 404
    assert http.get("/sandboxes/sb-nope/ports/80/proxy/x").status_code == 404
