"""The desktop viewer and the IDE through a real server, in headless Chromium on the host:
noVNC shows the guest's screen, code-server's workbench loads and opens a sandbox file,
and browser links are refused when expired, foreign or missing."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect
from tenacity import Retrying, stop_after_delay, wait_fixed

from sietch.images import desktop
from tests.conftest import RESULTS
from tests.desktop.browser import browser, page
from tests.desktop.conftest import SPEC
from tests.desktop.rfb_ws import RfbSocket, rfb_socket
from tests.mcp.test_mcp import call, http_mcp
from tests.server.harness import ApiServer, api_server

__all__ = ["api_server", "browser", "page"]

pytestmark = pytest.mark.timeout(1200)  # the first desktop sandbox cold-boots (minutes)
COLOUR = (0x12, 0x34, 0x56)
READY_S = 600.0
"""A desktop cold boot under TCG, on a loaded machine."""
WORKBENCH_MS = 300_000
"""code-server's workbench under TCG takes its time to load."""


@dataclass
class Desktop:
    http: httpx.Client
    id: str
    base: str

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        response = self.http.get(f"/sandboxes/{self.id}/{path}", params=params)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def sh(self, cmd: str, user: str = "root") -> str:
        """Run ``cmd`` in the guest (as ``user``, on the display); its stdout."""
        response = self.http.post(
            f"/sandboxes/{self.id}/exec",
            json={"cmd": cmd, "user": user, "env": {"DISPLAY": desktop.DISPLAY}},
        )
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["exit_code"] == 0, result
        return str(result["stdout"])

    def wait_for(self, cmd: str) -> None:
        """Until ``cmd`` succeeds in the guest: its services come up in minutes under TCG."""
        for attempt in Retrying(stop=stop_after_delay(READY_S), wait=wait_fixed(2), reraise=True):
            with attempt:
                self.sh(cmd)

    def mouse(self) -> tuple[int, int]:
        found = re.search(r"x:(\d+) y:(\d+)", self.sh("xdotool getmouselocation", "user"))
        assert found, "xdotool gave no position"
        return int(found[1]), int(found[2])


@pytest.fixture(scope="module")
def sandbox(api_server: ApiServer) -> Iterator[Desktop]:
    """One desktop sandbox for the module (the server's first: its boot makes the template)."""
    with httpx.Client(
        base_url=api_server.url + "/api/v1", headers=api_server.headers, timeout=READY_S
    ) as http:
        created = http.post("/sandboxes", json=SPEC)
        assert created.status_code == 201, created.text
        found = Desktop(http, created.json()["id"], api_server.url)
        try:
            found.wait_for(f"xdpyinfo -display {desktop.DISPLAY}")  # the X server
            yield found
        finally:
            http.delete(f"/sandboxes/{found.id}")


@pytest.fixture(scope="module")
def other(api_server: ApiServer) -> Iterator[str]:
    """Another (plain) sandbox of the same server, for links that are not the desktop's."""
    with httpx.Client(
        base_url=api_server.url + "/api/v1", headers=api_server.headers, timeout=300
    ) as http:
        created = http.post("/sandboxes", json={})
        assert created.status_code == 201, created.text
        try:
            yield created.json()["id"]
        finally:
            http.delete(f"/sandboxes/{created.json()['id']}")


def canvas_pixel(page: Page, x: int, y: int) -> list[int]:
    """The noVNC canvas' size and its pixel at (x, y) of the guest's screen, as the page has it."""
    pixel: list[int] = page.evaluate(
        """([x, y]) => {
            const c = document.querySelector('#screen canvas');
            const d = c.getContext('2d').getImageData(x, y, 1, 1).data;
            return [c.width, c.height, d[0], d[1], d[2]];
        }""",
        [x, y],
    )
    return pixel


def window_centre(sandbox: Desktop, title: str) -> tuple[int, int]:
    """Where the centre of the guest's window called ``title`` is on its screen."""
    info = sandbox.sh(f"xwininfo -name {title}", "user")
    values = {
        key: int(value)
        for key, value in re.findall(r"(Absolute upper-left [XY]|Width|Height):\s+(-?\d+)", info)
    }
    assert len(values) == 4, info
    x, y = values["Absolute upper-left X"], values["Absolute upper-left Y"]
    return x + values["Width"] // 2, y + values["Height"] // 2


