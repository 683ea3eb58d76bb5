"""Who may use the E2B API: the REST API takes a Sietch API key in ``X-API-KEY`` (E2B's
header) or as a Bearer token; envd takes the sandbox's own access token in
``X-Access-Token``, handed out at create and connect, or a file URL signed with it (E2B's
``download_url``/``upload_url``).

The access token is an HMAC of the sandbox id under a secret kept in the state directory,
so it needs no table and survives a server restart (sandboxes are persistent); no envd
route is open without it, even with authentication off.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

from fastapi.security import APIKeyHeader
from starlette.requests import HTTPConnection

from sietch.core.tenants import Caller
from sietch.errors import AuthenticationError
from sietch.server.auth import bearer_key, resolve
from sietch.server.state import ServerState

TOKEN_HEADER = "x-access-token"
FILES_PATH = "/files"
SECRET_FILE = "e2b_envd.secret"


def authenticate(conn: HTTPConnection) -> Caller:
    key = conn.headers.get("x-api-key") or bearer_key(conn)
    return resolve(conn, key, "missing API key: send 'X-API-KEY: <key>' (E2B_API_KEY)")


class E2bApiKey(APIKeyHeader):
    """Declared as an API-key header so /docs offers it."""

    async def __call__(self, conn: HTTPConnection) -> Caller:  # type: ignore[override]
        return authenticate(conn)


require_key = E2bApiKey(
    name="X-API-KEY",
    auto_error=False,
    scheme_name="E2bApiKey",
    description="A Sietch API key (E2B_API_KEY for the e2b SDK).",
)


@functools.cache
def _secret(path: Path) -> bytes:
    """The state directory's secret, made (mode 0600) on first use."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    data = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_bytes()
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    return data


def access_token(state: ServerState, sandbox_id: str) -> str:
    secret = _secret(state.settings.state_dir / SECRET_FILE)
    return hmac.new(secret, sandbox_id.encode(), hashlib.sha256).hexdigest()


def file_signature(
    path: str, operation: str, user: str | None, token: str, expiration: int | None
) -> str:
    """E2B's v1 signature of a file URL, as the SDK's ``download_url``/``upload_url`` make
    it from the sandbox's access token: the URL alone then lets its holder read (or write)
    that one file, until ``expiration`` (seconds since the epoch) if there is one."""
    raw = f"{path}:{operation}:{user or ''}:{token}"
    if expiration is not None:
        raw += f":{expiration}"
    digest = base64.b64encode(hashlib.sha256(raw.encode()).digest()).rstrip(b"=")
    return "v1_" + digest.decode()


def signs(conn: HTTPConnection, token: str) -> bool:
    """Whether the request is a file URL signed with ``token``, not yet expired."""
    query = conn.query_params
    given, path = query.get("signature"), query.get("path")
    if given is None or path is None or not conn.url.path.endswith(FILES_PATH):
        return False
    raw_expiration = query.get("signature_expiration")
    try:
        expiration = None if raw_expiration is None else int(raw_expiration)
    except ValueError:
        return False
    if expiration is not None and expiration < time.time():
        return False
    operation = "read" if conn.scope.get("method") == "GET" else "write"
    wanted = file_signature(path, operation, query.get("username"), token, expiration)
    return hmac.compare_digest(given, wanted)


def check_token(conn: HTTPConnection, sandbox_id: str) -> None:
    """AuthenticationError unless the request carries the sandbox's access token (or is a
    file URL signed with it)."""
    given = conn.headers.get(TOKEN_HEADER)
    if given is None:
        if "signature" in conn.query_params:
            if signs(conn, access_token(conn.app.state.sietch, sandbox_id)):
                return
            raise AuthenticationError("invalid or expired file URL signature")
        raise AuthenticationError(f"missing envd access token: send '{TOKEN_HEADER}'")
    if not hmac.compare_digest(given, access_token(conn.app.state.sietch, sandbox_id)):
        raise AuthenticationError("invalid envd access token for this sandbox")
