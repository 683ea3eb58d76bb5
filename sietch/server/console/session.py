"""Signing in to the web console: an API key traded for an opaque, expiring login id.

The login id is a browser token of :mod:`sietch.server.browser_auth` (purpose
``console``), kept in an httpOnly, ``SameSite=Strict`` cookie scoped to
``/ui/``; its grant holds the SHA-256 of the key, never the key, and every
request looks that digest up in the tenants catalog, so ``sietch keys revoke``
ends the login at once. The caller found is the API's own (:data:`CALLER` in
the scope), and the path's ``{sandbox_id}``/``{snapshot_id}`` are checked
against its tenant exactly as the REST API checks them. In a cluster the login ids
are the catalog's (:mod:`.logins`): a login made through one gateway is checked by
whichever gateway or node serves the next request.

State changes are CSRF-safe twice over: the cookie is ``SameSite=Strict``, and
:func:`check_same_origin` refuses a request that a browser marks as sent by
another origin (``Sec-Fetch-Site``, else ``Origin``). ``127.0.0.1:8000`` is
the same *site* as ``127.0.0.1:7000``, so SameSite alone would not do.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Request
from starlette.requests import HTTPConnection
from starlette.responses import RedirectResponse

from sietch.core.tenants import ANONYMOUS, Caller, TenantStore, digest
from sietch.errors import AuthenticationError, PermissionDenied
from sietch.server.auth import CALLER
from sietch.server.browser_auth import BrowserGate, BrowserTokens
from sietch.server.console.render import SCRIPT_HEADER, SignInFirst
from sietch.server.deps import check_path
from sietch.server.state import ServerState

PURPOSE = "console"
PREFIX = "/ui/"
LOGIN_TTL_S = 12 * 3600.0
_NO_SANDBOX = ""
"""A login is not a sandbox's: its grants carry no sandbox id."""
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


def gate(state: ServerState) -> BrowserGate:
    return login_gate(state.console_logins or state.browser_tokens)


def login_gate(tokens: BrowserTokens) -> BrowserGate:
    """The console's cookie over ``tokens`` (a gateway has them but no server state)."""
    return BrowserGate(tokens, PURPOSE, lambda _: PREFIX, samesite="strict")


def sign_in(conn: HTTPConnection, key: str, then: str) -> RedirectResponse:
    """Check ``key``; answer with a redirect to ``then`` that sets the login cookie."""
    state: ServerState = conn.app.state.sietch
    if state.tenants.lookup(key) is None:
        raise AuthenticationError("that API key is not valid (unknown or revoked)")
    console = gate(state)
    token, grant = console.tokens.issue(
        _NO_SANDBOX, PURPOSE, ttl_s=LOGIN_TTL_S, subject=digest(key)
    )
    answer = RedirectResponse(local(then), status_code=303, headers={"Cache-Control": "no-store"})
    console.set_cookie(answer, conn, token, grant)
    return answer


def sign_out(conn: HTTPConnection) -> RedirectResponse:
    """End the login (its id is revoked, not only forgotten by this browser)."""
    console = gate(conn.app.state.sietch)
    if token := conn.cookies.get(console.cookie):
        console.tokens.revoke_token(token)
    answer = RedirectResponse(PREFIX + "login", status_code=303)
    answer.delete_cookie(console.cookie, path=PREFIX)
    return answer


def local(then: str) -> str:
    """``then`` if it is a console path, else the console's start: no open redirects."""
    return then if then.startswith(PREFIX) and not then.startswith("//") else PREFIX


def login_caller(conn: HTTPConnection) -> Caller:
    """The caller of the connection's login; AuthenticationError without a live one."""
    state: ServerState = conn.app.state.sietch
    if not state.auth:
        return ANONYMOUS
    return caller_of_login(gate(state), state.tenants, conn)


def caller_of_login(console: BrowserGate, tenants: TenantStore, conn: HTTPConnection) -> Caller:
    """The caller of the login in the connection's cookie, looked up by its key's digest
    (a revoked key ends the login); AuthenticationError without a live one."""
    token = conn.cookies.get(console.cookie)
    if not token:
        raise AuthenticationError("not signed in")
    grant = console.tokens.check(token, _NO_SANDBOX, PURPOSE)
    caller = tenants.lookup_digest(grant.subject)
    if caller is None:
        console.tokens.revoke_token(token)
        raise AuthenticationError("the API key of this login was revoked: sign in again")
    return caller


def check_same_origin(conn: HTTPConnection) -> None:
    """Refuse a request a browser says another origin sent (see the module's docstring)."""
    fetch_site = conn.headers.get("sec-fetch-site")
    if fetch_site is not None:
        if fetch_site not in ("same-origin", "none"):
            raise PermissionDenied(f"a {fetch_site} request may not change anything here")
        return
    origin = conn.headers.get("origin")
    if origin is not None and origin.partition("://")[2].rstrip("/").lower() != (
        conn.headers.get("host", "").lower()
    ):
        raise PermissionDenied(f"a request from {origin} may not change anything here")


async def signed_in(request: Request) -> Caller:
    """The console's dependency: the login's caller, the path's ids in its tenant, and a
    state change only from this origin. Not signed in: a page redirects to sign-in."""
    try:
        caller = login_caller(request)
    except AuthenticationError:
        if request.method in _SAFE and SCRIPT_HEADER not in request.headers:
            then = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise SignInFirst(f"{PREFIX}login?next={quote(then)}") from None
        raise
    if request.method not in _SAFE:
        check_same_origin(request)
    request.scope[CALLER] = caller
    await check_path(request, caller)
    return caller


async def socket_caller(conn: HTTPConnection) -> Caller:
    """For a console WebSocket: the login's caller, the socket from this origin; its
    path's ids in the caller's tenant (raises SietchError)."""
    caller = login_caller(conn)
    check_same_origin(conn)
    conn.scope[CALLER] = caller
    await check_path(conn, caller)
    return caller


LoginDep = Annotated[Caller, Depends(signed_in)]
