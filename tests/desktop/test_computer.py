"""Computer use of a real desktop sandbox through the real HTTP API and the SDK: a page in
the guest's Chromium, screenshots taken from the host's VNC connection, input observed
inside the guest, the Anthropic and OpenAI shapes, VNC from outside, forks."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
import pytest_asyncio
import uvicorn
from mcp import Client as McpClient
from mcp.client.streamable_http import streamable_http_client
from PIL import Image
from tenacity import AsyncRetrying, RetryError, retry_if_result, stop_after_delay, wait_fixed

from sietch.client import AsyncClient, AsyncSandbox
from sietch.config import Settings
from sietch.core.live import LiveSandbox
from sietch.core.manager import Manager
from sietch.core.tenants import Tenants
from sietch.errors import InvalidArgument, NoDesktop, PayloadTooLarge
from sietch.server.app import create_app
from tests.conftest import RESULTS, keep_evidence
from tests.desktop.conftest import until_ready

pytestmark = [
    pytest.mark.timeout(1800),  # a desktop's first boot under TCG takes minutes
    # Known failure, issue 13. Measured: Chromium's first start in a guest is CPU-bound, not
    # blocked (at host load 12-15: 7 min of guest CPU in 10 min, page not shown yet; at load
    # 2-3: its window up, the file:// tab still "Loading..." after 10 min). A new QEMU
    # process re-translates all of Chromium's code under TCG, so every sandbox pays the
    # whole start. Tried (2026-12-01, load 7-12): a template with Chromium already running
    # showed a page in ~20 s after a restore, but its boot took 925-1024 s (three of them in
    # the suite), and open_url's second `chromium URL` was killed by the busy browser's
    # process singleton, whose cold successor never loaded. Next: open_url through the
    # running browser's DevTools endpoint. Not run, so the suite does not wait for it.
    pytest.mark.xfail(run=False, reason="Chromium's first start under TCG outlasts the deadline"),
]

T = TypeVar("T")
PAGE = Path(__file__).with_name("page.html")
GUEST_PAGE = "/tmp/page.html"
COLOUR = (0x33, 0x66, 0xCC)
"""The page's background."""
CENTRE = (640, 300)
"""In the page's coloured top part once Chromium shows it maximized on the 1280x800 screen,
and off the pointer, which Xvnc draws into the screen at (640, 400) at first."""
TEXT_BOX = (640, 680)
"""In the page's text box (its bottom 40 %)."""
DEADLINE = 600.0
"""Chromium's first start in an emulated guest takes a minute or more; on a loaded host,
several."""


def close_to(pixel: tuple[int, ...], colour: tuple[int, int, int], slack: int = 6) -> bool:
    return all(abs(a - b) <= slack for a, b in zip(pixel[:3], colour, strict=True))


async def until(
    probe: Callable[[], Awaitable[T | None]], what: str, deadline: float = DEADLINE
) -> T:
    """Retry ``probe`` until it returns something, or fail after ``deadline`` seconds."""
    retrying = AsyncRetrying(
        stop=stop_after_delay(deadline), wait=wait_fixed(0.5), retry=retry_if_result(_missing)
    )
    try:
        found = await retrying(probe)
    except RetryError:
        raise AssertionError(f"no {what} within {deadline:g}s") from None
    assert found is not None
    return found


def _missing(value: object) -> bool:
    return value is None


async def guest(sandbox: LiveSandbox, cmd: str) -> str:
    result = await sandbox.exec(cmd, env={"DISPLAY": ":0"})
    assert result.exit_code == 0, (cmd, result.stderr)
    return result.stdout.decode()


