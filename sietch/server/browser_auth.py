"""Browser links: short-lived, sandbox-scoped, revocable tokens, traded for a cookie.

A browser cannot send ``Authorization: Bearer``, neither for a page nor for
the WebSockets and files the page loads. So an API-key holder asks for a link
(``GET /api/v1/sandboxes/{id}/desktop``), whose URL carries a token; the
first visit trades it for an httpOnly, ``SameSite=Lax`` cookie whose path is
that sandbox's browser prefix for that purpose, and redirects to the same URL
without the token (so it leaves the address bar, the history and Referer).
Every later request of that browser under the prefix carries the cookie.

- A token is 32 random bytes; the server keeps only its SHA-256 (as with API
  keys) with its :class:`Grant`: sandbox, purpose, ``view_only``, expiry.
- The cookie holds the same token, with ``Max-Age`` = what is left of it, so
  the session ends when the token does; :meth:`BrowserTokens.revoke` ends
  both at once. Tokens live in the server's memory: a restart revokes them all (a
  cluster keeps its console logins in its catalog: :mod:`sietch.server.console.logins`).
- Refusals say why: unknown (401), expired (401), revoked (401), made for
  another sandbox or purpose (403).

Written once for every browser-facing part (desktop viewer, IDE, the web
console): a user makes one :class:`BrowserGate` per purpose.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal
from urllib.parse import parse_qsl, urlencode

from starlette.requests import HTTPConnection
from starlette.responses import RedirectResponse, Response

from sietch.errors import AuthenticationError, InvalidArgument, PermissionDenied

VISIBLE_PATH = "sietch.visible_path"
"""Scope key: the path the browser asked for, where a middleware re-addressed the request
(an IDE host, :mod:`sietch.server.routes.proxy.host_routes`); redirects go back to it."""
TOKEN_PARAM = "token"
"""The query parameter a link carries its token in."""
MIN_TTL_S = 10.0
MAX_TTL_S = 7 * 24 * 3600.0
DEFAULT_TTL_S = 3600.0
KEEP_ENDED_S = 3600.0
"""How long an expired or revoked grant is remembered, to say so rather than 'unknown'."""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_ttl(ttl_s: float | None) -> float:
    """A link's lifetime in seconds, :data:`DEFAULT_TTL_S` when not given."""
    if ttl_s is None:
        return DEFAULT_TTL_S
    if not MIN_TTL_S <= ttl_s <= MAX_TTL_S:
        raise InvalidArgument(
            f"ttl must be between {MIN_TTL_S:g} and {MAX_TTL_S:g} seconds, not {ttl_s:g}"
        )
    return float(ttl_s)


@dataclass(frozen=True)
class Grant:
    """What one token allows: one purpose in one sandbox, until ``expires_at``."""

    id: str
    """Public name of the grant (logs); never the token."""
    sandbox_id: str
    purpose: str
    view_only: bool
    expires_at: float
    """Seconds since the epoch."""
    revoked: bool = False
    subject: str = ""
    """Whose session it is, when not a sandbox's: the console keeps its API key's digest
    here, so that revoking the key ends the login."""


@dataclass
class BrowserTokens:
    """The server's table of browser tokens (in memory)."""

    clock: Callable[[], float] = time.time
    _grants: dict[str, Grant] = field(default_factory=dict)
    """Token digest -> grant."""

    def issue(
        self,
        sandbox_id: str,
        purpose: str,
        *,
        ttl_s: float,
        view_only: bool = False,
        subject: str = "",
    ) -> tuple[str, Grant]:
        """A new token and its grant, valid for ``ttl_s`` seconds from now."""
        self._forget_ended()
        token = secrets.token_urlsafe(32)
        grant = Grant(
            id="grant-" + secrets.token_hex(6),
            sandbox_id=sandbox_id,
            purpose=purpose,
            view_only=view_only,
            expires_at=self.clock() + ttl_s,
            subject=subject,
        )
        self._put(_digest(token), grant)
        return token, grant

    def check(self, token: str | None, sandbox_id: str, purpose: str) -> Grant:
        """The grant of ``token`` if it allows ``purpose`` in ``sandbox_id`` now; else raise."""
        what = f"this {purpose} link"
        if not token:
            raise AuthenticationError(
                f"no {purpose} session: open the link from GET "
                f"/api/v1/sandboxes/{sandbox_id}/{purpose} (it carries a token)"
            )
        grant = self._get(_digest(token))
        if grant is None:
            raise AuthenticationError(f"{what} is not valid (unknown token): ask for a new one")
        if grant.revoked:
            raise AuthenticationError(f"{what} was revoked: ask for a new one")
        if self.clock() >= grant.expires_at:
            raise AuthenticationError(f"{what} has expired: ask for a new one")
        if grant.sandbox_id != sandbox_id or grant.purpose != purpose:
            raise PermissionDenied(
                f"this link was made for the {grant.purpose} of sandbox {grant.sandbox_id}, "
                f"not the {purpose} of sandbox {sandbox_id}"
            )
        return grant

    def revoke(self, sandbox_id: str, purpose: str | None = None) -> int:
        """End every grant (and so every cookie) of the sandbox, or of one purpose of it."""
        count = 0
        for digest, grant in self._grants.items():
            if grant.sandbox_id == sandbox_id and purpose in (None, grant.purpose):
                if not grant.revoked:
                    count += 1
                self._grants[digest] = replace(grant, revoked=True)
        return count

    def revoke_token(self, token: str) -> None:
        """End one grant (a sign-out)."""
        digest = _digest(token)
        if (grant := self._get(digest)) is not None:
            self._put(digest, replace(grant, revoked=True))

    def _get(self, digest: str) -> Grant | None:
        return self._grants.get(digest)

    def _put(self, digest: str, grant: Grant) -> None:
        self._grants[digest] = grant

    def _forget_ended(self) -> None:
        horizon = self.clock() - KEEP_ENDED_S
        for digest, grant in list(self._grants.items()):
            if grant.expires_at < horizon:
                del self._grants[digest]


