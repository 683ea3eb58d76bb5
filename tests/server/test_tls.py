"""HTTPS: the API, the port proxy and its WebSockets behind ``--tls-cert``/``--tls-key``."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import httpx
import pytest
from websockets.sync.client import connect

from tests.server.harness import ApiServer, wait_listening

PAGE = b"over https\n"


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """A server with a self-signed certificate for 127.0.0.1."""
    pki = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(pki / "key.pem"), "-out", str(pki / "cert.pem"),
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    server = ApiServer(tls_cert=str(pki / "cert.pem"), tls_key=str(pki / "key.pem"))
    server.start()
    yield server
    server.cleanup()


def test_api_and_port_proxy_over_https(tls_server: ApiServer) -> None:
    """Behind a certificate the API, the port proxy and the exec WebSocket speak only TLS."""
    assert tls_server.url.startswith("https://")
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{tls_server.port}/api/v1/health", timeout=5)
    with httpx.Client(
        base_url=tls_server.url + "/api/v1",
        headers=tls_server.headers,
        timeout=120,
        verify=tls_server.verify,
    ) as http:
        assert http.get("/health").status_code == 200
        sandbox_id = http.post("/sandboxes", json={}).json()["id"]
        http.put(f"/sandboxes/{sandbox_id}/files", params={"path": "/srv/x.txt"}, content=PAGE)
        http.post(
            f"/sandboxes/{sandbox_id}/processes",
            json={"cmd": ["python3", "-m", "http.server", "8000"], "cwd": "/srv"},
        )
        assert http.post(f"/sandboxes/{sandbox_id}/ports", json={"port": 8000}).status_code == 201
        wait_listening(http, sandbox_id, 8000)
        got = http.get(f"/sandboxes/{sandbox_id}/ports/8000/proxy/x.txt")
        assert got.status_code == 200 and got.content == PAGE
    # The exec WebSocket over wss, same certificate and key.
    wss = tls_server.url.replace("https://", "wss://")
    context = tls_server.verify
    assert not isinstance(context, bool)
    path = f"/api/v1/sandboxes/{sandbox_id}/exec/ws"
    # As long as the HTTP calls above may take: under load the default 10 s ran out once,
    # and websockets then hung joining its reader thread until pytest's timeout.
    with connect(
        wss + path, additional_headers=tls_server.headers, ssl=context, open_timeout=120
    ) as ws:
        ws.send(json.dumps({"type": "start", "cmd": "echo over-wss"}))
        frames = [ws.recv() for _ in range(3)]
    assert b"\x01over-wss\n" in frames, frames
