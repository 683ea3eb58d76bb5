"""Everything the sync and async SDKs share: no I/O happens in this module.

Each API operation is described once, as a :class:`Call` (method, path,
parameters, how to parse the answer); the two clients only differ in how
they send it. The exec WebSocket protocol is decoded here too.
"""

from __future__ import annotations

import base64
import builtins
import enum
import json
import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx

from sietch import errors
from sietch.client._models import (
    CommandResult,
    DesktopView,
    FileInfo,
    NetworkPolicy,
    PortInfo,
    ProcessExit,
    ProcessInfo,
    SandboxInfo,
    SandboxMetrics,
    ServerInfo,
    SnapshotInfo,
    TenantInfo,
    WriteInfo,
)

T = TypeVar("T")

DEFAULT_URL: Final = "http://127.0.0.1:7000"
API: Final = "/api/v1"
CHUNK: Final = 256 * 1024
DEFAULT_TIMEOUT_S: Final = 30.0
CREATE_TIMEOUT_S: Final = 300.0
"""A cold boot under TCG on a loaded machine can take a while; the server bounds it anyway."""
WAIT_MARGIN_S: Final = 30.0
DEFAULT_SHELL: Final = "if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi"


class NotGiven(enum.Enum):
    """Sentinel type: "argument not given", as opposed to ``None`` (= no limit)."""

    NOT_GIVEN = "NOT_GIVEN"

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Final = NotGiven.NOT_GIVEN
Timeout = float | None | NotGiven
Params = Sequence[tuple[str, str | int | float | bool]]


@dataclass(frozen=True)
class RetryPolicy:
    """How politely a client retries a request the server refused for now: 429 (a limit or
    a quota) and 503 (starting, or short of memory), as E2B's SDK does.

    Each wait honours the answer's ``Retry-After`` and grows exponentially otherwise
    (with jitter, so a burst of clients does not come back at once); a call gives up
    after ``max_retries`` retries or once its waits would pass ``max_wait_s``.
    """

    max_retries: int = 10
    max_wait_s: float = 120.0
    """All waits of one call together."""
    backoff_s: float = 0.5
    """The first wait without a Retry-After; it doubles each time, up to ``cap_s``."""
    cap_s: float = 15.0

    @classmethod
    def resolve(cls, max_retries: int | None, max_wait_s: float | None) -> RetryPolicy:
        """Explicit arguments win; then ``SIETCH_MAX_RETRIES`` / ``SIETCH_RETRY_MAX_WAIT_S``."""
        env_retries = os.environ.get("SIETCH_MAX_RETRIES")
        env_wait = os.environ.get("SIETCH_RETRY_MAX_WAIT_S")
        if max_retries is None:
            max_retries = int(env_retries) if env_retries else cls.max_retries
        if max_wait_s is None:
            max_wait_s = float(env_wait) if env_wait else cls.max_wait_s
        return cls(max(max_retries, 0), max(max_wait_s, 0.0))


def retryable(exc: errors.SietchError) -> bool:
    """Refused for now, nothing done: a limit or quota, or the server unavailable. Not a
    sandbox's agent that did not answer (a command may have run)."""
    if isinstance(exc, errors.LimitExceeded):
        return True
    return isinstance(exc, errors.Unavailable) and not isinstance(exc, errors.AgentUnavailable)


class Backoff:
    """The retries of one call: how long to wait after each refusal, until the bound."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.retries = 0
        self.waited = 0.0

    def delay(self, exc: errors.SietchError, retry_after: float | None = None) -> float | None:
        """Seconds to wait before trying again; None: give up (raise ``exc``)."""
        policy = self.policy
        if not retryable(exc) or self.retries >= policy.max_retries:
            return None
        hinted = exc.details.get("retry_after", retry_after)
        try:
            hint = float(hinted) if hinted is not None else 0.0
        except (TypeError, ValueError):
            hint = 0.0
        backoff = min(policy.backoff_s * 2**self.retries, policy.cap_s)
        wait = max(hint, backoff) * random.uniform(1.0, 1.25)
        if self.waited + wait > policy.max_wait_s:
            return None
        self.retries += 1
        self.waited += wait
        return wait

    def after(self, response: httpx.Response) -> float | None:
        """The wait before retrying ``response``'s request; None when it stands as it is."""
        if response.status_code not in (429, 503):
            return None
        return self.delay(
            error_from_body(response.status_code, response.read()), _retry_after(response)
        )


