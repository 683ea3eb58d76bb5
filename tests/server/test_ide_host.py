"""The IDE's own host (``ide-{id}.{SIETCH_PROXY_DOMAIN}``) on a real app, in process and
without VMs: a link's visit there sets a cookie of that host's root, and the API-origin
IDE path is refused (the browser test is tests/desktop/test_ide_origin.py)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator

import httpx

from sietch.config import Settings
from sietch.core.tenants import Tenants
from sietch.server.app import create_app
from sietch.server.state import ServerState
from tests.conftest import short_tmpdir

SB = "sb-0123456789ab"
HOST = f"http://ide-{SB}.sietch.test:7000"


@contextlib.asynccontextmanager
async def ide_app() -> AsyncIterator[tuple[httpx.AsyncClient, ServerState]]:
    """The app with a proxy domain, started (its lifespan) in the test's own task."""
    state_dir = short_tmpdir("sti")
    try:
        settings = Settings(state_dir=state_dir, pool_size=0, proxy_domain="sietch.test")
        app = create_app(settings, tenants=Tenants(state_dir / "tenants.db"))
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url=HOST) as client,
        ):
            yield client, app.state.sietch
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


async def test_a_link_on_the_ide_host_sets_a_cookie_of_its_root() -> None:
    """The token is traded on the IDE's host for a host-only cookie at ``/`` and a redirect
    to the same URL without it; the cookie passes the gate (then the sandbox is unknown),
    no cookie is 401."""
    async with ide_app() as (client, state):
        token, _ = state.browser_tokens.issue(SB, "ide", ttl_s=60)
        answer = await client.get(f"/?folder=%2Fhome%2Fuser&token={token}")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/?folder=%2Fhome%2Fuser"
        cookie = answer.headers["set-cookie"]
        assert cookie.startswith(f"sietch_ide={token};") and "Path=/;" in cookie
        assert "domain" not in cookie.lower()  # this host's only
        past_the_gate = await client.get("/x/y")
        assert past_the_gate.json()["error"]["code"] == "sandbox_not_found"
        client.cookies.clear()
        assert (await client.get("/x/y")).status_code == 401


async def test_the_api_origin_ide_path_is_refused() -> None:
    """With a proxy domain the API-origin path serves no IDE, even with a valid token: 404
    naming the IDE's host."""
    async with ide_app() as (client, state):
        token, _ = state.browser_tokens.issue(SB, "ide", ttl_s=60)
        refused = await client.get(
            f"http://sietch.test:7000/api/v1/sandboxes/{SB}/ide/", params={"token": token}
        )
        assert refused.status_code == 404
        assert f"ide-{SB}.sietch.test" in refused.json()["error"]["message"]
