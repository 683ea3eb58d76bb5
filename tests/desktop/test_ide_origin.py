"""The IDE on an origin of its own (``SIETCH_PROXY_DOMAIN``), in headless Chromium on the host:
code-server's workbench loads at ``ide-{id}.{domain}``, and a script there can read neither
the desktop viewer's nor the web console's pages, nor their cookies. Names resolve through
Chromium's ``--host-resolver-rules`` (to loopback), never through DNS.

The servers here are this process's, over the session's manager: the desktop sandbox is a
restore of the directory's one desktop template.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Page, async_playwright, expect

from sietch.config import Settings
from sietch.core.manager import Manager
from sietch.core.tenants import Tenants
from tests.conftest import RESULTS
from tests.desktop.browser import ARGS
from tests.desktop.conftest import SPEC, until_ready
from tests.desktop.test_computer import serving_app

pytestmark = pytest.mark.timeout(2400)  # the desktop template, if this module runs alone
DOMAIN = "sietch.test"
WORKBENCH_MS = 300_000
"""code-server's workbench under TCG takes its time to load."""


@dataclass
class Server:
    port: int
    http: httpx.AsyncClient
    """The API with an admin key, asked as ``DOMAIN``: the links it hands out are for it."""

    @property
    def origin(self) -> str:
        return f"http://{DOMAIN}:{self.port}"


@contextlib.asynccontextmanager
async def serving(
    settings: Settings, manager: Manager, key: str, tenants: Tenants
) -> AsyncIterator[Server]:
    """The real API on a loopback port, over ``manager``."""
    async with serving_app(settings, manager, tenants) as port:
        headers = {"Authorization": f"Bearer {key}", "Host": f"{DOMAIN}:{port}"}
        base = f"http://127.0.0.1:{port}/api/v1"
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=300) as http:
            yield Server(port, http)


@pytest_asyncio.fixture(scope="module")
async def servers(manager: Manager, settings: Settings) -> AsyncIterator[tuple[Server, Server]]:
    """Two servers over the session's manager: one with a proxy domain, one without."""
    tenants = Tenants(settings.state_dir / "ide_origin_tenants.db")
    key = tenants.create_key("default", "ide-origin-tests", admin=True)[1]
    hosted = settings.model_copy(update={"proxy_domain": DOMAIN})
    async with (
        serving(hosted, manager, key, tenants) as own,
        serving(settings, manager, key, tenants) as shared,
    ):
        yield own, shared


@pytest_asyncio.fixture(scope="module")
async def sandbox_id(manager: Manager, servers: tuple[Server, Server]) -> AsyncIterator[str]:
    """One desktop sandbox for the module, its code-server answering."""
    made = await servers[0].http.post("/sandboxes", json=SPEC, timeout=None)
    assert made.status_code == 201, made.text
    found: str = made.json()["id"]
    try:
        await until_ready(manager.sandbox(found))
        yield found
    finally:
        await manager.delete(found)


@pytest_asyncio.fixture
async def page() -> AsyncIterator[Page]:
    """Headless Chromium that takes ``DOMAIN`` and its subdomains to be loopback."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("no chromium on the host: ./bootstrap.sh test installs it")
    rules = f"--host-resolver-rules=MAP {DOMAIN} 127.0.0.1, MAP *.{DOMAIN} 127.0.0.1"
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, args=[*ARGS, rules])
        try:
            context = await browser.new_context(viewport={"width": 1400, "height": 900})
            yield await context.new_page()
        finally:
            await browser.close()


READ = """async (url) => {
    try {
        const r = await fetch(url, {credentials: 'include'});
        return 'read ' + r.status + ' ' + (await r.text()).length;
    } catch (e) {
        return 'refused';
    }
}"""
"""What a script in the page gets when it fetches ``url`` with the browser's cookies."""


async def test_workbench_loads_on_its_own_origin(
    servers: tuple[Server, Server], sandbox_id: str, page: Page
) -> None:
    """GET …/ide links to ide-{id}.{domain}; the workbench loads there with a cookie of that
    host only; a script on it can't read the viewer's or the console's pages (the viewer's
    own page can), and sees none of their cookies; the API-origin IDE path is 404."""
    own, _ = servers
    ide = (await own.http.get(f"/sandboxes/{sandbox_id}/ide")).json()
    host = f"ide-{sandbox_id}.{DOMAIN}:{own.port}"
    assert ide["url"].startswith(f"http://{host}/?folder=%2Fhome%2Fuser&token=")
    assert ide["isolated"] is True and ide["warning"] is None
    path = f"/sandboxes/{sandbox_id}/ide/"
    assert (await own.http.get(path)).status_code == 404  # only on the IDE's own host

    viewer = (await own.http.get(f"/sandboxes/{sandbox_id}/desktop")).json()["viewer_url"]
    assert (await page.goto(viewer, timeout=WORKBENCH_MS)) is not None
    viewer_page = page.url
    assert viewer_page.startswith(own.origin) and "token=" not in viewer_page
    assert (await page.evaluate(READ, viewer_page)).startswith("read 200")  # same origin: can
    console = f"{own.origin}/ui/"

    # code-server's first answer under TCG outlasts Playwright's 30 s: wait for the commit.
    answer = await page.goto(ide["url"], timeout=WORKBENCH_MS, wait_until="commit")
    assert answer is not None and answer.ok, answer and answer.status
    assert page.url.startswith(f"http://{host}/") and "token=" not in page.url
    try:
        await expect(page.locator(".monaco-workbench")).to_be_visible(timeout=WORKBENCH_MS)
    finally:
        RESULTS.mkdir(exist_ok=True)
        await page.screenshot(path=RESULTS / "ide-own-origin.png")
    assert await page.evaluate(READ, viewer_page) == "refused"
    assert await page.evaluate(READ, console) == "refused"
    assert "sietch_" not in await page.evaluate("document.cookie")
    cookies = {c["name"]: c for c in await page.context.cookies()}
    assert cookies["sietch_ide"]["domain"] == f"ide-{sandbox_id}.{DOMAIN}"  # host-only
    assert cookies["sietch_ide"]["path"] == "/"
    assert cookies["sietch_desktop"]["domain"] == DOMAIN


async def test_without_a_proxy_domain_the_answer_says_so(
    servers: tuple[Server, Server], sandbox_id: str
) -> None:
    """With no proxy domain the link is the API-origin path, and the answer says the IDE is
    not isolated and which setting isolates it."""
    _, shared = servers
    ide = (await shared.http.get(f"/sandboxes/{sandbox_id}/ide")).json()
    assert f"/api/v1/sandboxes/{sandbox_id}/ide/?folder=" in ide["url"]
    assert ide["isolated"] is False and "SIETCH_PROXY_DOMAIN" in ide["warning"]
