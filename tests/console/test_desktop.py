"""The console's desktop tab: the desktop viewer, embedded, shows the guest's screen.

Last of the console's tests, and slow: a desktop sandbox cold-boots (minutes under TCG).
"""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import expect
from tenacity import Retrying, stop_after_delay, wait_fixed

from sietch.images import desktop
from tests.console.conftest import Console
from tests.desktop.conftest import SPEC
from tests.desktop.test_viewer import COLOUR, READY_S, Desktop, show_colour_window, window_centre

pytestmark = pytest.mark.timeout(1500)
PIXEL = """([x, y]) => {
    const c = document.querySelector('#screen canvas');
    const d = c.getContext('2d').getImageData(x, y, 1, 1).data;
    return [c.width, c.height, d[0], d[1], d[2]];
}"""


def test_the_desktop_tab_shows_the_guest_screen(
    console: Console, api: httpx.Client, cleanup: list[str]
) -> None:
    """A window of a known colour on a desktop sandbox's screen is that colour at the same
    spot of the embedded viewer's canvas; the page links to the sandbox's IDE."""
    made = api.post("/sandboxes", json=SPEC, timeout=READY_S)  # a cold boot: minutes
    assert made.status_code == 201, made.text
    cleanup.append(made.json()["id"])
    sandbox = Desktop(api, made.json()["id"], console.server.url)
    sandbox.wait_for(f"xdpyinfo -display {desktop.DISPLAY}")
    show_colour_window(api, sandbox.id)

    console.sign_in()
    page = console.page
    page.goto(f"{console.url}sandboxes/{sandbox.id}")
    expect(page.get_by_role("link", name="Open the IDE")).to_have_attribute(
        "href", f"/ui/sandboxes/{sandbox.id}/ide"
    )
    page.get_by_role("link", name="Desktop").click()
    viewer = page.frame_locator("#desktop")
    expect(viewer.locator("body")).to_have_attribute("data-state", "connected", timeout=60_000)
    frame = next(f for f in page.frames if "/desktop/viewer/" in f.url)
    try:
        for attempt in Retrying(stop=stop_after_delay(READY_S), wait=wait_fixed(0.5), reraise=True):
            with attempt:
                x, y = window_centre(sandbox, "sietch-colour")
                assert frame.evaluate(PIXEL, [x, y]) == [1280, 800, *COLOUR], (x, y)
    finally:
        console.shot("desktop")