def _retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (its HTTP-date form is not used by Sietch: ignored)."""
    try:
        return float(response.headers["retry-after"])
    except (KeyError, ValueError):
        return None


@dataclass(frozen=True)
class ClientConfig:
    url: str
    api_key: str | None
    timeout: float | None
    retry: RetryPolicy = RetryPolicy()

    @classmethod
    def resolve(
        cls,
        url: str | None = None,
        api_key: str | None = None,
        timeout: Timeout = NOT_GIVEN,
        *,
        max_retries: int | None = None,
        retry_max_wait_s: float | None = None,
    ) -> ClientConfig:
        """Explicit arguments win; then ``SIETCH_URL`` / ``SIETCH_API_KEY`` (and the retry
        variables of :class:`RetryPolicy`); then defaults."""
        url = (url or os.environ.get("SIETCH_URL") or DEFAULT_URL).rstrip("/")
        api_key = api_key or os.environ.get("SIETCH_API_KEY") or None
        return cls(
            url,
            api_key,
            DEFAULT_TIMEOUT_S if timeout is NOT_GIVEN else timeout,
            RetryPolicy.resolve(max_retries, retry_max_wait_s),
        )

    @property
    def headers(self) -> dict[str, str]:
        headers = {"User-Agent": "sietch-python"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def ws_url(self, path: str) -> str:
        parts = urlsplit(self.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, parts.path + API + path, "", ""))

    def http_options(self) -> dict[str, Any]:
        return {
            "base_url": self.url + API,
            "headers": self.headers,
            "timeout": httpx.Timeout(self.timeout, connect=min(self.timeout or 10.0, 10.0)),
            "follow_redirects": False,
        }


# -- errors ---------------------------------------------------------------------


def _status_table() -> dict[int, type[errors.SietchError]]:
    """The most general error class for each status, from the one error tree."""
    table: dict[int, type[errors.SietchError]] = {}
    pending: list[type[errors.SietchError]] = [errors.SietchError]
    while pending:
        cls = pending.pop(0)
        table.setdefault(cls.status, cls)
        pending.extend(cls.__subclasses__())
    return table


_BY_STATUS = _status_table()


def error_from_body(status: int, body: bytes) -> errors.SietchError:
    """The typed exception for an API error answer (``{"error": {"code", "message"}}``)."""
    try:
        payload = json.loads(body)
        err = payload["error"]
        code, message = str(err["code"]), str(err["message"])
        details = err.get("details") or {}
    except (ValueError, KeyError, TypeError):
        cls = _BY_STATUS.get(status, errors.SietchError)
        text = body.decode("utf-8", "replace").strip()[:500]
        return cls(f"HTTP {status}: {text or 'no details'}", status=status)
    exc = errors.error_for_code(code, message, **(details if isinstance(details, dict) else {}))
    if type(exc) is errors.SietchError:  # a code this SDK does not know yet: go by status
        fallback = _BY_STATUS.get(status, errors.SietchError)
        exc = fallback(message, **exc.details)
    return exc


def check_response(response: httpx.Response) -> None:
    if response.is_error:
        raise error_from_body(response.status_code, response.read())


def transport_error(exc: httpx.TransportError, config: ClientConfig) -> errors.SietchError:
    """A typed error, naming the setting to change, for failures below HTTP."""
    if isinstance(exc, httpx.TimeoutException):
        return errors.CommandTimeout(
            f"no answer from {config.url} in time ({type(exc).__name__}); "
            "pass a larger timeout= (or timeout=None for no limit)"
        )
    return errors.Unavailable(
        f"cannot reach the Sietch server at {config.url}: {exc}; "
        "is 'sietch serve' running? (set SIETCH_URL to point elsewhere)"
    )


# -- calls ----------------------------------------------------------------------


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and how to read its answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: Params | None = None
    json: Any = None
    timeout: Timeout = NOT_GIVEN

    def request_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if self.params is not None:
            opts["params"] = list(self.params)
        if self.json is not None:
            opts["json"] = self.json
        if self.timeout is not NOT_GIVEN:
            opts["timeout"] = self.timeout
        return opts


def _none(_: httpx.Response) -> None:
    return None


def _model(cls: type[T]) -> Callable[[httpx.Response], T]:
    def parse(response: httpx.Response) -> T:
        return cls.model_validate_json(response.content)  # type: ignore[attr-defined,no-any-return]

    return parse


def _models(cls: type[T]) -> Callable[[httpx.Response], list[T]]:
    def parse(response: httpx.Response) -> list[T]:
        return [cls.model_validate(item) for item in response.json()["data"]]  # type: ignore[attr-defined]

    return parse


def _exec_result(response: httpx.Response) -> CommandResult:
    body = response.json()
    return CommandResult(
        exit_code=body["exit_code"],
        stdout_bytes=base64.b64decode(body["stdout"]),
        stderr_bytes=base64.b64decode(body["stderr"]),
        signal=body.get("signal"),
        timed_out=body.get("timed_out", False),
        truncated=body.get("truncated", False),
        duration_s=body.get("duration_s", 0.0),
        pid=body.get("pid"),
    )


def _drop_none(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def _plus_margin(timeout: float | None) -> float | None:
    return None if timeout is None else timeout + WAIT_MARGIN_S


def as_command(cmd: str | Sequence[str]) -> str | list[str]:
    return cmd if isinstance(cmd, str) else [str(a) for a in cmd]


def as_bytes(data: bytes | str) -> bytes:
    return data.encode() if isinstance(data, str) else bytes(data)


def network_policy(internet: bool | None, allow: Sequence[str] | None) -> NetworkPolicy | None:
    """The policy a call asks for; None (the server's default) when it names neither part."""
    if internet is None and allow is None:
        return None
    return NetworkPolicy(internet=True if internet is None else internet, allow=list(allow or []))


class Ops:
    """Builders for every request of the API."""

    @staticmethod
    def health() -> Call[dict[str, Any]]:
        return Call("GET", "/health", lambda r: r.json())

    @staticmethod
    def info() -> Call[ServerInfo]:
        return Call("GET", "/info", _model(ServerInfo))

    @staticmethod
    def tenant() -> Call[TenantInfo]:
        return Call("GET", "/tenant", _model(TenantInfo))

    @staticmethod
    def create(
        *,
        image: str | None,
        vcpus: int | None,
        memory_mib: int | None,
        disk_mib: int | None,
        env: Mapping[str, str] | None,
        labels: Mapping[str, str] | None,
        timeout_s: float | None,
        request_timeout: Timeout,
        template: str | None = "auto",
        network: NetworkPolicy | None = None,
        timeouts: Mapping[str, Any] | None = None,
        resolution: tuple[int, int] | None = None,
        dpi: int | None = None,
        prefer_node: str | None = None,
    ) -> Call[SandboxInfo]:
        body = _drop_none(
            **(timeouts or {}),
            image=image,
            vcpus=vcpus,
            memory_mib=memory_mib,
            disk_mib=disk_mib,
            env=dict(env) if env else None,
            labels=dict(labels) if labels else None,
            timeout_s=timeout_s,
            network=network.model_dump() if network else None,
            resolution=list(resolution) if resolution else None,
            dpi=dpi,
            prefer_node=prefer_node,
        )
        if template != "auto":
            body["template"] = template
        timeout = CREATE_TIMEOUT_S if request_timeout is NOT_GIVEN else request_timeout
        return Call("POST", "/sandboxes", _model(SandboxInfo), json=body, timeout=timeout)

    @staticmethod
    def get(sandbox_id: str) -> Call[SandboxInfo]:
        return Call("GET", f"/sandboxes/{sandbox_id}", _model(SandboxInfo))

    @staticmethod
    def list(labels: Mapping[str, str] | None) -> Call[list[SandboxInfo]]:
        params = [("label", f"{k}={v}") for k, v in (labels or {}).items()]
        return Call("GET", "/sandboxes", _models(SandboxInfo), params=params)

    @staticmethod
    def delete(sandbox_id: str) -> Call[None]:
        return Call("DELETE", f"/sandboxes/{sandbox_id}", _none, timeout=60.0)

    @staticmethod
    def pause(sandbox_id: str) -> Call[SandboxInfo]:
        return Call("POST", f"/sandboxes/{sandbox_id}/pause", _model(SandboxInfo))

    @staticmethod
    def resume(sandbox_id: str) -> Call[SandboxInfo]:
        return Call("POST", f"/sandboxes/{sandbox_id}/resume", _model(SandboxInfo), timeout=120.0)

    @staticmethod
    def hibernate(sandbox_id: str) -> Call[SandboxInfo]:
        return Call(
            "POST", f"/sandboxes/{sandbox_id}/hibernate", _model(SandboxInfo), timeout=120.0
        )

    @staticmethod
    def set_timeout(sandbox_id: str, changes: Mapping[str, Any]) -> Call[SandboxInfo]:
        path = f"/sandboxes/{sandbox_id}/timeout"
        return Call("POST", path, _model(SandboxInfo), json=dict(changes))

    @staticmethod
    def snapshot(
        sandbox_id: str,
        name: str | None,
        labels: Mapping[str, str] | None,
        ttl_s: float | None = None,
    ) -> Call[SnapshotInfo]:
        body = _drop_none(name=name, labels=dict(labels) if labels else None, ttl_s=ttl_s)
        return Call(
            "POST",
            f"/sandboxes/{sandbox_id}/snapshots",
            _model(SnapshotInfo),
            json=body,
            timeout=120.0,
        )

    @staticmethod
    def fork(
        sandbox_id: str, count: int, labels: Mapping[str, str] | None
    ) -> Call[builtins.list[SandboxInfo]]:
        body = _drop_none(count=count, labels=dict(labels) if labels else None)
        return Call(
            "POST", f"/sandboxes/{sandbox_id}/fork", _models(SandboxInfo), json=body,
            timeout=CREATE_TIMEOUT_S,
        )  # fmt: skip

    @staticmethod
    def restore(
        snapshot_id: str,
        *,
        labels: Mapping[str, str] | None,
        env: Mapping[str, str] | None,
        hostname: str | None,
        timeout_s: float | None,
        network: NetworkPolicy | None = None,
        timeouts: Mapping[str, Any] | None = None,
        prefer_node: str | None = None,
    ) -> Call[SandboxInfo]:
        body = _drop_none(
            **(timeouts or {}),
            labels=dict(labels) if labels else None,
            env=dict(env) if env else None,
            hostname=hostname,
            timeout_s=timeout_s,
            network=network.model_dump() if network else None,
            prefer_node=prefer_node,
        )
        return Call(
            "POST", f"/snapshots/{snapshot_id}/restore", _model(SandboxInfo), json=body,
            timeout=CREATE_TIMEOUT_S,
        )  # fmt: skip

    @staticmethod
    def list_snapshots(templates: bool) -> Call[builtins.list[SnapshotInfo]]:
        params = [("templates", "true")] if templates else []
        return Call("GET", "/snapshots", _models(SnapshotInfo), params=params)

    @staticmethod
    def get_snapshot(snapshot_id: str) -> Call[SnapshotInfo]:
        return Call("GET", f"/snapshots/{snapshot_id}", _model(SnapshotInfo))

    @staticmethod
    def delete_snapshot(snapshot_id: str, subtree: bool = False) -> Call[None]:
        params = [("subtree", "true")] if subtree else []
        return Call("DELETE", f"/snapshots/{snapshot_id}", _none, params, timeout=60.0)

    @staticmethod
    def expose(sandbox_id: str, port: int) -> Call[PortInfo]:
        body = {"port": port}
        return Call("POST", f"/sandboxes/{sandbox_id}/ports", _model(PortInfo), json=body)

    @staticmethod
    def unexpose(sandbox_id: str, port: int) -> Call[None]:
        return Call("DELETE", f"/sandboxes/{sandbox_id}/ports/{port}", _none)

    @staticmethod
    def set_network(sandbox_id: str, network: NetworkPolicy) -> Call[SandboxInfo]:
        path = f"/sandboxes/{sandbox_id}/network"
        return Call("PUT", path, _model(SandboxInfo), json=network.model_dump())

    @staticmethod
    def ports(sandbox_id: str) -> Call[builtins.list[PortInfo]]:
        return Call("GET", f"/sandboxes/{sandbox_id}/ports", _models(PortInfo))

    @staticmethod
    def desktop_view(sandbox_id: str, view_only: bool, ttl: float | None) -> Call[DesktopView]:
        params: Params = [("view_only", view_only), *([("ttl", ttl)] if ttl is not None else [])]
        path = f"/sandboxes/{sandbox_id}/desktop"
        return Call("GET", path, _model(DesktopView), params, timeout=90.0)

    @staticmethod
    def ide_url(sandbox_id: str, folder: str | None, ttl: float | None) -> Call[str]:
        params: Params = [
            *([("folder", folder)] if folder else []),
            *([("ttl", ttl)] if ttl else []),
        ]
        return Call("GET", f"/sandboxes/{sandbox_id}/ide", lambda r: str(r.json()["url"]), params)

    @staticmethod
    def revoke_links(sandbox_id: str, purpose: str | None) -> Call[int]:
        params: Params = [("purpose", purpose)] if purpose else []
        path = f"/sandboxes/{sandbox_id}/links"
        return Call("DELETE", path, lambda r: int(r.json()["revoked"]), params)

    @staticmethod
    def metrics(sandbox_id: str) -> Call[SandboxMetrics]:
        return Call("GET", f"/sandboxes/{sandbox_id}/metrics", _model(SandboxMetrics))

    @staticmethod
    def logs(sandbox_id: str, limit: int) -> Call[str]:
        return Call("GET", f"/sandboxes/{sandbox_id}/logs", lambda r: r.text, [("limit", limit)])

    @staticmethod
    def exec(
        sandbox_id: str,
        cmd: str | Sequence[str],
        *,
        env: Mapping[str, str] | None,
        cwd: str | None,
        user: str | int | None,
        timeout: float | None,
        stdin: bytes | str | None,
    ) -> Call[CommandResult]:
        body = _drop_none(
            cmd=as_command(cmd),
            env=dict(env) if env else None,
            cwd=cwd,
            user=user,
            timeout=timeout,
            stdin=None if stdin is None else base64.b64encode(as_bytes(stdin)).decode(),
            encoding="base64",
        )
        return Call(
            "POST",
            f"/sandboxes/{sandbox_id}/exec",
            _exec_result,
            json=body,
            timeout=_plus_margin(timeout),
        )

    @staticmethod
    def start_process(
        sandbox_id: str,
        cmd: str | Sequence[str],
        *,
        env: Mapping[str, str] | None,
        cwd: str | None,
        user: str | int | None,
        tag: str | None,
        timeout: float | None,
    ) -> Call[ProcessInfo]:
        body = _drop_none(
            cmd=as_command(cmd),
            env=dict(env) if env else None,
            cwd=cwd,
            user=user,
            tag=tag,
            timeout=timeout,
        )
        return Call("POST", f"/sandboxes/{sandbox_id}/processes", _model(ProcessInfo), json=body)

    @staticmethod
    def list_processes(sandbox_id: str) -> Call[builtins.list[ProcessInfo]]:
        return Call("GET", f"/sandboxes/{sandbox_id}/processes", _models(ProcessInfo))

    @staticmethod
    def signal(sandbox_id: str, pid: int, signal: int | str) -> Call[None]:
        path = f"/sandboxes/{sandbox_id}/processes/{pid}/signal"
        return Call("POST", path, _none, json={"signal": signal})

    @staticmethod
    def wait(sandbox_id: str, pid: int, timeout: float | None) -> Call[ProcessExit]:
        params = [] if timeout is None else [("timeout", timeout)]
        path = f"/sandboxes/{sandbox_id}/processes/{pid}/wait"

        def parse(response: httpx.Response) -> ProcessExit:
            ended = ProcessExit.model_validate_json(response.content)
            if ended.running:
                raise errors.CommandTimeout(
                    f"process {pid} is still running after {timeout}s; "
                    "wait longer (timeout=) or kill it"
                )
            return ended

        return Call("POST", path, parse, params, timeout=_plus_margin(timeout))

    @staticmethod
    def list_files(sandbox_id: str, path: str, depth: int) -> Call[builtins.list[FileInfo]]:
        params: Params = [("path", path), ("depth", depth)]
        return Call("GET", f"/sandboxes/{sandbox_id}/files/list", _models(FileInfo), params)

    @staticmethod
    def stat(sandbox_id: str, path: str) -> Call[FileInfo]:
        params = [("path", path)]
        return Call("GET", f"/sandboxes/{sandbox_id}/files/stat", _model(FileInfo), params)

    @staticmethod
    def mkdir(sandbox_id: str, path: str, parents: bool) -> Call[FileInfo]:
        body = {"path": path, "parents": parents}
        return Call("POST", f"/sandboxes/{sandbox_id}/files/mkdir", _model(FileInfo), json=body)

    @staticmethod
    def remove(sandbox_id: str, path: str, recursive: bool) -> Call[None]:
        params: Params = [("path", path), ("recursive", recursive)]
        return Call("DELETE", f"/sandboxes/{sandbox_id}/files", _none, params)

    @staticmethod
    def rename(sandbox_id: str, src: str, dst: str, overwrite: bool) -> Call[FileInfo]:
        body = {"src": src, "dst": dst, "overwrite": overwrite}
        return Call("POST", f"/sandboxes/{sandbox_id}/files/rename", _model(FileInfo), json=body)

    @staticmethod
    def write(sandbox_id: str, path: str, mode: int | None) -> Call[WriteInfo]:
        """The upload's request; the caller supplies the streamed body."""
        params: Params = [("path", path)] if mode is None else [("path", path), ("mode", mode)]
        return Call(
            "PUT", f"/sandboxes/{sandbox_id}/files", _model(WriteInfo), params, timeout=None
        )

    @staticmethod
    def read(sandbox_id: str, path: str) -> Call[None]:
        """The download's request; the caller streams the answer's body."""
        return Call("GET", f"/sandboxes/{sandbox_id}/files", _none, [("path", path)], timeout=None)


# -- the exec WebSocket ----------------------------------------------------------


def start_message(
    cmd: str | Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    user: str | int | None = None,
    timeout: float | None = None,
    pty: bool = False,
    cols: int = 80,
    rows: int = 24,
    stdin: bool = False,
) -> str:
    msg = _drop_none(
        type="start",
        cmd=as_command(cmd),
        env=dict(env) if env else None,
        cwd=cwd,
        user=user,
        timeout=timeout,
    )
    msg.update(pty=pty, stdin=stdin or pty, encoding="binary")
    if pty:
        msg.update(cols=cols, rows=rows)
    return json.dumps(msg)


def attach_message(pid: int) -> str:
    return json.dumps({"type": "attach", "pid": pid, "encoding": "binary"})


def control(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields})


