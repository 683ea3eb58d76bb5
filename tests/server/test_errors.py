"""Bad input through raw HTTP: clear 4xx errors in one shape, and the server keeps serving."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tenacity import retry, retry_if_result, stop_after_delay, wait_fixed

from sietch.core.models import SandboxInfo, SandboxState
from sietch.core.pool import is_pooled
from sietch.core.store import Store
from tests.server.harness import ApiServer


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, str]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()["error"]
    assert body["code"] == code, body
    assert body["message"]
    assert "Traceback" not in response.text
    return body


@pytest.fixture(scope="module")
def sandbox_id(api_server: ApiServer) -> Iterator[str]:
    with httpx.Client(base_url=api_server.url + "/api/v1", headers=api_server.headers) as c:
        response = c.post("/sandboxes", json={}, timeout=120)
        assert response.status_code == 201, response.text
        sandbox_id = response.json()["id"]
        yield sandbox_id
        c.delete(f"/sandboxes/{sandbox_id}", timeout=60)


def test_health_needs_no_key(api_server: ApiServer) -> None:
    """/health answers without an API key (for load balancers and probes)."""
    response = httpx.get(api_server.url + "/api/v1/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_auth_no_key_wrong_key_right_key(api_server: ApiServer) -> None:
    """No key -> 401, wrong key -> 401, the right key -> 200."""
    url = api_server.url + "/api/v1/sandboxes"
    missing = httpx.get(url)
    assert_error(missing, 401, "unauthenticated")
    assert missing.headers["www-authenticate"] == "Bearer"
    assert_error(
        httpx.get(url, headers={"Authorization": "Bearer sk-nope"}), 401, "unauthenticated"
    )
    assert httpx.get(url, headers=api_server.headers).status_code == 200


def test_malformed_json_is_400(http: httpx.Client) -> None:
    """A body that is not JSON is a 400 that says so."""
    response = http.post(
        "/sandboxes", content=b'{"vcpus": 1', headers={"content-type": "application/json"}
    )
    body = assert_error(response, 400, "invalid_argument")
    assert "JSON" in body["message"]


def test_wrong_type_is_422(http: httpx.Client) -> None:
    """A field of the wrong type (even a numeric string) is refused with the field named."""
    body = assert_error(http.post("/sandboxes", json={"vcpus": "2"}), 422, "validation_failed")
    assert "vcpus" in body["message"]


def test_unknown_field_is_422(http: httpx.Client) -> None:
    """A misspelt option is an error, not silently ignored."""
    body = assert_error(http.post("/sandboxes", json={"vcpu": 2}), 422, "validation_failed")
    assert "vcpu" in body["message"]


def test_out_of_range_values_are_rejected(http: httpx.Client) -> None:
    """Limits come from the server's settings: too many vCPUs is a 400 naming the limit."""
    body = assert_error(http.post("/sandboxes", json={"vcpus": 1000}), 400, "invalid_argument")
    assert "vcpus" in body["message"]


def test_huge_json_body_is_413(http: httpx.Client) -> None:
    """A JSON body over SIETCH_MAX_REQUEST_BYTES is refused before it is read."""
    big = json.dumps({"env": {"X": "x" * (2 << 20)}})
    body = assert_error(http.post("/sandboxes", content=big), 413, "payload_too_large")
    assert "SIETCH_MAX_REQUEST_BYTES" in body["message"]


def test_huge_chunked_body_is_413(http: httpx.Client) -> None:
    """Without a Content-Length the limit is enforced while the body streams in."""

    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b" " * 65536

    response = http.post(
        "/sandboxes", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_error(response, 413, "payload_too_large")


def test_unknown_sandbox_is_404(http: httpx.Client) -> None:
    """Every per-sandbox endpoint answers 404 sandbox_not_found for an unknown id."""
    for method, path, kwargs in [
        ("GET", "/sandboxes/sb-000000000000", {}),
        ("DELETE", "/sandboxes/sb-000000000000", {}),
        ("POST", "/sandboxes/sb-000000000000/exec", {"json": {"cmd": "true"}}),
        ("GET", "/sandboxes/sb-000000000000/files", {"params": {"path": "/etc/hostname"}}),
        ("GET", "/sandboxes/sb-000000000000/processes", {}),
        ("GET", "/sandboxes/%2E%2E", {}),
    ]:
        response = http.request(method, path, **kwargs)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] in ("sandbox_not_found", "not_found")


