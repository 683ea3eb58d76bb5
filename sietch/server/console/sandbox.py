"""One sandbox's pages: overview (metrics, ports, network, snapshot), terminal, files,
console log, desktop; and the terminal's WebSocket and the port proxy behind the login.

As in :mod:`.sandboxes`, each action is the REST API's route function, called
with the login's caller after the path's sandbox was checked against its
tenant (``LoginDep`` comes first in every signature: it runs before
``SandboxDep`` wakes the sandbox).
"""

from __future__ import annotations

from html import escape
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Request, WebSocket
from fastapi.responses import StreamingResponse
from starlette.responses import RedirectResponse, Response

from sietch.errors import SietchError
from sietch.server.console.charts import charts
from sietch.server.console.render import ConsoleRoute, back, page, validated
from sietch.server.console.session import LoginDep, gate, socket_caller
from sietch.server.deps import GuestPathDep, ManagerDep, SandboxDep, StateDep
from sietch.server.exec_ws import refuse, serve_exec_socket
from sietch.server.routes import files, ide, ports, sandboxes, snapshots, viewer
from sietch.server.routes.proxy import http_proxy
from sietch.server.routes.proxy.upstream import origin, upstream
from sietch.server.schemas import NetworkSet, PortCreate, SnapshotCreate, check_guest_path

router = APIRouter(prefix="/sandboxes/{sandbox_id}", route_class=ConsoleRoute)
ws_router = APIRouter(prefix="/sandboxes/{sandbox_id}")
TEXT_LIMIT = 1024 * 1024
"""Files larger than this are offered for download, not shown."""
GUEST_PAGE_CSP = "sandbox allow-scripts allow-forms allow-popups allow-downloads"
"""A guest's page through the console's proxy runs in an opaque origin: it shares the
console's address, and must not read the console's pages nor act with its login."""
TABS = (("", "Overview"), ("terminal", "Terminal"), ("files", "Files"), ("logs", "Console log"))


async def _page(
    request: Request,
    manager: ManagerDep,
    caller: LoginDep,
    sandbox_id: str,
    tab: str,
    **context: Any,
) -> Response:
    sb = await sandboxes.get_sandbox(sandbox_id, manager)
    tabs = [*TABS, ("desktop", "Desktop")] if sb.desktop else list(TABS)
    return page(
        request,
        f"sandbox_{tab or 'overview'}.html",
        title=f"Sandbox {sandbox_id}",
        section="sandboxes",
        caller=caller,
        sb=sb,
        tab=tab,
        tabs=tabs,
        **context,
    )


@router.get("", name="console-sandbox")
async def overview(
    request: Request, sandbox_id: str, caller: LoginDep, manager: ManagerDep
) -> Response:
    return await _page(request, manager, caller, sandbox_id, "")


@router.get("/metrics", name="console-metrics")
async def metrics(sandbox_id: str, caller: LoginDep, manager: ManagerDep) -> Response:
    """The overview's charts (an inline SVG each), polled by the page."""
    del caller
    try:
        report = await manager.metrics(sandbox_id)
    except SietchError as exc:  # not live: say so where the charts would be
        message = escape(exc.message)
        return Response(f'<p class="hint">No metrics: {message}</p>', media_type="text/html")
    return Response(charts(report), media_type="text/html")


@router.post("/network", name="console-network")
async def set_network(
    request: Request, sandbox_id: str, caller: LoginDep, manager: ManagerDep
) -> Response:
    del caller
    form = await request.form()
    allow = str(form.get("allow", "")).replace(",", " ").split()
    policy = validated(NetworkSet, {"internet": form.get("internet") == "on", "allow": allow})
    await sandboxes.set_network(sandbox_id, policy, manager)
    return back(request, f"/ui/sandboxes/{sandbox_id}", notice="network policy changed")


@router.post("/ports", name="console-expose")
async def expose(
    request: Request,
    sandbox_id: str,
    caller: LoginDep,
    manager: ManagerDep,
    port: Annotated[str, Form()],
) -> Response:
    del caller
    body = validated(PortCreate, {"port": port})
    mapping = await ports.expose_port(sandbox_id, body, manager)
    return back(request, f"/ui/sandboxes/{sandbox_id}", notice=f"port {mapping.guest_port} exposed")


@router.post("/ports/{port}/unexpose", name="console-unexpose")
async def unexpose(
    request: Request, sandbox_id: str, port: int, caller: LoginDep, manager: ManagerDep
) -> Response:
    del caller
    await ports.unexpose_port(sandbox_id, port, manager)
    return back(request, f"/ui/sandboxes/{sandbox_id}", notice=f"port {port} closed")


