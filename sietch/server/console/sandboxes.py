"""The console's sandboxes list: live rows, filters, create, pause/resume/hibernate, delete.

Each action calls the REST API's own route function with the login's caller,
after :func:`~sietch.server.console.session.signed_in` checked the path's
sandbox against the caller's tenant as the API's dependency does: the
console can do nothing the key could not do through the API.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from starlette.responses import RedirectResponse, Response

from sietch.core.models import SandboxState
from sietch.images import ImageStore
from sietch.server.console.elsewhere import other_nodes
from sietch.server.console.render import ConsoleRoute, back, page, validated
from sietch.server.console.session import LoginDep
from sietch.server.deps import ManagerDep, MetricsDep, StateDep
from sietch.server.routes import lifecycle, sandboxes, snapshots
from sietch.server.schemas import SandboxCreate, SandboxPublic

router = APIRouter(route_class=ConsoleRoute)
Ids = Annotated[list[str], Form(default_factory=list)]


def split_labels(text: str) -> list[str]:
    """``"a=1 b=2"`` or ``"a=1, b=2"``: the API's ``key=value`` items."""
    return [item for item in text.replace(",", " ").split() if item]


async def listed(
    manager: ManagerDep, server: StateDep, caller: LoginDep, label: str = "", state: str = ""
) -> list[SandboxPublic]:
    """The caller's sandboxes, as ``GET /api/v1/sandboxes`` lists them (a cluster node's:
    the whole cluster's, as a gateway's listing), then by state."""
    labels = split_labels(label)
    found = await sandboxes.list_sandboxes(manager, caller, labels)
    everywhere = found.data + await other_nodes(server, caller, sandboxes.parse_labels(labels))
    return [sb for sb in everywhere if not state or sb.state == state]


def _rows_context(
    request: Request, manager: ManagerDep, found: list[SandboxPublic]
) -> dict[str, Any]:
    return {
        "sandboxes": found,
        "usage": manager.sampler.latest(),
        "filtered": bool(request.query_params.get("label") or request.query_params.get("state")),
    }


@router.get("/", name="console-sandboxes")
async def sandboxes_page(
    request: Request,
    *,
    manager: ManagerDep,
    state_: StateDep,
    caller: LoginDep,
    label: str = "",
    state: str = "",
) -> Response:
    settings = state_.settings
    found = await listed(manager, state_, caller, label, state)
    return page(
        request,
        "sandboxes.html",
        title="Sandboxes",
        section="sandboxes",
        caller=caller,
        label=label,
        state=state,
        states=[s.value for s in SandboxState],
        query=request.url.query,
        images=ImageStore(settings.cache_dir).names(),
        defaults={
            "image": settings.default_image,
            "vcpus": settings.default_vcpus,
            "memory_mib": settings.default_memory_mib,
            "internet": settings.internet,
        },
        **_rows_context(request, manager, found),
    )


@router.get("/sandboxes/rows", name="console-rows")
async def rows(
    request: Request,
    *,
    manager: ManagerDep,
    server: StateDep,
    caller: LoginDep,
    label: str = "",
    state: str = "",
) -> Response:
    """The list's rows alone: the page polls them to stay live."""
    found = await listed(manager, server, caller, label, state)
    return page(request, "rows.html", **_rows_context(request, manager, found))


@router.post("/sandboxes", name="console-create")
async def create(
    request: Request,
    *,
    manager: ManagerDep,
    state: StateDep,
    metrics: MetricsDep,
    caller: LoginDep,
) -> Response:
    """``POST /api/v1/sandboxes`` from the form's fields (empty ones: the defaults)."""
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str) and v.strip()}
    body: dict[str, Any] = {
        key: fields[key] for key in ("image", "vcpus", "memory_mib", "timeout_s") if key in fields
    }
    body["labels"] = sandboxes.parse_labels(split_labels(fields.get("labels", "")))
    allow = fields.get("allow", "").replace(",", " ").split()
    body["network"] = {"internet": fields.get("internet") == "on", "allow": allow}
    spec = validated(SandboxCreate, body)
    info = await sandboxes.create_sandbox(spec, manager, state, metrics, caller)
    return RedirectResponse(f"/ui/?notice=created+{info.id}", status_code=303)


_ACTIONS = {
    "pause": snapshots.pause_sandbox,
    "resume": snapshots.resume_sandbox,
    "hibernate": lifecycle.hibernate_sandbox,
}


@router.post("/sandboxes/{sandbox_id}/lifecycle/{action}", name="console-action")
async def action(
    request: Request, sandbox_id: str, action: str, manager: ManagerDep, caller: LoginDep
) -> Response:
    """Pause, resume or hibernate, as the API's routes of those names."""
    del caller  # signed_in checked the sandbox against its tenant
    run = _ACTIONS.get(action)
    if run is None:
        return page(request, "error.html", status=404, error=f"no action {action!r}")
    info = await run(sandbox_id, manager)
    return back(request, "/ui/", notice=f"{sandbox_id} is {info.state}")


@router.get("/sandboxes/{sandbox_id}/delete", name="console-delete-one")
async def confirm_one(request: Request, sandbox_id: str, caller: LoginDep) -> Response:
    return _confirm(request, caller, [sandbox_id])


@router.post("/sandboxes/delete-confirm", name="console-delete-confirm")
async def confirm_many(request: Request, caller: LoginDep, ids: Ids) -> Response:
    """The list's "Delete selected": ask first."""
    if not ids:
        return back(request, "/ui/", error="select the sandboxes to delete first")
    return _confirm(request, caller, ids)


def _confirm(request: Request, caller: LoginDep, ids: list[str]) -> Response:
    what = ids[0] if len(ids) == 1 else f"these {len(ids)} sandboxes"
    return page(
        request,
        "confirm.html",
        title="Delete sandboxes",
        caller=caller,
        section="sandboxes",
        action="/ui/sandboxes/delete",
        question=f"Delete {what}? Its VM, disk and record go; this cannot be undone.",
        verb="Delete",
        ids=ids,
        cancel="/ui/",
    )


@router.post("/sandboxes/delete", name="console-delete")
async def delete(request: Request, manager: ManagerDep, caller: LoginDep, ids: Ids) -> Response:
    """Delete each sandbox the caller's tenant has, as ``DELETE /api/v1/sandboxes/{id}``."""
    for sandbox_id in ids:
        manager.check_tenant(sandbox_id, caller.scope)  # a form field: not checked by path
    for sandbox_id in ids:
        await sandboxes.delete_sandbox(sandbox_id, manager)
    return RedirectResponse(f"/ui/?notice=deleted+{len(ids)}", status_code=303)
