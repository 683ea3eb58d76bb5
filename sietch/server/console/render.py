"""How the console answers: Jinja2 pages, and errors as messages, never tracebacks.

Every console route is a :class:`ConsoleRoute`: a :class:`SietchError` raised
by it (or by the core it calls) becomes a page with the message, or, after a
form post, a redirect back to the page it came from with the message shown
there (``?error=``); a request from the pages' own scripts (``X-Console``)
gets the message as plain text. Not being signed in is a redirect to sign-in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from datetime import datetime
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit

from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from sietch.errors import SietchError, ValidationFailed, describe_validation

log = logging.getLogger(__name__)
_M = TypeVar("_M", bound=BaseModel)

SCRIPT_HEADER = "x-console"
"""Sent by the console's own scripts (fetch): they show an error's text themselves."""
CSP = (
    "default-src 'self'; connect-src 'self'; img-src 'self' data: blob:; "
    "style-src 'self' 'unsafe-inline'; frame-src 'self'; frame-ancestors 'self'; "
    "base-uri 'none'; form-action 'self'"
)
_HEADERS = {"Cache-Control": "no-store", "Content-Security-Policy": CSP}
templates = Jinja2Templates(
    directory=str(resources.files("sietch.server.console").joinpath("templates"))
)


def age(when: datetime | float | None) -> str:
    """``3m``, ``2h``: how long ago (or, for a future time, how long until)."""
    if when is None:
        return ""
    at = when.timestamp() if isinstance(when, datetime) else when
    seconds = abs(time.time() - at)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def size(n: float | None) -> str:
    if n is None:
        return ""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


templates.env.filters["age"] = age
templates.env.filters["size"] = size


def page(request: Request, name: str, status: int = 200, **context: Any) -> Response:
    """A template rendered for ``request``; ``error`` from the URL shown as a message."""
    context.setdefault("error", request.query_params.get("error"))
    context.setdefault("notice", request.query_params.get("notice"))
    return templates.TemplateResponse(request, name, context, status_code=status, headers=_HEADERS)


def back(request: Request, fallback: str, **params: str) -> RedirectResponse:
    """A 303 to the console page the form was on (its ``Referer`` if it is ours), with
    ``params`` (``error``, ``notice``) in its query instead of any it had."""
    target = fallback
    referer = urlsplit(request.headers.get("referer", ""))
    if referer.netloc == request.headers.get("host") and referer.path.startswith("/ui/"):
        kept = [(k, v) for k, v in parse_qsl(referer.query) if k not in ("error", "notice")]
        target = referer.path + (f"?{urlencode(kept)}" if kept else "")
    if params:
        target += ("&" if "?" in target else "?") + urlencode(params)
    return RedirectResponse(target, status_code=303)


class SignInFirst(Exception):
    """Not signed in: the answer is a redirect to the sign-in page."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


def validated(model: type[_M], data: Mapping[str, Any]) -> _M:
    """``data`` as a ``model`` (a request shape of the API), its validation errors as
    :class:`ValidationFailed`: a message for the page. Not strict, as the API's JSON is:
    a form's fields are all text (``"2"`` for 2)."""
    try:
        return model.model_validate(data, strict=False)
    except ValidationError as exc:
        raise ValidationFailed(describe_validation(exc.errors())) from None


def error_answer(request: Request, exc: SietchError) -> Response:
    """A console request's error, counted, as the person who made it should see it."""
    request.app.state.sietch.metrics.errors.labels(exc.code).inc()
    return console_error(request, exc)


def console_error(request: Request, exc: SietchError) -> Response:
    """A console request's error as a message (a gateway's own, e.g. a quota, too)."""
    if SCRIPT_HEADER in request.headers:
        return PlainTextResponse(exc.message, status_code=exc.status, headers=_HEADERS)
    if request.method not in ("GET", "HEAD") and exc.status != 403:
        return back(request, "/ui/", error=exc.message)
    return page(request, "error.html", status=exc.status, error=exc.message, title="Error")


class ConsoleRoute(APIRoute):
    """An APIRoute whose errors are messages (see the module docstring)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInFirst as exc:
                return RedirectResponse(exc.location, status_code=303)
            except SietchError as exc:
                if exc.status >= 500:
                    log.warning("console %s %s failed: %s", request.method, request.url, exc)
                return error_answer(request, exc)

        return answer
