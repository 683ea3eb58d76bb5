"""The console's sign-in: pages need it, a login sees only its key's tenant, it ends when
the key is revoked, and another origin cannot make the browser change anything."""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import expect

from tests.console.conftest import Console, create
from tests.server.harness import ApiServer, free_port


def tenant_key(server: ApiServer, tenant: str) -> str:
    """A new (non-admin) key of ``tenant``."""
    return server.tenants.create_key(tenant, f"console-{tenant}")[1]


def as_tenant(server: ApiServer, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.url + "/api/v1", headers={"Authorization": f"Bearer {key}"}, timeout=300
    )


def test_a_page_without_signing_in_redirects_to_sign_in(console: Console) -> None:
    """Any console page opened without a login lands on sign-in, and comes back after it;
    the cookie is httpOnly and SameSite=Strict and holds no API key."""
    page = console.page
    page.goto(console.url + "snapshots")
    expect(page).to_have_url(re.compile(r"/ui/login\?next=/ui/snapshots$"))
    console.shot("redirected")
    page.get_by_label("API key").fill(console.server.api_key)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(console.url + "snapshots")
    (cookie,) = console.context.cookies()
    assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"]) == (
        "sietch_console",
        True,
        "Strict",
    )
    assert console.server.api_key not in cookie["value"]
    page.get_by_role("button", name="Sign out").click()
    page.goto(console.url)
    expect(page).to_have_url(re.compile(r"/ui/login"))


def test_a_login_sees_only_its_tenant(console: Console, cleanup: list[str]) -> None:
    """Signed in with tenant A's key, the list shows A's sandbox and not B's, and B's
    sandbox page is not found, as in the API."""
    key_a, key_b = tenant_key(console.server, "console-a"), tenant_key(console.server, "console-b")
    with as_tenant(console.server, key_a) as api_a, as_tenant(console.server, key_b) as api_b:
        mine = create(api_a, cleanup, labels={"test": "tenant-a"})
        theirs = create(api_b, cleanup, labels={"test": "tenant-b"})
    console.sign_in(key_a)
    expect(console.page.get_by_test_id("tenant")).to_have_text("console-a")
    expect(console.page.locator(f"tr[data-sandbox={mine}]")).to_have_count(1)
    expect(console.page.locator(f"tr[data-sandbox={theirs}]")).to_have_count(0)
    answer = console.page.goto(f"{console.url}sandboxes/{theirs}")
    assert answer is not None and answer.status == 404
    expect(console.page.get_by_role("alert")).to_contain_text("no sandbox")
    answer = console.page.goto(f"{console.url}sandboxes/{theirs}/files/download?path=/etc/hostname")
    assert answer is not None and answer.status == 404


def test_revoking_the_key_ends_the_login(console: Console) -> None:
    """Once its API key is revoked, the login's next page goes to sign-in."""
    key = tenant_key(console.server, "console-revoked")
    console.sign_in(key)
    console.server.tenants.revoke("console-console-revoked", "console-revoked")
    console.page.goto(console.url)
    expect(console.page).to_have_url(re.compile(r"/ui/login"))


def test_a_cross_site_post_is_refused(
    console: Console, api: httpx.Client, cleanup: list[str]
) -> None:
    """A page of another origin on the same host (the same *site*, so the SameSite cookie
    goes along) that posts the delete form to the console is refused, and the sandbox stays."""
    victim = create(api, cleanup, labels={"test": "csrf"})
    console.sign_in()
    evil = f"http://127.0.0.1:{free_port()}/evil"
    form = (
        f'<form method="post" action="{console.url}sandboxes/delete">'
        f'<input name="ids" value="{victim}"></form>'
        "<script>document.forms[0].submit()</script>"
    )
    console.page.route(evil, lambda route: route.fulfill(content_type="text/html", body=form))
    with console.page.expect_response(f"{console.url}sandboxes/delete") as posted:
        console.page.goto(evil)
    assert posted.value.status == 403
    assert api.get(f"/sandboxes/{victim}").status_code == 200