def show_colour_window(http: httpx.Client, sandbox_id: str) -> None:
    """Open an xmessage on the guest's screen, every part of it (its text too) in
    ``COLOUR``: a window of a known colour at the screen's centre."""
    colour = "#{:02x}{:02x}{:02x}".format(*COLOUR)
    resources = [f"*{part}: {colour}" for part in ("background", "foreground", "borderColor")]
    started = http.post(
        f"/sandboxes/{sandbox_id}/processes",
        json={
            "cmd": ["xmessage", "-title", "sietch-colour", "-center", "-geometry", "800x500",
                    *(arg for r in resources for arg in ("-xrm", r)), "sietch"],
            "user": "user",
            "env": {"DISPLAY": desktop.DISPLAY},
        },
    )  # fmt: skip
    assert started.status_code == 201, started.text


def open_viewer(page: Page, url: str, state: str = "connected") -> None:
    response = page.goto(url)
    assert response is not None and response.ok, response and response.status
    assert "token=" not in page.url  # traded for the cookie, and gone from the address
    expect(page.locator("body")).to_have_attribute("data-state", state, timeout=60_000)


def test_viewer_shows_the_desktop(sandbox: Desktop, page: Page) -> None:
    """Chromium opens viewer_url; noVNC connects with the password it was given and its
    canvas shows a window of a known colour at the centre of the guest's screen."""
    view = sandbox.get("desktop")
    assert (view["width"], view["height"]) == (1280, 800)
    assert len(view["vnc_password"]) == 8 and view["view_only"] is False
    show_colour_window(sandbox.http, sandbox.id)
    open_viewer(page, view["viewer_url"])
    RESULTS.mkdir(exist_ok=True)
    try:
        for attempt in Retrying(stop=stop_after_delay(120), wait=wait_fixed(0.5), reraise=True):
            with attempt:
                x, y = window_centre(sandbox, "sietch-colour")
                assert canvas_pixel(page, x, y) == [1280, 800, *COLOUR], (x, y)
    finally:
        page.screenshot(path=RESULTS / "desktop-viewer.png")


def test_the_person_drives_the_mouse(sandbox: Desktop, page: Page) -> None:
    """Moving the mouse over the viewer's canvas moves the guest's pointer."""
    open_viewer(page, sandbox.get("desktop")["viewer_url"])
    box = page.locator("#screen canvas").bounding_box()
    assert box is not None
    scale = box["width"] / 1280
    page.mouse.move(box["x"] + 200 * scale, box["y"] + 150 * scale)
    for attempt in Retrying(stop=stop_after_delay(30), wait=wait_fixed(0.3), reraise=True):
        with attempt:
            x, y = sandbox.mouse()
            assert abs(x - 200) <= 2 and abs(y - 150) <= 2, (x, y)


@contextmanager
def rfb_session(sandbox: Desktop, view_only: bool) -> Iterator[RfbSocket]:
    """An RFB client on the viewer's WebSocket, with the cookie a link's first visit sets."""
    view = sandbox.get("desktop", view_only=view_only)
    visit = httpx.get(view["viewer_url"], timeout=60)
    assert visit.status_code == 303, visit.text
    cookie = visit.headers["set-cookie"].partition(";")[0]
    path = f"/api/v1/sandboxes/{sandbox.id}/desktop/viewer/websockify"
    with rfb_socket(
        sandbox.base.replace("http", "ws", 1) + path, cookie, view["vnc_password"]
    ) as rfb:
        yield rfb


def test_view_only_input_is_dropped_by_the_server(sandbox: Desktop) -> None:
    """A view-only session's pointer events never reach the VNC server, even from a client
    that sends them (the relay drops them); a normal session's do. Pixels flow in both."""
    with rfb_session(sandbox, view_only=False) as normal:
        assert (normal.width, normal.height) == (1280, 800)
        normal.pointer(211, 123)
        normal.barrier()
        assert sandbox.mouse() == (211, 123)
    with rfb_session(sandbox, view_only=True) as watcher:
        watcher.pointer(333, 222)
        watcher.key(0x61)
        watcher.barrier()
        assert sandbox.mouse() == (211, 123)


