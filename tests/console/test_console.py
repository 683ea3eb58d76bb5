"""The web console in headless Chromium: sign in, create a sandbox, use its terminal and
files, delete it, all with the mouse and with the keyboard alone, and no serious
accessibility issue on its pages (axe-core)."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.console.conftest import CREATE_S, VIEWPORT, Console, create

pytestmark = pytest.mark.timeout(900)
CREATED_MS = CREATE_S * 1000


def new_row(page: Page, label: str) -> str:
    """The id of the list's row carrying ``label`` (once it is there)."""
    row = page.locator("tr[data-sandbox]", has_text=label)
    expect(row).to_have_count(1, timeout=CREATED_MS)
    sandbox_id = row.get_attribute("data-sandbox")
    assert sandbox_id
    return sandbox_id


def test_create_use_and_delete_a_sandbox(
    console: Console, api: httpx.Client, cleanup: list[str], tmp_path: Path
) -> None:
    """Sign in; create a sandbox with the form; it is listed; its terminal runs
    `echo hi-$((6*7))` and shows hi-42; a file dropped on the file browser is listed and
    downloads back identical; deleting it (after a confirmation) takes it off the list."""
    page = console.page
    page.goto(console.url)
    expect(page).to_have_url(re.compile(r"/ui/login"))
    console.shot("sign-in")
    console.sign_in()
    page.get_by_label("Labels").fill("test=create-use-delete")
    page.get_by_role("button", name="Create", exact=True).click(timeout=CREATED_MS)
    sandbox_id = new_row(page, "test=create-use-delete")
    cleanup.append(sandbox_id)
    expect(page.locator(f"tr[data-sandbox={sandbox_id}]")).to_have_attribute(
        "data-state", "running"
    )
    console.shot("sandboxes")

    page.get_by_role("link", name=sandbox_id, exact=True).click()
    expect(page.get_by_test_id("state")).to_have_text("running")
    expect(page.locator("#charts svg").first).to_be_visible(timeout=30_000)
    console.shot("sandbox")

    page.get_by_role("link", name="Terminal").click()
    expect(page.locator("#terminal")).to_have_attribute("data-state", "connected", timeout=60_000)
    page.keyboard.type("echo hi-$((6*7))\n")
    expect(page.locator("#terminal .xterm-rows")).to_contain_text("hi-42", timeout=60_000)
    console.shot("terminal")
    before = page.locator("#terminal").get_attribute("data-size")
    page.set_viewport_size({"width": 900, "height": 700})  # the PTY follows the window
    expect(page.locator("#terminal")).not_to_have_attribute("data-size", before or "")
    size = page.locator("#terminal").get_attribute("data-size")
    page.keyboard.type("stty size\n")
    expect(page.locator("#terminal .xterm-rows")).to_contain_text(f"{size}", timeout=60_000)
    page.set_viewport_size(VIEWPORT)

    page.get_by_role("link", name="Files").click()
    page.wait_for_url(re.compile("/files$"))
    page.wait_for_load_state()
    data = os.urandom(200_000)
    page.evaluate(
        """([name, b64]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const moved = new DataTransfer();
            moved.items.add(new File([bytes], name));
            document.getElementById('drop').dispatchEvent(
                new DragEvent('drop', {dataTransfer: moved, bubbles: true, cancelable: true}));
        }""",
        ["dropped.bin", base64.b64encode(data).decode()],
    )
    expect(page.locator("tr[data-name='dropped.bin']")).to_be_visible(timeout=60_000)
    console.shot("files")
    with page.expect_download() as download:
        page.get_by_role("link", name="Download dropped.bin").click()
    saved = tmp_path / "back.bin"
    download.value.save_as(saved)
    assert saved.read_bytes() == data

    page.goto(console.url)
    page.get_by_role("link", name=f"Delete {sandbox_id}").click()
    console.shot("delete-confirm")
    page.get_by_role("button", name="Delete", exact=True).click()
    expect(page.locator(f"tr[data-sandbox={sandbox_id}]")).to_have_count(0)
    assert api.get(f"/sandboxes/{sandbox_id}").status_code == 404