def pixel(png: bytes, at: tuple[int, int]) -> tuple[int, ...]:
    found: tuple[int, ...] = Image.open(io.BytesIO(png)).convert("RGB").getpixel(at)  # type: ignore[assignment]
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class QuietServer(uvicorn.Server):
    """Leaves SIGINT and SIGTERM to pytest: uvicorn would take them to stop only itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serving_app(settings: Settings, manager: Manager, tenants: Tenants) -> AsyncIterator[int]:
    """The real API over ``manager`` on a free loopback port (yielded), stopped after."""
    app = create_app(settings, tenants=tenants, manager=manager)
    port = free_port()
    server = QuietServer(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.ensure_future(server.serve())

    async def listening() -> bool | None:
        return server.started or None

    try:
        await until(listening, "the API server listening", 30)
        yield port
    finally:
        server.should_exit = True
        await task


@dataclass
class Api:
    url: str
    key: str
    sdk: AsyncClient


@pytest_asyncio.fixture(scope="module")
async def api(manager: Manager, settings: Settings) -> AsyncIterator[Api]:
    """The real API on a loopback port, serving the session's manager (one desktop template
    for every desktop test), and an SDK client with a real key."""
    tenants = Tenants(settings.state_dir / "desktop_tenants.db")
    key = tenants.create_key("default", "desktop-tests", admin=True)[1]
    async with serving_app(settings, manager, tenants) as port:
        url = f"http://127.0.0.1:{port}"
        async with AsyncClient(url, key) as sdk:
            yield Api(url, key, sdk)


async def keep_screen(sb: AsyncSandbox, live: LiveSandbox, manager: Manager) -> None:
    """Evidence of a page that did not show: the screen, the processes, the kernel's log
    (an OOM kill), and the console and QEMU logs."""
    RESULTS.mkdir(exist_ok=True)
    keep_evidence(manager, sb.id, "desktop-page")
    with contextlib.suppress(Exception):
        (RESULTS / "desktop-page.png").write_bytes(await sb.desktop.screenshot())
    report = await live.exec(["sh", "-c", "ps -eo pid,etime,time,rss,args; dmesg | tail -50"])
    (RESULTS / "desktop-page.txt").write_bytes(report.stdout + report.stderr)


@pytest_asyncio.fixture(scope="module")
async def desk(manager: Manager, api: Api) -> AsyncIterator[tuple[AsyncSandbox, LiveSandbox]]:
    """One desktop sandbox (created through the API) showing the test page in Chromium."""
    sb = await AsyncSandbox.create(
        "desktop", memory_mib=1024, disk_mib=4096, client=api.sdk, keep=True, request_timeout=None
    )
    live = manager.sandbox(sb.id)
    try:
        await until_ready(live)
        # From the guest's disk: on a loaded host, the guest's Chromium did not start an
        # HTTP fetch of its own loopback within minutes, while a file:// page showed in 45 s.
        await live.write_file(GUEST_PAGE, PAGE.read_bytes(), mode=0o644)
        await sb.desktop.open_url(f"file://{GUEST_PAGE}")

        async def shown() -> bool | None:
            return close_to(pixel(await sb.desktop.screenshot(), CENTRE), COLOUR) or None

        try:
            await until(shown, "the page's colour at the centre of the screen")
        except AssertionError:
            await keep_screen(sb, live, manager)
            raise
        yield sb, live
    finally:
        await manager.delete(sb.id)


async def test_screenshot_shows_the_page_colour(desk: tuple[AsyncSandbox, LiveSandbox]) -> None:
    """A PNG of the whole 1280x800 screen with the page's background where the page is."""
    sb, _ = desk
    png = await sb.desktop.screenshot()
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (1280, 800)
    assert close_to(pixel(png, CENTRE), COLOUR)
    assert not close_to(pixel(png, TEXT_BOX), COLOUR)  # the white text box below it


async def test_screenshot_formats_region_and_scale(desk: tuple[AsyncSandbox, LiveSandbox]) -> None:
    """jpeg and webp are encoded on the host; a region is cut out, scale resizes it."""
    sb, _ = desk
    jpeg = Image.open(io.BytesIO(await sb.desktop.screenshot(format="jpeg")))
    assert jpeg.format == "JPEG" and jpeg.size == (1280, 800)
    assert Image.open(io.BytesIO(await sb.desktop.screenshot(format="webp"))).format == "WEBP"
    part = await sb.desktop.screenshot(region=(600, 280, 80, 40), scale=0.5)
    assert Image.open(io.BytesIO(part)).size == (40, 20)
    assert close_to(pixel(part, (20, 10)), COLOUR)