@dataclass
class StreamState:
    """Decodes the server's exec messages; feed it every message received."""

    pid: int | None = None
    result: CommandResult | None = None
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    capture: bool = True

    def feed(self, message: str | bytes) -> tuple[int, bytes] | None:
        """Returns ``(channel, data)`` for output, None for anything else; raises errors."""
        if isinstance(message, bytes):
            channel, data = message[0], message[1:]
            if self.capture:
                (self.stderr if channel == 2 else self.stdout).extend(data)
            return channel, data
        msg = json.loads(message)
        kind = msg.get("type")
        if kind == "started":
            self.pid = int(msg["pid"])
        elif kind == "exit":
            self.result = CommandResult(
                exit_code=msg.get("exit_code"),
                stdout_bytes=bytes(self.stdout),
                stderr_bytes=bytes(self.stderr),
                signal=msg.get("signal"),
                timed_out=bool(msg.get("timed_out")),
                duration_s=float(msg.get("duration_s") or 0.0),
                pid=self.pid,
            )
        elif kind == "error":
            err = msg.get("error", {})
            raise errors.error_for_code(err.get("code", "internal"), err.get("message", "error"))
        elif kind == "output":
            data = base64.b64decode(msg["data"])
            return self.feed(bytes((int(msg["channel"]),)) + data)
        return None

    def ended_early(self) -> errors.SietchError:
        return errors.Unavailable("the exec connection closed before the command ended")


def handshake_error(status: int, body: bytes | bytearray | None) -> errors.SietchError:
    return error_from_body(status, bytes(body or b""))