def test_browser_links_are_refused_when_expired_foreign_or_missing(
    sandbox: Desktop, other: str, page: Page
) -> None:
    """No cookie: 401; a link past its ttl: 401 'expired'; another sandbox's or the IDE's
    link on the desktop viewer: 403."""
    viewer = f"{sandbox.base}/api/v1/sandboxes/{sandbox.id}/desktop/viewer/"
    plain = httpx.Client(timeout=60)
    assert plain.get(viewer).status_code == 401
    short = sandbox.get("desktop", ttl=10)["viewer_url"]
    token = short.rpartition("token=")[2]
    assert plain.get(short).status_code == 303
    foreign = sandbox.http.get(f"/sandboxes/{other}/ide").json()["url"]
    foreign_token = foreign.rpartition("token=")[2]
    refused = plain.get(viewer, params={"token": foreign_token})
    assert refused.status_code == 403 and other in refused.json()["error"]["message"]
    other_viewer = f"{sandbox.base}/api/v1/sandboxes/{other}/desktop/viewer/"
    assert plain.get(other_viewer, params={"token": token}).status_code == 403
    # The page's socket wants the cookie too: without it, the handshake is refused.
    assert page.goto(viewer).status == 401  # type: ignore[union-attr]
    outcome = page.evaluate(
        """(url) => new Promise((done) => {
            const ws = new WebSocket(url.replace('http', 'ws') + 'websockify');
            ws.onopen = () => done('open');
            ws.onerror = () => done('refused');
        })""",
        viewer,
    )
    assert outcome == "refused"
    for attempt in Retrying(stop=stop_after_delay(60), wait=wait_fixed(1), reraise=True):
        with attempt:
            expired = plain.get(short)
            assert expired.status_code == 401
    assert "expired" in expired.json()["error"]["message"]
    response = page.goto(short)
    assert response is not None and response.status == 401
    plain.close()


def test_ide_loads_and_opens_a_sandbox_file(sandbox: Desktop, page: Page) -> None:
    """code-server's workbench loads through the server (no host port) and opens a file
    written in the sandbox; without the IDE cookie its paths are 401."""
    text = f"written in the sandbox at {time.time()}"
    written = sandbox.http.put(
        f"/sandboxes/{sandbox.id}/files",
        params={"path": "/home/user/sietch-hello.txt"},
        content=text.encode(),
    )
    assert written.status_code < 300, written.text
    try:
        sandbox.wait_for(f"curl -fsS -o /dev/null http://127.0.0.1:{desktop.IDE_PORT}/healthz")
    except AssertionError as exc:
        log = sandbox.sh(f"tail -n 30 {desktop.LOG}")
        raise AssertionError(f"code-server never answered; {desktop.LOG}:\n{log}") from exc
    ide = sandbox.get("ide")["url"]
    assert "/ide/?folder=%2Fhome%2Fuser&token=" in ide
    prefix = f"{sandbox.base}/api/v1/sandboxes/{sandbox.id}/ide/"
    assert httpx.get(prefix, timeout=60).status_code == 401
    assert httpx.get(prefix, cookies={"sietch_ide": "forged"}, timeout=60).status_code == 401

    # code-server's first answer under TCG can outlast Playwright's 30 s: wait for the commit.
    response = page.goto(ide, timeout=WORKBENCH_MS, wait_until="commit")
    assert response is not None and response.ok, response and response.status
    assert "token=" not in page.url
    expect(page.locator(".monaco-workbench")).to_be_visible(timeout=WORKBENCH_MS)
    item = page.get_by_role("treeitem", name=re.compile("sietch-hello.txt"))
    expect(item).to_be_visible(timeout=WORKBENCH_MS)
    item.click()
    expect(page.locator(".monaco-editor .view-lines").first).to_contain_text(
        text, timeout=WORKBENCH_MS
    )
    RESULTS.mkdir(exist_ok=True)
    page.screenshot(path=RESULTS / "ide.png")
    assert sandbox.get("ports") == {"data": [], "count": 0}  # nothing was exposed for either


def test_mcp_desktop_url(sandbox: Desktop, api_server: ApiServer) -> None:
    """The MCP tool desktop_url (server side, /mcp) hands out a working viewer link."""

    async def ask() -> dict[str, Any]:
        async with http_mcp(api_server) as client:
            out: dict[str, Any] = await call(
                client, "desktop_url", sandbox_id=sandbox.id, view_only=True
            )
            return out

    # In a thread of its own: Playwright's sync API holds this thread's event loop.
    with ThreadPoolExecutor(1) as pool:
        out = pool.submit(asyncio.run, ask()).result()
    assert out["view_only"] is True and "vnc_password" not in out
    assert out["viewer_url"].startswith(f"{api_server.url}/api/v1/sandboxes/{sandbox.id}/")
    visit = httpx.get(out["viewer_url"], timeout=60)
    assert visit.status_code == 303 and "sietch_desktop=" in visit.headers["set-cookie"]
