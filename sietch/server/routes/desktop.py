"""A desktop sandbox's computer-use API: screenshots, Sietch's actions, and the
Anthropic- and OpenAI-shaped tool endpoints (see :mod:`sietch.core.desktop`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response

from sietch.core import computer, computer_use
from sietch.core.desktop import MEDIA_TYPES, ImageFormat, encode, require
from sietch.errors import InvalidArgument
from sietch.server.deps import ManagerDep, SandboxDep

router = APIRouter(prefix="/sandboxes", tags=["desktop"])

ModelSize = Annotated[
    int | None,
    Query(ge=1, le=65535, description="The screen size the model was told (its tool's "
          "display_width_px/display_height_px): coordinates and screenshots are scaled."),
]  # fmt: skip


def parse_region(region: str | None) -> tuple[int, int, int, int] | None:
    if region is None:
        return None
    try:
        x, y, w, h = (int(v) for v in region.split(","))
    except ValueError:
        raise InvalidArgument(f"region is x,y,width,height, not {region!r}") from None
    return x, y, w, h


@router.get(
    "/{sandbox_id}/desktop/screenshot",
    name="screenshot",
    response_class=Response,
    responses={200: {"content": {t: {} for t in MEDIA_TYPES.values()}}},
)
async def screenshot(
    *,
    sandbox: SandboxDep,
    manager: ManagerDep,
    format: Annotated[ImageFormat, Query()] = "png",
    region: Annotated[str | None, Query(description="x,y,width,height of the screen.")] = None,
    scale: Annotated[float | None, Query(ge=0.01, le=4)] = None,
    quality: Annotated[int, Query(ge=1, le=100, description="jpeg and webp.")] = 80,
) -> Response:
    """The screen as it is now, encoded on the host (PNG by default)."""
    require(sandbox.info)
    shot = await manager.desktops.screenshot(sandbox)
    data = encode(shot, fmt=format, region=parse_region(region), scale=scale, quality=quality)
    return Response(data, media_type=MEDIA_TYPES[format])


@router.post("/{sandbox_id}/desktop/actions", name="act")
async def act(
    sandbox: SandboxDep, manager: ManagerDep, action: Annotated[computer.Action, Body()]
) -> dict[str, Any]:
    """Do one action (move, click, type, key, ...): its result, and a screenshot after it
    with ``"screenshot": true``."""
    return await manager.desktops.act(sandbox, action)


@router.post("/{sandbox_id}/desktop/anthropic", name="anthropic")
async def anthropic(
    sandbox: SandboxDep,
    manager: ManagerDep,
    given: Annotated[dict[str, Any], Body(description="The computer tool's input, as is.")],
    display_width: ModelSize = None,
    display_height: ModelSize = None,
) -> list[dict[str, Any]]:
    """An input of Anthropic's computer tool (computer_20250124, and zoom); returns the
    ``content`` of its ``tool_result``: a screenshot (base64 PNG) or a text."""
    info = require(sandbox.info)
    scaling = computer_use.Scaling.of(info.width, info.height, (display_width, display_height))
    plan = computer_use.anthropic(given, scaling)
    return computer_use.anthropic_content(await manager.desktops.carry_out(sandbox, plan, scaling))


@router.post("/{sandbox_id}/desktop/openai", name="openai")
async def openai(
    sandbox: SandboxDep,
    manager: ManagerDep,
    given: Annotated[dict[str, Any], Body(description="A computer_call item or its action.")],
    display_width: ModelSize = None,
    display_height: ModelSize = None,
) -> dict[str, Any]:
    """An OpenAI computer-use (computer_use_preview) action; returns its
    ``computer_call_output`` with the screenshot after it."""
    info = require(sandbox.info)
    scaling = computer_use.Scaling.of(info.width, info.height, (display_width, display_height))
    action, call_id = computer_use.openai_call(given)
    plan = computer_use.openai(action, scaling)
    answer = await manager.desktops.carry_out(sandbox, plan, scaling)
    assert isinstance(answer, bytes)  # OpenAI's actions all answer with a screenshot
    return computer_use.openai_output(answer, call_id)
