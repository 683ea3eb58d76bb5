"""Sign-in and sign-out pages (see :mod:`sietch.server.console.session`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from starlette.responses import RedirectResponse, Response

from sietch.errors import AuthenticationError
from sietch.server.console.render import ConsoleRoute, page
from sietch.server.console.session import (
    PREFIX,
    check_same_origin,
    local,
    login_caller,
    sign_in,
    sign_out,
)

router = APIRouter(route_class=ConsoleRoute)


@router.get("/login", name="console-login")
async def login_page(request: Request, next: str = PREFIX) -> Response:
    try:
        login_caller(request)
    except AuthenticationError:
        return page(request, "login.html", title="Sign in", next=local(next))
    return RedirectResponse(local(next), status_code=303)  # signed in already


@router.post("/login", name="console-sign-in")
async def login(
    request: Request, key: Annotated[str, Form()], next: Annotated[str, Form()] = PREFIX
) -> Response:
    check_same_origin(request)  # no login CSRF either
    try:
        return sign_in(request, key.strip(), next)
    except AuthenticationError as exc:
        return page(request, "login.html", status=401, title="Sign in", next=local(next),
                    error=exc.message)  # fmt: skip


@router.post("/logout", name="console-sign-out")
async def logout(request: Request) -> Response:
    check_same_origin(request)
    return sign_out(request)
