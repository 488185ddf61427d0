"""Errors at the HTTP edge: typed Visage errors become JSON answers with a status code. Torch-free.

Every error answer has one shape (:class:`ErrorBody`): a machine code, a message, for bad fields the
field and the rule it broke, and for a keyed message (:mod:`modules.messages`) its ``key`` and ``params``,
so a client can say it in its own language. No traceback ever leaves the server.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from modules.errors import (
    DownloadError, Interrupted, InvalidRequest, MissingComponent, ModelLoadError, ModelNotFound, NotReady,
    OutOfMemory, QueueFull, UnsafeName, UnsupportedModel, VisageError,
)
from modules.messages import json_params

log = logging.getLogger(__name__)

#: status per error class; the first class found in the error's MRO wins
STATUS: dict[type, int] = {
    UnsafeName: 422,
    InvalidRequest: 422,
    ModelNotFound: 404,
    UnsupportedModel: 422,
    NotReady: 503,
    QueueFull: 503,
    Interrupted: 409,
    DownloadError: 502,
    MissingComponent: 500,
    ModelLoadError: 500,
    OutOfMemory: 500,
}
#: seconds a client is asked to wait before retrying a 503 when nothing better is known
DEFAULT_RETRY_AFTER = 5


class ErrorBody(BaseModel):
    """What every error answer carries."""

    error: str  # machine-readable code, e.g. invalid_request, queue_full, model_not_found
    message: str
    detail: str  # the same text, for clients that read FastAPI's / A1111's "detail"
    field: str | None = None  # the request field at fault (422)
    rule: str | None = None  # the rule that field broke (422)
    key: str | None = None  # the message key (e.g. rule.between), None for free-form text
    params: dict[str, Any] = Field(default_factory=dict)  # the message's parameters (JSON values)


class ApiError(Exception):
    """An error raised by the API layer itself, with its status and optional headers."""

    def __init__(self, status: int, code: str, message: str, *, field: str | None = None,
                 rule: str | None = None, headers: dict[str, str] | None = None, key: str | None = None,
                 params: Mapping[str, Any] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.rule = rule
        self.headers = headers or {}
        self.key = key
        self.params = json_params(params or {})


#: documented on every route, so clients (and schemathesis) know the error shape
ERROR_RESPONSES: dict[int | str, dict] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in (
        (400, "malformed request (the body is not valid JSON)"),
        (401, "missing or wrong credentials (--api-auth)"),
        (404, "no such model, LoRA or file"),
        (409, "the job was interrupted"),
        (413, "request body too large"),
        (422, "a field is invalid: `field` and `rule` say which and why"),
        (500, "the job failed (bad model file, out of memory, ...); the server keeps running"),
        (502, "a download failed"),
        (503, "queue full or no model ready; retry after `Retry-After` seconds"),
    )
}


def is_out_of_memory(exc: BaseException) -> bool:
    """MemoryError, torch.OutOfMemoryError (by name: no torch import here) or Visage's OutOfMemory."""
    return isinstance(exc, (MemoryError, OutOfMemory)) or type(exc).__name__ == "OutOfMemoryError"


def first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


def to_api_error(exc: BaseException, retry_after: int = DEFAULT_RETRY_AFTER) -> ApiError:
    """The answer for any exception: typed errors by table, everything else 500 without a traceback."""
    if isinstance(exc, ApiError):
        return exc
    if is_out_of_memory(exc) and not isinstance(exc, VisageError):
        return ApiError(500, OutOfMemory.code, f"out of memory: {first_line(exc)}; "
                        "the memory was released, try a smaller size or batch")
    if isinstance(exc, VisageError):
        status = next((STATUS[c] for c in type(exc).__mro__ if c in STATUS), 500)
        headers = {"Retry-After": str(max(1, int(retry_after)))} if status == 503 else {}
        field = getattr(exc, "field", None)
        rule = getattr(exc, "rule", None)
        return ApiError(status, exc.code, first_line(exc, 1000), field=field, rule=rule, headers=headers,
                        key=exc.key, params=exc.params)
    return ApiError(500, "internal_error", f"{type(exc).__name__}: {first_line(exc)}")


def error_response(err: ApiError) -> JSONResponse:
    body = ErrorBody(error=err.code, message=err.message, detail=err.message, field=err.field, rule=err.rule,
                     key=err.key, params=err.params)
    return JSONResponse(body.model_dump(), status_code=err.status, headers=err.headers)


def _validation_field(loc) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def install_handlers(app: FastAPI) -> None:
    """Register the exception handlers that turn errors into :class:`ErrorBody` answers."""

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError):
        return error_response(exc)

    @app.exception_handler(VisageError)
    async def _visage_error(_request: Request, exc: VisageError):
        return error_response(to_api_error(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {}
        field = _validation_field(first.get("loc", ()))
        rule = str(first.get("msg", "invalid value"))
        if rule.startswith("Value error, "):
            rule = rule[len("Value error, "):]
        return error_response(ApiError(422, InvalidRequest.code, f"{field}: {rule}", field=field, rule=rule))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException):
        code = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
                413: "too_large"}.get(exc.status_code, "http_error")
        return error_response(ApiError(exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {})))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception):
        log.exception("API request failed: %s", first_line(exc))
        return error_response(to_api_error(exc))
