"""Ports over the API: expose, list, unexpose, and the HTTP proxy to a guest web server."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import httpx
import pytest

from sietch.network.policy import host_addresses
from tests.server.harness import ApiServer, run, wait_listening

PAGE = b"served from the guest\n"


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
            wait_listening(http, sandbox_id, 8000)
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


def test_proxy_streams_a_large_download(web: tuple[httpx.Client, str]) -> None:
    """32 MiB come through the proxy intact; a client leaving half-way does not break it."""
    http, sandbox_id = web
    made = run(http, sandbox_id, ["sh", "-c", "head -c 33554432 /dev/urandom > /srv/big.bin"])
    assert made["exit_code"] == 0
    digest = run(http, sandbox_id, ["sha256sum", "/srv/big.bin"])["stdout"]
    assert http.post(f"/sandboxes/{sandbox_id}/ports", json={"port": 8000}).status_code == 201
    url = f"/sandboxes/{sandbox_id}/ports/8000/proxy/big.bin"
    for _ in range(3):
        with http.stream("GET", url) as partial:
            next(partial.iter_bytes(65536))
    h = hashlib.sha256()
    with http.stream("GET", url) as whole:
        assert whole.headers["content-length"] == str(32 << 20)
        for chunk in whole.iter_bytes():
            h.update(chunk)
    assert isinstance(digest, str) and digest.startswith(h.hexdigest())


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


# A WebSocket echo server on the guest's stdlib only (the image has no websockets package):
# it answers each text message with "<request path> <message>".
WS_ECHO = b"""
import base64, hashlib, socket, struct, threading

def exact(c, n):
    b = b""
    while len(b) < n:
        d = c.recv(n - len(b))
        if not d:
            raise EOFError
        b += d
    return b

def frame(op, data):
    n = len(data)
    head = bytes([0x80 | op]) + (bytes([n]) if n < 126 else b"\\x7e" + struct.pack(">H", n))
    return head + data

def handle(c):
    req = b""
    while b"\\r\\n\\r\\n" not in req:
        req += c.recv(4096)
    lines = req.split(b"\\r\\n")
    path = lines[0].split(b" ")[1]
    name = b"sec-websocket-key:"
    key = [l[len(name):].strip() for l in lines if l.lower().startswith(name)][0]
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    c.sendall(b"HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\n"
              b"Connection: Upgrade\\r\\nSec-WebSocket-Accept: " + accept + b"\\r\\n\\r\\n")
    try:
        while True:
            b0, b1 = exact(c, 2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", exact(c, 2))[0]
            mask = exact(c, 4) if b1 & 0x80 else b"\\0\\0\\0\\0"
            data = bytes(x ^ mask[i % 4] for i, x in enumerate(exact(c, n)))
            op = b0 & 0x0F
            if op == 8:
                c.sendall(frame(8, data[:2]))
                return
            if op == 9:
                c.sendall(frame(10, data))
            elif op in (1, 2):
                c.sendall(frame(op, path + b" " + data))
    except EOFError:
        pass
    finally:
        c.close()

s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8765))
s.listen()
while True:
    threading.Thread(target=handle, args=(s.accept()[0],), daemon=True).start()
"""


def test_websocket_through_the_proxy(web: tuple[httpx.Client, str], api_server: ApiServer) -> None:
    """A guest WebSocket echo server answers through its host port and through the proxy."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    http, sandbox_id = web
    written = http.put(
        f"/sandboxes/{sandbox_id}/files", params={"path": "/srv/ws_echo.py"}, content=WS_ECHO
    )
    assert written.status_code < 300, written.text
    started = http.post(
        f"/sandboxes/{sandbox_id}/processes", json={"cmd": ["python3", "/srv/ws_echo.py"]}
    )
    assert started.status_code == 201, started.text
    wait_listening(http, sandbox_id, 8765)
    mapping = http.post(f"/sandboxes/{sandbox_id}/ports", json={"port": 8765}).json()
    try:
        with connect(f"ws://127.0.0.1:{mapping['host_port']}/direct") as ws:
            ws.send("hi")
            assert ws.recv(timeout=30) == "/direct hi"
        proxy = api_server.url.replace("http", "ws", 1)
        proxy += f"/api/v1/sandboxes/{sandbox_id}/ports/8765/proxy/chat?room=1"
        with connect(proxy, additional_headers=api_server.headers) as ws:
            for n in range(3):
                ws.send(f"hello {n}")
                assert ws.recv(timeout=30) == f"/chat?room=1 hello {n}"
        with pytest.raises(InvalidStatus) as refused, connect(proxy):
            pass
        assert refused.value.response.status_code == 401
        not_ws = proxy.replace("/8765/", "/8000/")  # http.server: no WebSocket there
        http.post(f"/sandboxes/{sandbox_id}/ports", json={"port": 8000})
        with (
            pytest.raises(InvalidStatus) as bad,
            connect(not_ws, additional_headers=api_server.headers),
        ):
            pass
        assert bad.value.response.status_code == 502
    finally:
        http.delete(f"/sandboxes/{sandbox_id}/ports/8765")
        http.delete(f"/sandboxes/{sandbox_id}/ports/8000")


# Tries each address given on the command line; prints what happened (a refusal, or the
# 10 s connect timeout a silently dropped SYN ends in).
CONNECT = """
import json, socket, sys
port, out = int(sys.argv[1]), {}
for addr in sys.argv[2:]:
    try:
        socket.create_connection((addr, port), timeout=10).close()
        out[addr] = {"ok": True}
    except OSError as exc:
        out[addr] = {"ok": False, "error": type(exc).__name__, "detail": str(exc)}
print(json.dumps(out))
"""


def test_guest_cannot_reach_the_api(web: tuple[httpx.Client, str], api_server: ApiServer) -> None:
    """The Sietch API port is refused at once at slirp's gateway and at every host address."""
    http, sandbox_id = web
    addresses = ["10.0.2.2", *host_addresses()]
    assert len(addresses) > 1
    result = run(http, sandbox_id, ["python3", "-c", CONNECT, str(api_server.port), *addresses])
    assert result["exit_code"] == 0, result
    tried = json.loads(str(result["stdout"]))
    assert set(tried) == set(addresses)
    for addr, outcome in tried.items():
        assert outcome == {**outcome, "ok": False, "error": "ConnectionRefusedError"}, addr


def test_set_network_over_the_api(web: tuple[httpx.Client, str]) -> None:
    """PUT .../network normalises the allow-list and GET shows it; bad entries are 422."""
    http, sandbox_id = web
    before = http.get(f"/sandboxes/{sandbox_id}").json()["network"]
    url = f"/sandboxes/{sandbox_id}/network"
    try:
        body = {"internet": False, "allow": ["Example.COM.", "203.0.113.7"]}
        changed = http.put(url, json=body)
        assert changed.status_code == 200, changed.text
        expected = {"internet": False, "allow": ["example.com", "203.0.113.7/32"]}
        assert changed.json()["id"] == sandbox_id
        assert changed.json()["network"] == expected
        assert http.get(f"/sandboxes/{sandbox_id}").json()["network"] == expected

        bad = http.put(url, json={"allow": ["not a domain!"]})
        assert bad.status_code == 422, bad.text
        error = bad.json()["error"]
        assert error["code"] == "validation_failed" and "allow" in error["message"]
        assert "not a domain!" in error["message"]
        assert http.get(f"/sandboxes/{sandbox_id}").json()["network"] == expected

        missing = http.put("/sandboxes/sb-000000000000/network", json={"internet": True})
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "sandbox_not_found"
    finally:
        http.put(url, json=before)
