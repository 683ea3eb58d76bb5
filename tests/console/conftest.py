"""A real server, headless Chromium on the host, and a browser context per test that may
reach only loopback: every other request is aborted and recorded, and the test fails if
there was one."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, ViewportSize

from tests.conftest import RESULTS
from tests.desktop.browser import browser
from tests.server.harness import ApiServer, api_server

__all__ = ["api_server", "browser"]

VIEWPORT: ViewportSize = {"width": 1280, "height": 800}
"""The issue's size: the console must be readable at 1280x800."""
CREATE_S = 300.0
"""A sandbox create under TCG on a loaded machine (the first one makes the template)."""


def loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Console:
    """A browser context on the console, and what it tried to reach outside loopback."""

    server: ApiServer
    context: BrowserContext
    page: Page
    outside: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url + "/ui/"

    def sign_in(self, key: str | None = None) -> None:
        self.page.goto(self.url)
        self.page.get_by_label("API key").fill(key or self.server.api_key)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_url(self.url)

    def shot(self, name: str) -> None:
        RESULTS.mkdir(exist_ok=True)
        self.page.screenshot(path=RESULTS / f"console-{name}.png", full_page=True)


@pytest.fixture
def console(browser: Browser, api_server: ApiServer) -> Iterator[Console]:
    """A fresh context (no cookies) at 1280x800 whose non-loopback requests are aborted."""
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    context.set_default_timeout(60_000)  # a loaded machine: pages that start VMs take time
    found = Console(api_server, context, context.new_page())

    def guard(route: Route) -> None:
        if loopback(route.request.url) or route.request.url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            found.outside.append(route.request.url)
            route.abort()

    context.route("**/*", guard)
    try:
        yield found
    finally:
        context.close()
    assert found.outside == [], f"the console tried to reach {found.outside}"


@pytest.fixture(scope="module")
def api(api_server: ApiServer) -> Iterator[httpx.Client]:
    """The REST API with the server's admin key."""
    with httpx.Client(
        base_url=api_server.url + "/api/v1", headers=api_server.headers, timeout=CREATE_S
    ) as client:
        yield client


@pytest.fixture
def cleanup(api: httpx.Client) -> Iterator[list[str]]:
    """Ids of sandboxes a test made (through the page too): deleted after it."""
    made: list[str] = []
    yield made
    for sandbox_id in made:
        api.delete(f"/sandboxes/{sandbox_id}")


def create(api: httpx.Client, made: list[str], **spec: object) -> str:
    """A new sandbox through the API, recorded for :func:`cleanup`."""
    created = api.post("/sandboxes", json=spec)
    assert created.status_code == 201, created.text
    sandbox_id: str = created.json()["id"]
    made.append(sandbox_id)
    return sandbox_id
