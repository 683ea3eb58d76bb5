"""The requests of ``sb.desktop``'s computer use (no I/O: the SDKs send them)."""

from __future__ import annotations

from typing import Any, Literal

import httpx

from sietch.client._core import Call

Button = Literal["left", "middle", "right"]

ACTION_TIMEOUT_S = 120.0
"""A wait may last a minute, typing a long text under emulation too; a screenshot of a
sandbox just restored waits for its VNC server's login (up to 120 s on a loaded host)."""


def _json(response: httpx.Response) -> Any:
    return response.json()


def _content(response: httpx.Response) -> bytes:
    return response.content


def _display(width: int | None, height: int | None) -> list[tuple[str, str | int | float]]:
    return [(k, v) for k, v in (("display_width", width), ("display_height", height)) if v]


class DesktopOps:
    """Calls of the computer-use API (``/sandboxes/{id}/desktop/...``)."""

    @staticmethod
    def screenshot(
        sandbox_id: str,
        fmt: str,
        region: tuple[int, int, int, int] | None,
        scale: float | None,
        quality: int | None,
    ) -> Call[bytes]:
        params: list[tuple[str, str | int | float]] = [("format", fmt)]
        if region is not None:
            params.append(("region", ",".join(str(v) for v in region)))
        if scale is not None:
            params.append(("scale", scale))
        if quality is not None:
            params.append(("quality", quality))
        path = f"/sandboxes/{sandbox_id}/desktop/screenshot"
        return Call("GET", path, _content, params=params, timeout=ACTION_TIMEOUT_S)

    @staticmethod
    def act(sandbox_id: str, action: str, fields: dict[str, Any]) -> Call[dict[str, Any]]:
        body = {"action": action, **{k: v for k, v in fields.items() if v is not None}}
        path = f"/sandboxes/{sandbox_id}/desktop/actions"
        return Call("POST", path, _json, json=body, timeout=ACTION_TIMEOUT_S)

    @staticmethod
    def tool(
        sandbox_id: str, vendor: str, given: dict[str, Any], width: int | None, height: int | None
    ) -> Call[Any]:
        path = f"/sandboxes/{sandbox_id}/desktop/{vendor}"
        params = _display(width, height)
        return Call("POST", path, _json, json=given, params=params, timeout=ACTION_TIMEOUT_S)
