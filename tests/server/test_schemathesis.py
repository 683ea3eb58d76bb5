"""Property-based fuzzing of the whole API from its own OpenAPI document: never a 5xx."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.server.harness import ApiServer

schemathesis = pytest.importorskip("schemathesis", reason="pip install schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402 - hypothesis comes with it
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402

MAX_EXAMPLES = 15
"""Per operation; bounded so the run stays around a minute under TCG."""


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[tuple[ApiServer, str]]:
    """A server of its own (fuzzed creates are capped at 2 small VMs) and one real sandbox."""
    server = ApiServer(max_sandboxes=2, max_memory_mib=256, default_memory_mib=256)
    server.start()
    try:
        with httpx.Client(base_url=server.url + "/api/v1", headers=server.headers) as c:
            created = c.post("/sandboxes", json={}, timeout=120)
            assert created.status_code == 201, created.text
            yield server, created.json()["id"]
    finally:
        server.cleanup()


def _aim(case: Any, sandbox_id: str) -> None:
    """Send most per-sandbox requests to the real sandbox, so they reach the guest agent.

    Deterministic (a hash of the case), so hypothesis can replay a failure. The
    sandbox itself is never deleted this way.
    """
    params = case.path_parameters or {}
    deleting = case.method == "DELETE" and case.path == "/api/v1/sandboxes/{sandbox_id}"
    if "sandbox_id" in params and not deleting and zlib.crc32(repr(case).encode()) % 5:
        params["sandbox_id"] = sandbox_id


def test_no_server_errors(fuzz_server: tuple[ApiServer, str]) -> None:
    """Valid and invalid requests generated from /openapi.json never get a 5xx answer."""
    server, sandbox_id = fuzz_server
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=MAX_EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def check(case: Any) -> None:
                _aim(case, sandbox_id)
                response = case.call(base_url=server.url, headers=server.headers, timeout=120)
                # 502: the proxy reached an exposed port that nothing in the guest serves.
                bad_gateway = response.status_code == 502 and "/proxy/" in case.path
                if response.status_code >= 500 and not bad_gateway:
                    failures.append(
                        f"{case.method} {case.formatted_path} {case.query} {case.body!r:.200}"
                        f" -> {response.status_code} {response.text[:300]}"
                    )

            try:
                check()
            except Unsatisfiable:  # nothing to make invalid (an operation with no inputs)
                continue
    tracebacks = [ln for ln in server.log().splitlines() if '"exc":' in ln]
    assert not failures, "\n".join(failures[:20] + tracebacks[-3:])
