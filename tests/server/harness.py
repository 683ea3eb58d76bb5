"""A real Sietch server in a subprocess on a free loopback port, for the API tests.

The server runs as ``python -m sietch.server`` with settings from the
environment, exactly as a user would run it, and keeps its log in its state
directory. VMs are persistent (they outlive the server, which is what the
restart test needs), so :meth:`ApiServer.cleanup` deletes every sandbox
through the API and then reaps whatever is left with a non-persistent manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tenacity import Retrying, retry, retry_if_exception_type, stop_after_delay, wait_fixed

from sietch.config import Settings
from sietch.core.manager import Manager
from sietch.core.tenants import Tenants
from tests.conftest import RESULTS, short_tmpdir

START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServerNotUp(Exception):
    pass


class ApiServer:
    """One server process; ``start()`` may be called again after ``stop()`` (a restart)."""

    def __init__(
        self,
        state_dir: Path | None = None,
        *,
        api_key: str | None = None,
        **settings: str | int | float,
    ) -> None:
        """``api_key``: the key requests use (one the state dir has already); default: a new
        admin key of tenant ``default``."""
        self.state_dir = state_dir or short_tmpdir("sta")
        # QEMU runs as an unprivileged user when we are root: it must reach its work dir.
        self.state_dir.chmod(0o755)
        self.port = free_port()
        self.settings = {k: str(v) for k, v in settings.items()}
        self._tenants: Tenants | None = None
        self.api_key = api_key or self.tenants.create_key("default", "tests", admin=True)[1]
        self.log_path = self.state_dir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def tenants(self) -> Tenants:
        """The server's tenants catalog, changed while it runs (as ``sietch keys`` does)."""
        if self._tenants is None:
            self._tenants = Tenants(self.state_dir / "tenants.db")
        return self._tenants

    @property
    def url(self) -> str:
        scheme = "https" if "tls_cert" in self.settings else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What clients trust: the server's own certificate when it serves HTTPS."""
        cert = self.settings.get("tls_cert")
        return ssl.create_default_context(cafile=cert) if cert else True

    @property
    def env(self) -> dict[str, str]:
        """Environment for SDK/CLI processes that talk to this server."""
        return {**os.environ, "SIETCH_URL": self.url, "SIETCH_API_KEY": self.api_key}

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def start(self) -> None:
        env = {
            **os.environ,
            "SIETCH_STATE_DIR": str(self.state_dir),
            "SIETCH_HOST": "127.0.0.1",
            "SIETCH_PORT": str(self.port),
            **{f"SIETCH_{k.upper()}": v for k, v in self.settings.items()},
        }
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sietch.server"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            self._wait_healthy()
        except Exception:
            self.stop()
            raise RuntimeError(f"server did not start; log:\n{self.log()[-4000:]}") from None

    @retry(
        stop=stop_after_delay(START_TIMEOUT_S),
        wait=wait_fixed(0.1),
        retry=retry_if_exception_type((httpx.TransportError, ServerNotUp)),
        reraise=True,
    )
    def _wait_healthy(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"server exited with {self.proc.returncode}")
        response = httpx.get(f"{self.url}/api/v1/health", timeout=2.0, verify=self.verify)
        if response.status_code != 200:
            raise ServerNotUp(response.text)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 15.0) -> None:
        """Stop the server process (its VMs keep running: they are persistent)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def cleanup(self, keep_log: Path | None = None) -> None:
        """Delete every sandbox, stop the server, kill any VM left, remove the state (its
        log copied to ``keep_log`` first: a failure seen in a long run can be read after)."""
        if self.proc is not None and self.proc.poll() is None:
            with (
                contextlib.suppress(httpx.HTTPError),
                httpx.Client(
                    base_url=self.url, headers=self.headers, timeout=60, verify=self.verify
                ) as c,
            ):
                for sb in c.get("/api/v1/sandboxes").json().get("data", []):
                    c.delete(f"/api/v1/sandboxes/{sb['id']}")
        self.stop()
        if self._tenants is not None:
            self._tenants.close()
        asyncio.run(_reap(self.state_dir))
        if keep_log is not None and self.log_path.exists():
            keep_log.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(self.log_path, keep_log)
        shutil.rmtree(self.state_dir, ignore_errors=True)


async def _reap(state_dir: Path) -> None:
    # A non-persistent manager kills the VMs it finds instead of adopting them.
    async with Manager(Settings(state_dir=state_dir), persistent=False):
        pass


def run(http: httpx.Client, sandbox_id: str, cmd: list[str]) -> dict[str, object]:
    """Run ``cmd`` in the sandbox to completion through the API; its JSON result."""
    response = http.post(f"/sandboxes/{sandbox_id}/exec", json={"cmd": cmd})
    assert response.status_code == 200, response.text
    result: dict[str, object] = response.json()
    return result


def wait_listening(http: httpx.Client, sandbox_id: str, port: int) -> None:
    """Wait until something in the sandbox accepts TCP connections on ``port``."""
    probe = ["python3", "-c", f"import socket; socket.create_connection(('127.0.0.1', {port}))"]
    for attempt in Retrying(stop=stop_after_delay(60), wait=wait_fixed(0.1), reraise=True):
        with attempt:
            assert run(http, sandbox_id, probe)["exit_code"] == 0, f"nothing on guest port {port}"


@pytest.fixture(scope="package")
def api_server(request: pytest.FixtureRequest) -> Iterator[ApiServer]:
    """One real server for a test directory, ended with it (so that servers and their warm
    pools don't pile up over a run); every sandbox is gone after it, its log kept under
    test-results/servers/."""
    server = ApiServer()
    server.start()
    yield server
    server.cleanup(keep_log=RESULTS / "servers" / f"{request.node.name}.log")


@pytest.fixture
def http(api_server: ApiServer) -> Iterator[httpx.Client]:
    """A raw HTTP client with the server's API key."""
    with httpx.Client(
        base_url=api_server.url + "/api/v1", headers=api_server.headers, timeout=120
    ) as client:
        yield client