async def title(live: LiveSandbox) -> str:
    """The names of Chromium's windows as the guest's X server has them: the page's title
    with " - Chromium" after it, one a line."""
    return await guest(live, "xdotool search --class chromium getwindowname %@")


async def test_typed_text_reaches_the_page(desk: tuple[AsyncSandbox, LiveSandbox]) -> None:
    """Text typed through the API lands in the page's text box, as the page says in the
    guest (its title, read with xdotool)."""
    sb, live = desk
    await sb.desktop.click(*TEXT_BOX)
    await sb.desktop.key("ctrl+a BackSpace")
    await sb.desktop.type("hello sietch 42")

    async def typed() -> str | None:
        return "ok" if "typed:hello sietch 42 - Chromium" in await title(live) else None

    await until(typed, "the typed text in the page's title", 120)


async def test_mouse_move_is_where_the_guest_says(desk: tuple[AsyncSandbox, LiveSandbox]) -> None:
    """After a move through the API, xdotool inside the guest reports that position."""
    sb, live = desk
    await sb.desktop.move(321, 234)
    assert "X=321\nY=234" in await guest(live, "xdotool getmouselocation --shell")
    assert await sb.desktop.cursor_position() == (321, 234)
    assert await sb.desktop.screen_size() == (1280, 800)


async def clicked(live: LiveSandbox, x: int, button: int) -> None:
    """Until the page reports a press of ``button`` at screen column ``x``."""

    async def found() -> str | None:
        for name in (await title(live)).splitlines():
            if name.startswith("click:"):
                cx, _, b = name.split(":", 1)[1].split(" ", 1)[0].split(",")
                if int(b) == button and abs(int(cx) - x) <= 2:
                    return name
        return None

    await until(found, f"a press of button {button} at x={x} seen by the page", 120)


async def test_anthropic_click_and_screenshot(desk: tuple[AsyncSandbox, LiveSandbox]) -> None:
    """An Anthropic-shaped left_click (scaled from a 640x400 model screen) is seen by the page;
    the answer is a tool_result image block at the model's size; cursor_position is text."""
    sb, live = desk
    content = await sb.desktop.anthropic(
        {"action": "left_click", "coordinate": [300, 150]}, display_width=640, display_height=400
    )
    await clicked(live, 600, 0)
    [block] = content
    assert block["type"] == "image" and block["source"]["media_type"] == "image/png"
    image = Image.open(io.BytesIO(base64.b64decode(block["source"]["data"])))
    assert image.size == (640, 400)
    text = await sb.desktop.anthropic(
        {"action": "cursor_position"}, display_width=640, display_height=400
    )
    assert text == [{"type": "text", "text": "X=300,Y=150"}]
    zoom = await sb.desktop.anthropic({"action": "zoom", "region": [0, 0, 639, 399]})
    assert Image.open(io.BytesIO(base64.b64decode(zoom[0]["source"]["data"]))).size == (1280, 800)


async def test_openai_click_and_screenshot(desk: tuple[AsyncSandbox, LiveSandbox]) -> None:
    """An OpenAI computer_call right click is seen by the page; the answer is the
    computer_call_output with a PNG data URL."""
    sb, live = desk
    out = await sb.desktop.openai(
        {
            "type": "computer_call",
            "call_id": "call_1",
            "action": {"type": "click", "x": 700, "y": 300, "button": "right"},
        }
    )
    await clicked(live, 700, 2)
    await sb.desktop.key("Escape")  # the context menu
    assert out["type"] == "computer_call_output" and out["call_id"] == "call_1"
    url = out["output"]["image_url"]
    assert out["output"]["type"] == "input_image" and url.startswith("data:image/png;base64,")
    assert Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size == (1280, 800)


