"""The e2b-desktop SDK, unchanged, against a real Sietch server: its own ``Sandbox.create()``
(it starts Xvfb and Xfce through commands in the ``desktop`` template, Sietch's
``desktop-e2b`` image), screenshots, pointer and keys seen inside the guest, and the
noVNC stream reached through Sietch by its ``{port}-{id}.{domain}`` URL."""

from __future__ import annotations

import io
import socket
import urllib.parse
from collections.abc import Callable, Iterator

import httpx
import pytest
from e2b_desktop import Sandbox
from PIL import Image
from tenacity import Retrying, stop_after_delay, wait_fixed
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from tests.e2b.conftest import pointed_at
from tests.server.harness import ApiServer

pytestmark = pytest.mark.timeout(1800)  # the desktop template's first boot under TCG
DOMAIN = "e2b-desktop.test"
"""SIETCH_PROXY_DOMAIN of this module's server: no DNS needed, the tests send Host headers."""
RESOLUTION = (1000, 700)
"""Not the SDK's default (1024x768): the screenshot's size is the one asked for."""
CREATE_TIMEOUT_S = 1500
"""The first create cold-boots the image and takes its template: minutes under TCG."""
XEV_LOG = "/tmp/xev.log"


@pytest.fixture(scope="module")
def server() -> Iterator[ApiServer]:
    """A server of its own, with a proxy domain, and the E2B environment pointed at it."""
    srv = ApiServer(proxy_domain=DOMAIN)
    srv.start()
    try:
        with pointed_at(srv):
            yield srv
    finally:
        srv.cleanup()


@pytest.fixture(scope="module")
def desktop(server: ApiServer) -> Iterator[Sandbox]:
    """e2b-desktop's create, as its users call it (template ``desktop``), plus an xev
    window in its session that logs the input it gets."""
    sbx = Sandbox.create(resolution=RESOLUTION, timeout=3600, request_timeout=CREATE_TIMEOUT_S)
    try:
        sbx.commands.run(f"stdbuf -oL xev -name sietch-xev > {XEV_LOG} 2>&1", background=True)
        yield sbx
    finally:
        sbx.kill()


def until(check: Callable[[], bool], what: str, deadline: float = 120) -> None:
    """Retry ``check`` until it is true, or fail naming ``what`` after ``deadline`` seconds."""
    for attempt in Retrying(stop=stop_after_delay(deadline), wait=wait_fixed(1), reraise=True):
        with attempt:
            assert check(), what


def xev_window(sbx: Sandbox) -> tuple[int, int]:
    """The centre of the xev window on the screen, once it is mapped."""
    found: dict[str, int] = {}

    def mapped() -> bool:
        out = sbx.commands.run(
            "xdotool search --onlyvisible --name '^sietch-xev$' getwindowgeometry --shell"
        ).stdout
        found.update(
            {k: int(v) for k, v in (line.split("=") for line in out.split()) if k != "SCREEN"}
        )
        return "WIDTH" in found

    until(mapped, "the xev window on the screen", 300)
    return found["X"] + found["WIDTH"] // 2, found["Y"] + found["HEIGHT"] // 2


def xev_log(sbx: Sandbox) -> str:
    return str(sbx.files.read(XEV_LOG))


def test_screenshot_is_a_png_of_the_requested_resolution(desktop: Sandbox) -> None:
    """screenshot() (scrot in the guest) is a PNG of the resolution given at create, and
    get_screen_size() says the same."""
    image = Image.open(io.BytesIO(bytes(desktop.screenshot())))
    assert image.format == "PNG" and image.size == RESOLUTION
    assert desktop.get_screen_size() == RESOLUTION


def test_move_and_cursor_position_agree(desktop: Sandbox) -> None:
    """After move_mouse, get_cursor_position (xdotool in the guest) reports that point."""
    desktop.move_mouse(321, 234)
    assert desktop.get_cursor_position() == (321, 234)
    desktop.move_mouse(17, 640)
    assert desktop.get_cursor_position() == (17, 640)


def test_clicks_and_typing_reach_a_window(desktop: Sandbox) -> None:
    """A left and a right click on the xev window, then typed text, arrive there as
    button and key presses."""
    x, y = xev_window(desktop)
    desktop.left_click(x, y)
    until(lambda: "ButtonPress event" in xev_log(desktop), "a button press seen by xev")
    desktop.right_click(x, y)
    until(lambda: ", button 3," in xev_log(desktop), "a right button press seen by xev")
    desktop.write("hi")
    desktop.press("enter")
    keysyms = ("(keysym 0x68, h)", "(keysym 0x69, i)", "(keysym 0xff0d, Return)")

    def typed() -> bool:
        log = xev_log(desktop)
        return all(k in log for k in keysyms)

    until(typed, f"{', '.join(keysyms)} seen by xev")


def test_stream_url_reaches_novnc_through_sietch(desktop: Sandbox, server: ApiServer) -> None:
    """stream.start() runs x11vnc and noVNC in the guest; its URL's host is
    ``6080-{id}.{domain}``, which Sietch serves (with the sandbox's traffic token): the
    noVNC page, and a WebSocket to the guest's VNC server; without the token it is refused."""
    desktop.stream.start()
    url = urllib.parse.urlsplit(desktop.stream.get_url())
    host = f"6080-{desktop.sandbox_id}.{DOMAIN}"
    assert url.hostname == host and url.path == "/vnc.html"
    token = desktop.traffic_access_token
    assert token
    headers = {"Host": host, "E2B-Traffic-Access-Token": token}
    page = httpx.get(f"{server.url}{url.path}?{url.query}", headers=headers, timeout=120)
    assert page.status_code == 200 and "noVNC" in page.text, (page.status_code, page.text[:500])
    refused = httpx.get(f"{server.url}{url.path}", headers={"Host": host}, timeout=120)
    assert refused.status_code == 401
    wrong = httpx.get(
        f"{server.url}{url.path}",
        headers={"Host": host, "E2B-Traffic-Access-Token": "not-it"},
        timeout=120,
    )
    assert wrong.status_code == 401
    # The socket goes to the server; the URI gives the WebSocket its Host.
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    with connect(
        f"ws://{host}/websockify",
        sock=sock,
        additional_headers={"E2B-Traffic-Access-Token": token},
        subprotocols=[Subprotocol("binary")],  # as noVNC asks
        open_timeout=120,
    ) as ws:
        banner = ws.recv(timeout=120)
    assert isinstance(banner, bytes) and banner.startswith(b"RFB 003."), banner
