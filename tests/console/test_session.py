"""The console's CSRF check and redirect target (pure logic, no server)."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from sietch.errors import PermissionDenied
from sietch.server.console.session import check_same_origin, local


def request(**headers: str) -> Request:
    raw = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "method": "POST", "path": "/ui/", "headers": raw})


@pytest.mark.parametrize(
    "headers",
    [
        {"host": "127.0.0.1:7000", "sec_fetch_site": "same-origin"},
        {"host": "127.0.0.1:7000", "sec_fetch_site": "none"},  # typed or bookmarked
        {"host": "127.0.0.1:7000", "origin": "http://127.0.0.1:7000"},  # no Fetch Metadata
        {"host": "127.0.0.1:7000"},  # not a browser: it holds the cookie itself
    ],
)
def test_same_origin_requests_pass(headers: dict[str, str]) -> None:
    """What this origin's pages (or a non-browser client) send is let through."""
    check_same_origin(request(**headers))


@pytest.mark.parametrize(
    "headers",
    [
        {"host": "127.0.0.1:7000", "sec_fetch_site": "same-site"},  # another port
        {"host": "127.0.0.1:7000", "sec_fetch_site": "cross-site"},
        {"host": "127.0.0.1:7000", "origin": "http://127.0.0.1:8000"},
        {"host": "127.0.0.1:7000", "origin": "null"},  # a sandboxed page
    ],
)
def test_other_origins_are_refused(headers: dict[str, str]) -> None:
    """Another origin, the same site (another port of the host) included, is refused."""
    with pytest.raises(PermissionDenied):
        check_same_origin(request(**headers))


def test_redirects_stay_in_the_console() -> None:
    """After sign-in the browser goes only to a console path, never elsewhere."""
    assert local("/ui/snapshots") == "/ui/snapshots"
    assert [local(u) for u in ("https://example.org/", "//example.org/ui/", "/api/v1")] == [
        "/ui/"
    ] * 3