async def test_actions_answer_json(desk: tuple[AsyncSandbox, LiveSandbox]) -> None:
    """windows lists Chromium with the page's title; the clipboard round-trips; a screenshot
    comes with an action when asked for."""
    sb, _ = desk
    windows = await sb.desktop.windows()
    assert any(w["title"].endswith(" - Chromium") for w in windows["windows"])
    assert windows["active"] is not None and windows["active"]["title"].endswith(" - Chromium")
    await sb.desktop.clipboard_set("from the host")
    assert await sb.desktop.clipboard_get() == "from the host"
    answer = await sb.desktop.click(*CENTRE, screenshot=True)
    assert close_to(pixel(base64.b64decode(answer["screenshot"]), CENTRE), COLOUR)


async def test_bad_input_is_a_clear_4xx(desk: tuple[AsyncSandbox, LiveSandbox], api: Api) -> None:
    """Off-screen points, unknown keys and buttons, huge texts and a sandbox without a
    desktop are refused with errors that name the problem."""
    sb, _ = desk
    with pytest.raises(InvalidArgument, match="off the screen"):
        await sb.desktop.click(1280, 10)
    with pytest.raises(InvalidArgument, match="unknown key 'NoSuchKey'"):
        await sb.desktop.key("ctrl+NoSuchKey")
    with pytest.raises(InvalidArgument, match="button"):
        await sb.desktop.act("click", x=1, y=1, button="fourth")
    with pytest.raises(InvalidArgument, match="unknown button"):
        await sb.desktop.openai({"type": "click", "x": 1, "y": 1, "button": "back"})
    with pytest.raises(PayloadTooLarge):
        await sb.desktop.type("x" * 20_000)
    with pytest.raises(InvalidArgument, match="resolution"):
        await AsyncSandbox.create("desktop", resolution=(10, 10), client=api.sdk)
    plain = await AsyncSandbox.create(client=api.sdk)
    async with plain:
        with pytest.raises(NoDesktop, match="has no desktop"):
            await plain.desktop.screenshot()
    before = {s.id for s in await AsyncSandbox.list(client=api.sdk)}
    with pytest.raises(NoDesktop):  # and the sandbox made for it is gone again
        await AsyncSandbox.create(resolution=(800, 600), client=api.sdk)
    assert {s.id for s in await AsyncSandbox.list(client=api.sdk)} == before


async def test_mcp_screenshot_and_computer_tools(
    desk: tuple[AsyncSandbox, LiveSandbox], api: Api
) -> None:
    """Over /mcp, screenshot is MCP image content and computer moves the pointer and
    answers cursor_position with JSON."""
    sb, _ = desk
    headers = {"Authorization": f"Bearer {api.key}"}
    async with (
        httpx.AsyncClient(headers=headers, timeout=120) as http,
        McpClient(streamable_http_client(f"{api.url}/mcp", http_client=http)) as mcp,
    ):
        shot = await mcp.call_tool("screenshot", {"sandbox_id": sb.id, "scale": 0.25})
        [image] = shot.content
        assert image.type == "image" and image.mime_type == "image/png"
        assert Image.open(io.BytesIO(base64.b64decode(image.data))).size == (320, 200)
        moved = await mcp.call_tool(
            "computer", {"sandbox_id": sb.id, "action": "move", "x": 50, "y": 60}
        )
        assert not moved.is_error, moved.content
        where = await mcp.call_tool("computer", {"sandbox_id": sb.id, "action": "cursor_position"})
        assert json.loads(where.content[0].text) == {"action": "cursor_position", "x": 50, "y": 60}
        bad = await mcp.call_tool(
            "computer", {"sandbox_id": sb.id, "action": "move", "x": 5000, "y": 1}
        )
        assert bad.is_error and "off the screen" in bad.content[0].text