@router.api_route(
    "/ports/{port}/proxy/{path:path}", methods=http_proxy.METHODS, name="console-proxy"
)
async def proxy(
    request: Request,
    sandbox_id: str,
    port: int,
    path: str,
    *,
    caller: LoginDep,
    manager: ManagerDep,
    state: StateDep,
) -> Response:
    """An exposed port through the console: the API's proxy, behind the login instead of a
    key, the login's cookie not passed on, and the guest's answer sandboxed (CSP)."""
    del path, caller
    await manager.awake(sandbox_id)
    url, headers = upstream(request, origin(manager.port(sandbox_id, port), "http"))
    answer = await http_proxy.forward(
        request,
        state.proxy_client(),
        url,
        gate(state).strip_cookie(headers),
        lease=manager.activity.lease(sandbox_id),
        what=f"port {port} of sandbox {sandbox_id}",
        port=port,
    )
    answer.headers["content-security-policy"] = GUEST_PAGE_CSP
    return answer


@router.post("/snapshot", name="console-snapshot")
async def snapshot(
    request: Request,
    sandbox_id: str,
    caller: LoginDep,
    manager: ManagerDep,
    name: Annotated[str, Form()] = "",
) -> Response:
    del caller
    body = validated(SnapshotCreate, {"name": name.strip() or None})
    snap = await snapshots.snapshot_sandbox(sandbox_id, manager, body)
    return back(request, f"/ui/sandboxes/{sandbox_id}", notice=f"snapshot {snap.id} taken")


@router.get("/terminal", name="console-terminal")
async def terminal(
    request: Request, sandbox_id: str, caller: LoginDep, manager: ManagerDep
) -> Response:
    return await _page(request, manager, caller, sandbox_id, "terminal")


@ws_router.websocket("/terminal/ws", name="console-terminal-ws")
async def terminal_socket(websocket: WebSocket, sandbox_id: str) -> None:
    """The API's exec WebSocket (:mod:`sietch.server.exec_ws`) behind the login: the page
    sends the start message (a login shell on a PTY), keystrokes, and resizes."""
    try:
        await socket_caller(websocket)
    except SietchError as exc:
        await refuse(websocket, exc)
        return
    await serve_exec_socket(websocket, sandbox_id)


@router.get("/files", name="console-files")
async def files_page(
    request: Request,
    sandbox_id: str,
    caller: LoginDep,
    manager: ManagerDep,
    path: str = "/home/user",
) -> Response:
    """A directory's entries, or a text file's contents."""
    dir_path = path
    entries: list[Any] = []
    shown: str | None = None
    async with manager.use(sandbox_id) as sandbox:
        path = check_guest_path(path)
        stat = await files.stat_file(path, sandbox)
        if stat.type == "dir":
            entries = (await files.list_files(path, sandbox)).data
        else:
            dir_path = path.rpartition("/")[0] or "/"
            shown = await _text(sandbox, path) if stat.size <= TEXT_LIMIT else None
    return await _page(
        request,
        manager,
        caller,
        sandbox_id,
        "files",
        path=path,
        dir_path=dir_path,
        entries=sorted(entries, key=lambda e: (e.type != "dir", e.name)),
        file=None if dir_path == path else stat,
        text=shown,
    )


async def _text(sandbox: Any, path: str) -> str | None:
    data = bytearray()
    async for chunk in sandbox.read_file(path):
        data += chunk
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


@router.get("/files/download", name="console-download")
async def download(caller: LoginDep, path: GuestPathDep, sandbox: SandboxDep) -> StreamingResponse:
    """The file's bytes, as ``GET /api/v1/sandboxes/{id}/files``, saved under its name."""
    del caller
    answer = await files.read_file(path, sandbox)
    name = quote(path.rpartition("/")[2])
    answer.headers["content-disposition"] = f"attachment; filename*=UTF-8''{name}"
    return answer


@router.put("/files", name="console-upload")
async def upload(
    request: Request, caller: LoginDep, path: GuestPathDep, sandbox: SandboxDep
) -> Response:
    """The page's drag-and-drop upload: ``PUT /api/v1/sandboxes/{id}/files``."""
    del caller
    written = await files.write_file(request, path, sandbox)
    return Response(written.model_dump_json(), media_type="application/json")


@router.get("/logs", name="console-logs")
async def logs(
    request: Request, sandbox_id: str, caller: LoginDep, manager: ManagerDep
) -> Response:
    log = manager.console_log(sandbox_id, 64 * 1024)
    return await _page(request, manager, caller, sandbox_id, "logs", log=log)


@router.get("/desktop", name="console-desktop")
async def desktop(
    request: Request, sandbox_id: str, caller: LoginDep, manager: ManagerDep, state: StateDep
) -> Response:
    """The desktop viewer's own page (noVNC), embedded, on a fresh viewer link."""
    view = viewer.desktop_link(state, manager, str(request.base_url), sandbox_id, False, None)
    return await _page(request, manager, caller, sandbox_id, "desktop", viewer_url=view.viewer_url)


@router.get("/ide", name="console-ide")
async def open_ide(
    request: Request, sandbox_id: str, caller: LoginDep, manager: ManagerDep, state: StateDep
) -> Response:
    """To code-server in the sandbox, on a fresh IDE link."""
    del caller
    link = await ide.ide_url(sandbox_id, request, manager=manager, state=state)
    return RedirectResponse(link.url, status_code=303)