def tab_to(page: Page, selector: str, limit: int = 200) -> None:
    """Press Tab until the element ``selector`` names has the focus."""
    for _ in range(limit):
        if page.evaluate("(s) => document.activeElement?.matches(s) ?? false", selector):
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"Tab never reached {selector}")


def test_create_and_delete_with_the_keyboard_alone(
    console: Console, api: httpx.Client, cleanup: list[str]
) -> None:
    """Signing in, creating a sandbox and deleting it need nothing but Tab, typing and
    Enter."""
    page = console.page
    page.goto(console.url)
    tab_to(page, "#key")
    page.keyboard.type(console.server.api_key)
    page.keyboard.press("Enter")
    page.wait_for_url(console.url)
    tab_to(page, "#c-labels")
    page.keyboard.type("test=keyboard")
    page.keyboard.press("Enter")
    sandbox_id = new_row(page, "test=keyboard")
    cleanup.append(sandbox_id)
    tab_to(page, f"a[aria-label='Delete {sandbox_id}']")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile("/delete$"))
    tab_to(page, "button.danger")
    page.keyboard.press("Enter")
    expect(page.locator(f"tr[data-sandbox={sandbox_id}]")).to_have_count(0)
    assert api.get(f"/sandboxes/{sandbox_id}").status_code == 404


def axe_issues(page: Page) -> list[str]:
    """axe-core's serious and critical violations on the page (axe served by the console)."""
    page.add_script_tag(url="/ui/vendor/axe.js")
    found: list[str] = page.evaluate(
        """async () => (await axe.run()).violations
            .filter((v) => ['serious', 'critical'].includes(v.impact))
            .map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target).join(', ')})`)"""
    )
    return found


def test_main_pages_have_no_serious_accessibility_issue(
    console: Console, api: httpx.Client, cleanup: list[str]
) -> None:
    """axe-core finds no serious or critical issue on sign-in, the list, a sandbox's tabs and
    the snapshot tree."""
    sandbox_id = create(api, cleanup, labels={"test": "axe"})
    console.page.goto(console.url)
    issues = {"sign-in": axe_issues(console.page)}
    console.sign_in()
    pages = {
        "sandboxes": "",
        "overview": f"sandboxes/{sandbox_id}",
        "terminal": f"sandboxes/{sandbox_id}/terminal",
        "files": f"sandboxes/{sandbox_id}/files",
        "logs": f"sandboxes/{sandbox_id}/logs",
        "snapshots": "snapshots",
    }
    for name, path in pages.items():
        console.page.goto(console.url + path)
        console.page.wait_for_load_state("networkidle")
        issues[name] = axe_issues(console.page)
    assert {k: v for k, v in issues.items() if v} == {}
    # The check can fail: an image without a text alternative is a critical issue.
    console.page.evaluate(
        "document.body.append(Object.assign(document.createElement('img'), {src: 'data:,'}))"
    )
    assert any(issue.startswith("image-alt") for issue in axe_issues(console.page))


def test_filter_and_bulk_delete(console: Console, api: httpx.Client, cleanup: list[str]) -> None:
    """The list filters by label and by state; two rows selected are deleted at once
    after one confirmation, and the third sandbox stays."""
    doomed = [create(api, cleanup, labels={"test": "bulk"}) for _ in range(2)]
    kept = create(api, cleanup, labels={"test": "kept"})
    assert api.post(f"/sandboxes/{kept}/pause").status_code == 200
    console.sign_in()
    page = console.page
    page.get_by_label("Label", exact=True).fill("test=bulk")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("tr[data-sandbox]")).to_have_count(2)
    page.get_by_label("Label", exact=True).fill("")
    page.get_by_label("State").select_option("paused")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator(f"tr[data-sandbox={kept}]")).to_have_count(1)
    expect(page.locator("tr[data-sandbox]")).to_have_count(1)

    page.goto(console.url + "?label=test%3Dbulk")
    for sandbox_id in doomed:
        page.get_by_label(f"Select {sandbox_id}").check()
    page.get_by_role("button", name="Delete selected…").click()
    expect(page.get_by_text("these 2 sandboxes")).to_be_visible()
    page.get_by_role("button", name="Delete", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("deleted 2")
    assert [api.get(f"/sandboxes/{i}").status_code for i in [*doomed, kept]] == [404, 404, 200]