def test_command_on_deleted_sandbox_is_404(http: httpx.Client) -> None:
    """After DELETE, commands on the sandbox are 404 (not 500, not a hang)."""
    created = http.post("/sandboxes", json={"metadata": {"test": "deleted"}})
    assert created.status_code == 201, created.text
    sandbox_id = created.json()["id"]
    assert http.delete(f"/sandboxes/{sandbox_id}").status_code == 204
    assert_error(
        http.post(f"/sandboxes/{sandbox_id}/exec", json={"cmd": "true"}), 404, "sandbox_not_found"
    )
    assert_error(http.delete(f"/sandboxes/{sandbox_id}"), 404, "sandbox_not_found")


def test_dotdot_path_is_400(http: httpx.Client, sandbox_id: str) -> None:
    """A file path with '..' parts is refused, in the query and in JSON bodies."""
    base = f"/sandboxes/{sandbox_id}/files"
    assert_error(http.get(base, params={"path": "/tmp/../etc/shadow"}), 400, "invalid_argument")
    assert_error(http.put(base, params={"path": "../x"}, content=b"x"), 400, "invalid_argument")
    response = http.post(f"{base}/rename", json={"src": "/tmp/a", "dst": "/tmp/../../b"})
    assert_error(response, 400, "invalid_argument")


def test_non_utf8_path_is_400(http: httpx.Client, sandbox_id: str) -> None:
    """A path whose bytes are not UTF-8 is refused rather than silently changed."""
    response = http.get(f"/sandboxes/{sandbox_id}/files?path=/tmp/%FF%FEname")
    body = assert_error(response, 400, "invalid_argument")
    assert "UTF-8" in body["message"]


def test_listing_shows_non_utf8_names_replaced(http: httpx.Client, sandbox_id: str) -> None:
    """A guest file whose name is not UTF-8 is listed (with U+FFFD), not a 500."""
    made = http.post(
        f"/sandboxes/{sandbox_id}/exec",
        json={"cmd": "mkdir -p /tmp/nu && touch \"/tmp/nu/a$(printf '\\377')b\""},
    )
    assert made.json()["exit_code"] == 0, made.text
    listed = http.get(f"/sandboxes/{sandbox_id}/files/list", params={"path": "/tmp/nu"})
    assert listed.status_code == 200, listed.text
    assert [e["name"] for e in listed.json()["data"]] == ["a\ufffdb"]


def test_binary_file_round_trips(http: httpx.Client, sandbox_id: str) -> None:
    """File bodies are raw bytes: content that is not UTF-8 comes back exactly."""
    data = bytes(range(256)) * 1000
    put = http.put(f"/sandboxes/{sandbox_id}/files", params={"path": "/tmp/bin"}, content=data)
    assert put.status_code == 200, put.text
    assert put.json()["size"] == len(data)
    got = http.get(f"/sandboxes/{sandbox_id}/files", params={"path": "/tmp/bin"})
    assert got.status_code == 200
    assert got.content == data


def test_missing_file_is_404(http: httpx.Client, sandbox_id: str) -> None:
    """Downloading a file that does not exist is 404 file_not_found, not a torn 200."""
    response = http.get(f"/sandboxes/{sandbox_id}/files", params={"path": "/nope/nothing"})
    assert_error(response, 404, "file_not_found")


def test_exec_bad_base64_stdin_is_400(http: httpx.Client, sandbox_id: str) -> None:
    """stdin declared base64 but not base64 is a 400."""
    response = http.post(
        f"/sandboxes/{sandbox_id}/exec",
        json={"cmd": "cat", "stdin": "***", "encoding": "base64"},
    )
    assert_error(response, 400, "invalid_argument")


