"""The route to the image's service ports (the code interpreter's) refuses what it must
without a sandbox to reach: no token, or a port that is no service's."""

from __future__ import annotations

import httpx

from sietch.images.interpreter import PORT
from tests.server.harness import ApiServer


def test_service_port_needs_the_sandbox_token(e2b_env: ApiServer) -> None:
    """A request for port 49999 without the sandbox's access token, or with a wrong one,
    is a 401 on the service route and through E2B's headers alike."""
    url = f"{e2b_env.url}/e2b/service/sb-nosuch/{PORT}/execute"
    assert httpx.post(url, json={"code": "1"}, timeout=30).status_code == 401
    wrong = {"E2B-Traffic-Access-Token": "0" * 64}
    assert httpx.post(url, json={"code": "1"}, headers=wrong, timeout=30).status_code == 401
    routed = {"E2b-Sandbox-Id": "sb-nosuch", "E2b-Sandbox-Port": str(PORT), **wrong}
    answer = httpx.post(f"{e2b_env.url}/execute", json={}, headers=routed, timeout=30)
    assert answer.status_code == 401


def test_other_ports_are_no_service(e2b_env: ApiServer) -> None:
    """The service route serves the service ports only: another is not found."""
    answer = httpx.get(f"{e2b_env.url}/e2b/service/sb-nosuch/8080/", timeout=30)
    assert answer.status_code == 404
