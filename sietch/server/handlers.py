"""Every error leaves the API as ``{"error": {"code", "message"}}`` with its status.

The codes and statuses are those of :mod:`sietch.errors`; the SDK turns them
back into the same classes with :func:`sietch.errors.error_for_code`.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sietch.errors import (
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    SietchError,
    ValidationFailed,
    describe_validation,
)

log = logging.getLogger(__name__)

_HTTP_CODES: dict[int, str] = {
    400: InvalidArgument.code,
    404: NotFound.code,
    405: "method_not_allowed",
    413: PayloadTooLarge.code,
}


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        try:
            body["details"] = jsonable_encoder(details, custom_encoder={bytes: repr})
        except (TypeError, ValueError):
            body["details"] = {k: str(v) for k, v in details.items()}
    return {"error": body}


def error_response(exc: SietchError, request: Request | None = None) -> JSONResponse:
    headers = {}
    if exc.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if "retry_after" in exc.details:
        headers["Retry-After"] = str(max(1, round(float(exc.details["retry_after"]))))
    if request is not None:
        request.app.state.sietch.metrics.errors.labels(exc.code).inc()
    return JSONResponse(
        error_body(exc.code, exc.message, exc.details), status_code=exc.status, headers=headers
    )


async def _sietch_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SietchError)
    if exc.status >= 500:
        log.warning("%s %s failed: %s", request.method, request.url.path, exc)
    return error_response(exc, request)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        err: SietchError = InvalidArgument("the request body is not valid JSON")
    else:
        fields = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in errors[:20]]
        err = ValidationFailed(describe_validation(errors), errors=fields)
    return error_response(err, request)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, SietchError.code)
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no such endpoint: {request.method} {request.url.path}"
    request.app.state.sietch.metrics.errors.labels(code).inc()
    return JSONResponse(error_body(code, message), status_code=exc.status_code, headers=exc.headers)


def install(app: FastAPI) -> None:
    app.add_exception_handler(SietchError, _sietch_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