def test_exec_returns_output_and_status(http: httpx.Client, sandbox_id: str) -> None:
    """The blocking exec returns stdout, stderr, exit code and duration."""
    response = http.post(
        f"/sandboxes/{sandbox_id}/exec",
        json={"cmd": "echo out; echo err >&2; exit 3"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["stdout"], body["stderr"], body["exit_code"]) == ("out\n", "err\n", 3)
    assert body["duration_s"] > 0
    assert body["timed_out"] is False


def test_unknown_route_and_method_same_shape(http: httpx.Client) -> None:
    """Routing errors (404, 405) use the same JSON error shape."""
    assert_error(http.get("/nothing-here"), 404, "not_found")
    assert_error(http.patch("/sandboxes"), 405, "method_not_allowed")


def test_create_rate_limit_is_429() -> None:
    """Creates beyond SIETCH_CREATE_BURST are refused with 429 and Retry-After."""
    server = ApiServer(create_burst=1, create_rate_per_min=1)
    server.start()
    try:
        with httpx.Client(base_url=server.url + "/api/v1", headers=server.headers) as c:
            # An unknown image fails fast but still spends the token.
            assert_error(c.post("/sandboxes", json={"image": "no-such"}), 404, "image_not_found")
            response = c.post("/sandboxes", json={"image": "no-such"})
            assert_error(response, 429, "limit_exceeded")
            assert int(response.headers["retry-after"]) >= 1
            assert c.get("/health").status_code == 200
    finally:
        server.cleanup()


def test_server_keeps_serving_and_logs_each_request(
    http: httpx.Client, api_server: ApiServer
) -> None:
    """After all the bad input the server still answers, and logged a JSON line per request."""
    assert http.get("/info").status_code == 200
    lines = [json.loads(ln) for ln in api_server.log().splitlines() if ln.startswith("{")]
    access = [ln for ln in lines if ln.get("logger") == "sietch.server.access"]
    assert access, "no access log lines"
    assert all("latency_ms" in ln and "status" in ln for ln in access)
    assert any(ln["status"] == 413 for ln in access)


def test_info_reports_version_accel_and_limits(http: httpx.Client) -> None:
    """/info tells a client what it may ask for."""
    body = http.get("/info").json()
    assert body["accel"] in ("kvm", "tcg")
    assert body["auth"] is True
    assert body["limits"]["max_request_bytes"] > 0


def test_metrics_are_prometheus(api_server: ApiServer, sandbox_id: str) -> None:
    """/metrics has sandboxes by state, create/exec histograms and the error counter."""
    response = httpx.get(api_server.url + "/metrics", headers=api_server.headers)
    assert response.status_code == 200
    text = response.text
    assert 'sietch_sandboxes{state="running"}' in text
    assert "sietch_sandbox_create_seconds_bucket" in text
    assert "sietch_exec_seconds" in text
    assert "sietch_errors_total" in text
    assert httpx.get(api_server.url + "/metrics").status_code == 401


@retry(
    stop=stop_after_delay(180), wait=wait_fixed(0.5), retry=retry_if_result(lambda found: not found)
)
def _pooled(server: ApiServer) -> list[SandboxInfo]:
    """The server's warm-pool VMs, read from its own store, once it has made one."""
    store = Store(server.state_dir / "sietch.db")
    try:
        return [info for info in store.all() if is_pooled(info)]
    finally:
        store.close()


def test_metrics_leave_out_the_warm_pool(
    api_server: ApiServer, http: httpx.Client, sandbox_id: str
) -> None:
    """A warm-pool VM, hidden from listings, is not counted in sietch_sandboxes either."""
    pooled = {info.id for info in _pooled(api_server)}  # the create made a template and a pool
    listed = http.get("/sandboxes").json()["data"]
    assert sandbox_id in {sb["id"] for sb in listed}
    assert not pooled & {sb["id"] for sb in listed}
    text = httpx.get(api_server.url + "/metrics", headers=api_server.headers).text
    (family,) = (f for f in text_string_to_metric_families(text) if f.name == "sietch_sandboxes")
    counted = {sample.labels["state"]: sample.value for sample in family.samples}
    by_state = Counter(sb["state"] for sb in listed)
    assert counted == {state.value: by_state[state.value] for state in SandboxState}


def test_openapi_operation_ids(api_server: ApiServer) -> None:
    """Operation ids read as "{tag}-{name}" so generated clients have good names."""
    spec = httpx.get(api_server.url + "/openapi.json").json()
    ids = {op["operationId"] for path in spec["paths"].values() for op in path.values()}
    assert {"sandboxes-create", "exec-run", "files-write", "processes-wait"} <= ids
