"""A sandbox's overview in the console: live charts, pause and resume, a port exposed
with the form and opened through the console (sandboxed), the network policy editor,
a snapshot, the console log, and errors shown as messages."""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import expect

from tests.console.conftest import Console, create
from tests.server.harness import wait_listening


def test_the_overview_drives_the_sandbox(
    console: Console, api: httpx.Client, cleanup: list[str]
) -> None:
    """Each form on the overview does what the API would, and says so on the page."""
    sandbox_id = create(api, cleanup, labels={"test": "overview"})
    started = api.post(
        f"/sandboxes/{sandbox_id}/processes",
        json={"cmd": "cd /tmp && echo console-proxied > index.html && python3 -m http.server 8000"},
    )
    assert started.status_code == 201, started.text
    wait_listening(api, sandbox_id, 8000)
    console.sign_in()
    page = console.page
    page.goto(f"{console.url}sandboxes/{sandbox_id}")
    expect(page.locator("#charts svg")).to_have_count(2, timeout=30_000)

    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_test_id("state")).to_have_text("paused")
    page.get_by_role("button", name="Resume").click()
    expect(page.get_by_test_id("state")).to_have_text("running")

    page.get_by_label("Guest port").fill("8000")
    page.get_by_role("button", name="Expose").click()
    expect(page.locator("tr[data-port='8000']")).to_have_count(1)
    with console.context.expect_page() as opened:
        page.get_by_role("link", name="open port 8000").click()
    guest = opened.value
    guest.wait_for_load_state()
    expect(guest.locator("body")).to_contain_text("console-proxied")
    # A sandboxed page has an opaque origin: reading the console's cookies throws.
    opaque = "() => { try { return document.cookie, 'readable' } catch { return 'opaque' } }"
    assert guest.evaluate(opaque) == "opaque"
    guest.close()

    allow = page.get_by_label("Also allow (CIDRs, domain names)")
    allow.fill("not/a/name")
    page.get_by_role("button", name="Save policy").click()
    expect(page.get_by_role("alert")).to_contain_text("allow")
    page.get_by_label("Public internet").uncheck()
    allow.fill("example.org 203.0.113.0/24")
    page.get_by_role("button", name="Save policy").click()
    expect(page.get_by_role("status")).to_contain_text("network policy changed")
    console.shot("overview")
    policy = api.get(f"/sandboxes/{sandbox_id}").json()["network"]
    assert policy == {"internet": False, "allow": ["example.org", "203.0.113.0/24"]}

    page.get_by_label("Snapshot name").fill("from-the-console")
    page.get_by_role("button", name="Take a snapshot").click()
    expect(page.get_by_role("status")).to_contain_text("snapshot snap-")
    taken = re.search(r"snap-\w+", page.get_by_role("status").inner_text())
    assert taken
    assert api.get(f"/snapshots/{taken[0]}").json()["name"] == "from-the-console"
    api.delete(f"/snapshots/{taken[0]}")

    page.get_by_role("link", name="Console log").click()
    expect(page.locator("#log")).to_contain_text("sietch-agent")
    console.shot("console-log")