async def test_cli_saves_a_screenshot(
    desk: tuple[AsyncSandbox, LiveSandbox], api: Api, tmp_path: Path
) -> None:
    """``sietch computer screenshot ID -o shot.jpg`` writes a JPEG of the screen."""
    sb, _ = desk
    sietch = Path(sys.executable).parent / "sietch"
    env = {**os.environ, "SIETCH_URL": api.url, "SIETCH_API_KEY": api.key}
    out = tmp_path / "shot.jpg"
    proc = await asyncio.create_subprocess_exec(
        str(sietch), "computer", "screenshot", sb.id, "-o", str(out), env=env
    )
    assert await proc.wait() == 0
    assert Image.open(out).format == "JPEG"


@pytest.mark.filterwarnings("ignore:TripleDES has been moved")  # vncdotool's own import
async def test_vnc_from_outside_needs_the_password(
    desk: tuple[AsyncSandbox, LiveSandbox], manager: Manager
) -> None:
    """vncdotool logs in on expose(5900) with the sandbox's vnc_password and captures a
    frame; a wrong or missing password is refused."""
    from vncdotool import api
    from vncdotool.client import AuthenticationError, VNCDoException

    sb, _ = desk
    mapping = await manager.expose(sb.id, 5900)
    password = manager.desktop(sb.id).vnc_password
    server = f"127.0.0.1::{mapping.host_port}"

    def capture(password: str | None) -> Image.Image:
        vnc = api.connect(server, password=password, timeout=60)
        try:
            vnc.refreshScreen()
            image: Image.Image = vnc.screen
            return image.copy()
        finally:
            vnc.disconnect()

    try:
        frame = await asyncio.to_thread(capture, password)
        assert frame.size == (1280, 800)
        assert close_to(frame.convert("RGB").getpixel(CENTRE), COLOUR)  # type: ignore[arg-type]
        for wrong in ("not-it", None):
            with pytest.raises((AuthenticationError, VNCDoException, TimeoutError)):
                await asyncio.to_thread(capture, wrong)
    finally:
        await manager.unexpose(sb.id, 5900)
        await asyncio.to_thread(api.shutdown)


async def test_resolution_and_dpi_at_create(
    api: Api, manager: Manager, desk: tuple[AsyncSandbox, LiveSandbox]
) -> None:
    """resolution and dpi resize the restored desktop's running X server; the record and
    the screenshots follow, and the sandbox has a password of its own."""
    sb = await AsyncSandbox.create(
        "desktop", memory_mib=1024, disk_mib=4096, resolution=(1024, 768), dpi=120, client=api.sdk
    )
    async with sb:
        assert sb.info.desktop is not None
        assert (sb.info.desktop.width, sb.info.desktop.height, sb.info.desktop.dpi) == (
            1024,
            768,
            120,
        )
        live = manager.sandbox(sb.id)
        info = await guest(live, "xdpyinfo")
        assert "1024x768 pixels" in info and "120x120 dots per inch" in info
        assert Image.open(io.BytesIO(await sb.desktop.screenshot())).size == (1024, 768)
        assert manager.desktop(sb.id).vnc_password != manager.desktop(desk[0].id).vnc_password


async def test_forks_have_their_own_screens_and_passwords(
    desk: tuple[AsyncSandbox, LiveSandbox], manager: Manager
) -> None:
    """Two forks of the desktop show the page; closing Chromium in one leaves the other's
    screen as it was; every fork has its own VNC password."""
    sb, _ = desk
    forks = await manager.fork(sb.id, 2)
    try:
        first, second = (manager.sandbox(f.id) for f in forks)
        passwords = {manager.desktop(i).vnc_password for i in (sb.id, first.id, second.id)}
        assert len(passwords) == 3
        await first.exec(["pkill", "-x", "chromium"])

        async def first_changed() -> bool | None:
            shot = await manager.desktops.screenshot(first)
            return (not close_to(shot.getpixel(CENTRE), COLOUR)) or None  # type: ignore[arg-type]

        await until(first_changed, "the page gone from the first fork's screen", 60)
        shot = await manager.desktops.screenshot(second)
        assert close_to(shot.getpixel(CENTRE), COLOUR)  # type: ignore[arg-type]
    finally:
        for fork in forks:
            await manager.delete(fork.id)
