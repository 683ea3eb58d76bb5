"""Browser links (sietch.server.browser_auth): tokens, their checks, the cookie trade."""

from __future__ import annotations

import pytest
from starlette.requests import HTTPConnection, Request

from sietch.errors import AuthenticationError, InvalidArgument, PermissionDenied
from sietch.server.browser_auth import BrowserGate, BrowserTokens, check_origin, check_ttl


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def prefix(sandbox_id: str) -> str:
    return f"/api/v1/sandboxes/{sandbox_id}/ide/"


def request(
    path: str, query: str = "", headers: dict[str, str] | None = None, kind: str = "http"
) -> HTTPConnection:
    """A Starlette connection for ``path?query`` on http://testserver."""
    raw = [
        (k.lower().encode(), v.encode())
        for k, v in {"host": "testserver", **(headers or {})}.items()
    ]
    scope = {
        "type": kind,
        "scheme": "http" if kind == "http" else "ws",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": raw,
        "server": ("testserver", 80),
        "root_path": "",
    }
    return Request(scope) if kind == "http" else HTTPConnection(scope)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def gate(clock: Clock) -> BrowserGate:
    return BrowserGate(BrowserTokens(clock=clock), "ide", prefix)


def test_a_token_allows_its_sandbox_and_purpose_until_it_expires(clock: Clock) -> None:
    """A token is good for its own sandbox and purpose, and refused once its ttl has passed."""
    tokens = BrowserTokens(clock=clock)
    token, grant = tokens.issue("sb-1", "desktop", ttl_s=60, view_only=True)
    assert tokens.check(token, "sb-1", "desktop") == grant
    assert grant.view_only and grant.expires_at == clock.now + 60
    clock.now += 59
    tokens.check(token, "sb-1", "desktop")
    clock.now += 1
    with pytest.raises(AuthenticationError, match="expired"):
        tokens.check(token, "sb-1", "desktop")


def test_foreign_unknown_missing_and_revoked_tokens_are_refused(clock: Clock) -> None:
    """Another sandbox's or purpose's token is 403; unknown, missing, revoked ones are 401."""
    tokens = BrowserTokens(clock=clock)
    token, _ = tokens.issue("sb-1", "desktop", ttl_s=60)
    other, _ = tokens.issue("sb-1", "ide", ttl_s=60)
    with pytest.raises(PermissionDenied, match="sandbox sb-1"):
        tokens.check(token, "sb-2", "desktop")
    with pytest.raises(PermissionDenied, match="desktop of sandbox sb-1"):
        tokens.check(token, "sb-1", "ide")
    with pytest.raises(AuthenticationError, match="unknown"):
        tokens.check("made-up", "sb-1", "desktop")
    with pytest.raises(AuthenticationError, match="/api/v1/sandboxes/sb-1/desktop"):
        tokens.check(None, "sb-1", "desktop")
    assert tokens.revoke("sb-1", "desktop") == 1
    with pytest.raises(AuthenticationError, match="revoked"):
        tokens.check(token, "sb-1", "desktop")
    tokens.check(other, "sb-1", "ide")  # another purpose's grant is untouched
    assert tokens.revoke("sb-1") == 1


def test_ended_grants_are_forgotten_an_hour_later(clock: Clock) -> None:
    """The table does not grow without end: grants expired over an hour ago go."""
    tokens = BrowserTokens(clock=clock)
    token, _ = tokens.issue("sb-1", "ide", ttl_s=60)
    clock.now += 60 + 3601
    tokens.issue("sb-1", "ide", ttl_s=60)
    with pytest.raises(AuthenticationError, match="unknown"):
        tokens.check(token, "sb-1", "ide")


def test_ttl_bounds() -> None:
    """A ttl defaults to an hour and must lie between 10 s and a week."""
    assert check_ttl(None) == 3600
    assert check_ttl(30) == 30
    for bad in (0, 9.9, 7 * 24 * 3600 + 1):
        with pytest.raises(InvalidArgument, match="ttl"):
            check_ttl(bad)


def test_first_visit_trades_the_token_for_a_scoped_cookie(gate: BrowserGate, clock: Clock) -> None:
    """The link's URL answers a redirect to itself without the token, setting an httpOnly,
    SameSite=Lax cookie for the sandbox's prefix that lasts as long as the token."""
    url, grant = gate.link("http://testserver/", "sb-1", ttl_s=120, query={"folder": "/home/user"})
    assert url.startswith(
        "http://testserver/api/v1/sandboxes/sb-1/ide/?folder=%2Fhome%2Fuser&token="
    )
    token = url.rpartition("token=")[2]
    query = f"folder=%2Fhome%2Fuser&token={token}"
    answer = gate.enter(request(prefix("sb-1"), query), "sb-1")
    assert answer is not None and answer.status_code == 303
    assert answer.headers["location"] == "/api/v1/sandboxes/sb-1/ide/?folder=%2Fhome%2Fuser"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"sietch_ide={token};")
    for part in ("HttpOnly", "Max-Age=120", "Path=/api/v1/sandboxes/sb-1/ide/", "SameSite=lax"):
        assert part in cookie
    assert "Secure" not in cookie
    with_cookie = request(prefix("sb-1"), headers={"cookie": f"sietch_ide={token}"})
    assert gate.enter(with_cookie, "sb-1") is None
    assert gate.session(with_cookie, "sb-1") == grant


def test_a_bad_token_in_the_url_is_refused_before_any_cookie(gate: BrowserGate) -> None:
    """An expired or foreign token in the URL is refused (no redirect, no cookie)."""
    url, _ = gate.link("http://testserver/", "sb-1", ttl_s=60)
    token = url.rpartition("token=")[2]
    with pytest.raises(PermissionDenied):
        gate.enter(request(prefix("sb-2"), f"token={token}"), "sb-2")
    with pytest.raises(AuthenticationError):
        gate.session(request(prefix("sb-1")), "sb-1")


def test_https_cookies_are_secure(gate: BrowserGate) -> None:
    """Over HTTPS the cookie is marked Secure."""
    url, _ = gate.link("http://testserver/", "sb-1", ttl_s=60)
    visit = request(prefix("sb-1"), url.partition("?")[2])
    visit.scope["scheme"] = "https"
    answer = gate.enter(visit, "sb-1")
    assert answer is not None and "Secure" in answer.headers["set-cookie"]


def test_the_cookie_is_not_passed_to_the_sandbox(gate: BrowserGate) -> None:
    """strip_cookie takes out the gate's cookie and keeps the guest's own."""
    headers = [(b"cookie", b"a=1; sietch_ide=secret; b=2"), (b"accept", b"*/*")]
    assert gate.strip_cookie(headers) == [(b"cookie", b"a=1; b=2"), (b"accept", b"*/*")]
    assert gate.strip_cookie([(b"cookie", b"sietch_ide=secret")]) == []


def test_websockets_from_another_site_are_refused() -> None:
    """A cookie-authenticated WebSocket must come from this server's own pages."""
    check_origin(request("/", headers={"origin": "http://testserver"}, kind="websocket"))
    check_origin(request("/", kind="websocket"))  # no Origin: not a browser
    with pytest.raises(PermissionDenied, match=r"evil\.example"):
        check_origin(request("/", headers={"origin": "http://evil.example"}, kind="websocket"))