def _without_token(query: str) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    return urlencode([(k, v) for k, v in pairs if k != TOKEN_PARAM])


@dataclass(frozen=True)
class BrowserGate:
    """One purpose's links and cookies: ``prefix(sandbox_id)`` is its path, under which the
    cookie holds (e.g. ``/api/v1/sandboxes/{id}/ide/``; ending in ``/``)."""

    tokens: BrowserTokens
    purpose: str
    prefix: Callable[[str], str]
    samesite: Literal["lax", "strict"] = "lax"
    """``strict`` for a gate whose cookie is set by a form post, not a link's visit."""

    @property
    def cookie(self) -> str:
        return f"sietch_{self.purpose}"

    def link(
        self,
        base: str,
        sandbox_id: str,
        *,
        ttl_s: float,
        view_only: bool = False,
        path: str = "",
        query: dict[str, str] | None = None,
    ) -> tuple[str, Grant]:
        """A URL under ``base`` (the server's, e.g. ``http://127.0.0.1:7000``) to
        ``prefix + path``, carrying a new token; and its grant."""
        token, grant = self.tokens.issue(sandbox_id, self.purpose, ttl_s=ttl_s, view_only=view_only)
        params = urlencode({**(query or {}), TOKEN_PARAM: token})
        return f"{base.rstrip('/')}{self.prefix(sandbox_id)}{path}?{params}", grant

    def enter(self, conn: HTTPConnection, sandbox_id: str) -> RedirectResponse | None:
        """On a visit with a token in its URL: check it, and answer with a redirect to the
        URL without it that sets the cookie. None when the URL carries no token."""
        token = conn.query_params.get(TOKEN_PARAM)
        if token is None:
            return None
        grant = self.tokens.check(token, sandbox_id, self.purpose)
        query = _without_token(conn.url.query)
        clean = conn.scope.get(VISIBLE_PATH, conn.url.path) + (f"?{query}" if query else "")
        answer = RedirectResponse(clean, status_code=303, headers={"Cache-Control": "no-store"})
        self.set_cookie(answer, conn, token, grant)
        return answer

    def set_cookie(self, answer: Response, conn: HTTPConnection, token: str, grant: Grant) -> None:
        """Put ``token`` in this gate's httpOnly cookie, for as long as its grant lasts."""
        answer.set_cookie(
            self.cookie,
            token,
            max_age=max(1, int(grant.expires_at - self.tokens.clock())),
            path=self.prefix(grant.sandbox_id),
            secure=conn.url.scheme in ("https", "wss"),
            httponly=True,
            samesite=self.samesite,
        )

    def session(self, conn: HTTPConnection, sandbox_id: str) -> Grant:
        """The grant of the connection's cookie; refuses a WebSocket opened by another site."""
        if conn.scope["type"] == "websocket":
            check_origin(conn)
        return self.tokens.check(conn.cookies.get(self.cookie), sandbox_id, self.purpose)

    def strip_cookie(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """``headers`` with this gate's cookie taken out: the sandbox never sees it."""
        out = []
        name = self.cookie.encode()
        for key, value in headers:
            if key.lower() != b"cookie":
                out.append((key, value))
            elif kept := [c for c in value.split(b";") if c.strip().partition(b"=")[0] != name]:
                out.append((key, b";".join(kept).strip()))
        return out


def check_origin(conn: HTTPConnection) -> None:
    """A cookie-authenticated WebSocket must come from a page of this server: browsers send
    cookies with cross-site WebSocket handshakes, and only ``Origin`` tells them apart."""
    origin = conn.headers.get("origin")
    if origin is None:  # not a browser: it holds the cookie itself
        return
    host = conn.headers.get("host", "")
    if origin.partition("://")[2].rstrip("/").lower() != host.lower():
        raise PermissionDenied(f"a WebSocket from {origin} may not use this server's session")
