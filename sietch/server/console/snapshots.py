"""The snapshot tree page and its actions: restore, fork N (N restores), delete.

As elsewhere in the console, the REST API's route functions do the work, with
the login's caller; a refused delete (still in use) comes back as its message.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Form, Request
from starlette.responses import RedirectResponse, Response

from sietch.server.console.elsewhere import other_nodes, other_snapshots
from sietch.server.console.render import ConsoleRoute, back, page, validated
from sietch.server.console.session import LoginDep
from sietch.server.console.tree import layout
from sietch.server.deps import ManagerDep, StateDep
from sietch.server.routes import sandboxes, snapshots
from sietch.server.schemas import ForkCreate, RestoreCreate

router = APIRouter(prefix="/snapshots", route_class=ConsoleRoute)


@router.get("", name="console-snapshots")
async def tree_page(
    request: Request, manager: ManagerDep, server: StateDep, caller: LoginDep
) -> Response:
    """The tenant's snapshots as a tree, with the sandboxes restored from each: on a
    cluster node, those of every node (:mod:`.elsewhere`)."""
    here = (await snapshots.list_snapshots(manager, caller)).data
    snaps = here + await other_snapshots(server, caller, {s.id for s in here})
    restored = (await sandboxes.list_sandboxes(manager, caller)).data
    restored += await other_nodes(server, caller, {})
    return page(
        request,
        "snapshots.html",
        title="Snapshots",
        section="snapshots",
        caller=caller,
        tree=layout(snaps, restored),
    )


@router.post("/{snapshot_id}/restore", name="console-restore")
async def restore(
    request: Request, snapshot_id: str, manager: ManagerDep, caller: LoginDep
) -> Response:
    """``POST /api/v1/snapshots/{id}/restore``: a new sandbox, shown beside its node."""
    del request
    info = await snapshots.restore_snapshot(snapshot_id, manager, caller, RestoreCreate())
    return RedirectResponse(
        f"/ui/snapshots?notice=restored+{info.id}+from+{snapshot_id}#{snapshot_id}",
        status_code=303,
    )


@router.post("/{snapshot_id}/fork", name="console-fork")
async def fork(
    request: Request,
    snapshot_id: str,
    manager: ManagerDep,
    caller: LoginDep,
    count: Annotated[str, Form()] = "1",
) -> Response:
    """N sandboxes restored from the snapshot at once (a fork from this point)."""
    del request
    n = validated(ForkCreate, {"count": count}).count
    one = RestoreCreate()
    made = await asyncio.gather(
        *(snapshots.restore_snapshot(snapshot_id, manager, caller, one) for _ in range(n))
    )
    return RedirectResponse(
        f"/ui/snapshots?notice={len(made)}+sandboxes+restored+from+{snapshot_id}#{snapshot_id}",
        status_code=303,
    )


@router.post("/{snapshot_id}/delete", name="console-delete-snapshot")
async def delete(
    request: Request, snapshot_id: str, manager: ManagerDep, caller: LoginDep
) -> Response:
    """Refused while a sandbox or another snapshot builds on it: the reason is shown."""
    await snapshots.delete_snapshot(snapshot_id, manager, caller)
    return back(request, "/ui/snapshots", notice=f"snapshot {snapshot_id} deleted")
