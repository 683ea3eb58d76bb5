"""The web console in headless Chromium: how soon the list shows 50 sandboxes, and how
soon a keypress in the terminal is echoed on screen.

A real server (``sietch.server`` in a subprocess, fresh state dir) with 50
sandboxes made through the API; Debian's chromium driven by Playwright, signed
in to ``/ui`` with an API key. Both figures are measured inside the page, on
its own clock (``performance.now()``), so Playwright's round trips don't count:

- list_ready_ms: from navigation start until the 50th row is in the DOM (a
  MutationObserver installed before the page loads notes the moment).
- terminal_echo_ms: from the ``keydown`` of a key typed into the terminal until
  xterm.js has drawn the shell's echo of it (a MutationObserver on its rows).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import shutil
import sys
from pathlib import Path
from typing import Any

import httpx
from common import Target, api_server, median, p95, report
from playwright.sync_api import Page, sync_playwright

# The console tests' Chromium flags: reused, not copied.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.desktop.browser import ARGS as CHROMIUM_ARGS

TARGETS = {"list_ready_ms": Target(500), "terminal_echo_ms": Target(100)}
SETTINGS = {
    "SIETCH_CREATE_RATE_PER_MIN": "6000",
    "SIETCH_CREATE_BURST": "100",
    "SIETCH_MIN_MEMORY_MIB": "128",
}
ROWS_AT = """(want) => {
    new MutationObserver((_, seen) => {
        if (document.querySelectorAll('tr[data-sandbox]').length >= want) {
            window.__rowsAt = performance.now();
            seen.disconnect();
        }
    }).observe(document, {childList: true, subtree: true});
}"""
ARM_ECHO = """() => {
    const rows = document.querySelector('#terminal .xterm-rows');
    const count = () => (rows.textContent.match(/x/g) || []).length;
    const before = count();
    let down = null;
    document.addEventListener('keydown', () => { down = performance.now(); },
                              {capture: true, once: true});
    window.__echo = new Promise((done) => {
        const seen = new MutationObserver(() => {
            if (down !== null && count() > before) {
                seen.disconnect();
                done(performance.now() - down);
            }
        });
        seen.observe(rows, {childList: true, subtree: true, characterData: true});
    });
}"""


def make_sandboxes(url: str, key: str, n: int) -> list[str]:
    with httpx.Client(
        base_url=url + "/api/v1", headers={"Authorization": f"Bearer {key}"}, timeout=600
    ) as api:

        def one(i: int) -> str:
            made = api.post("/sandboxes", json={"memory_mib": 128, "labels": {"n": str(i)}})
            made.raise_for_status()
            sandbox_id: str = made.json()["id"]
            return sandbox_id

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            return list(pool.map(one, range(n)))


def sign_in(page: Page, url: str, key: str) -> None:
    page.goto(url + "/ui/login")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(url + "/ui/")


def list_ready(page: Page, url: str, n: int) -> float:
    page.goto(url + "/ui/", wait_until="commit")
    page.wait_for_function("() => window.__rowsAt !== undefined", timeout=60_000)
    at: float = page.evaluate("window.__rowsAt")
    assert page.locator("tr[data-sandbox]").count() == n
    return at


def terminal_echo(page: Page, url: str, sandbox_id: str, runs: int) -> list[float]:
    page.goto(f"{url}/ui/sandboxes/{sandbox_id}/terminal")
    page.wait_for_selector("#terminal[data-state=connected]", timeout=120_000)
    page.wait_for_timeout(2000)  # the login shell's prompt settles
    times = []
    for _ in range(runs):
        page.evaluate(ARM_ECHO)
        page.keyboard.press("x")
        times.append(float(page.evaluate("window.__echo")))
    return times


def measure(n: int, list_runs: int, echo_runs: int) -> dict[str, Any]:
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("no chromium on the host: ./bootstrap.sh test installs it")
    with api_server(settings=SETTINGS) as (url, key):
        ids = make_sandboxes(url, key, n)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                context = browser.new_context(viewport={"width": 1280, "height": 800})
                page = context.new_page()
                sign_in(page, url, key)
                page.add_init_script(f"({ROWS_AT})({n})")
                lists = [list_ready(page, url, n) for _ in range(list_runs)]
                echoes = terminal_echo(page, url, ids[0], echo_runs)
            finally:
                browser.close()
    return {
        "sandboxes": n,
        "list_ready_ms": round(median(lists), 1),
        "list_ready_p95_ms": round(p95(lists), 1),
        "terminal_echo_ms": round(median(echoes), 1),
        "terminal_echo_p95_ms": round(p95(echoes), 1),
        "list_runs": list_runs,
        "echo_runs": echo_runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sandboxes", type=int, default=50)
    parser.add_argument("--list-runs", type=int, default=20)
    parser.add_argument("--echo-runs", type=int, default=50)
    args = parser.parse_args()
    report(measure(args.sandboxes, args.list_runs, args.echo_runs), TARGETS)


if __name__ == "__main__":
    main()
