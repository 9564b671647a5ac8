"""Domain errors, mapped to HTTP statuses by one handler; body keeps FastAPI's shape."""

from __future__ import annotations

import json

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.types import Send


class ServiceError(Exception):
    status_code = 500
    headers: dict[str, str] | None = None

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadImage(ServiceError):
    status_code = 400


class BadRequest(ServiceError):
    status_code = 400


class ModelVersionNotFound(ServiceError):
    status_code = 404


class RequestTimeout(ServiceError):
    status_code = 408


class PayloadTooLarge(ServiceError):
    status_code = 413


class UnsupportedMediaType(ServiceError):
    status_code = 415


class MissingField(ServiceError):
    status_code = 422


class InvalidField(ServiceError):
    """A field present but not acceptable (e.g. an identifier with control characters)."""

    status_code = 422


class ModelNotReady(ServiceError):
    """Still loading: retry shortly."""

    status_code = 503
    headers = {"Retry-After": "2"}


class ModelBroken(ServiceError):
    """The model failed to load: no retry helps until the model folder is fixed."""

    status_code = 503


class TemporarilyUnavailable(ServiceError):
    """The server cannot take this request now (not the client's fault): retry shortly."""

    status_code = 503
    headers = {"Retry-After": "1"}


V2_PREFIX = "/v2"  # Open Inference Protocol routes answer errors as {"error": ...}


def error_body(path: str, message: str) -> dict[str, str]:
    """``{"detail": ...}`` (FastAPI's shape), or the Open Inference Protocol's
    ``{"error": ...}`` under ``/v2``."""
    return {"error": message} if path.startswith(V2_PREFIX) else {"detail": message}


async def service_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return JSONResponse(
        error_body(request.url.path, exc.detail), status_code=exc.status_code, headers=exc.headers
    )


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """422 for a malformed request: FastAPI's list of problems, or under ``/v2`` one
    ``{"error": ...}`` message naming them."""
    from fastapi.exception_handlers import request_validation_exception_handler
    from fastapi.exceptions import RequestValidationError

    assert isinstance(exc, RequestValidationError)
    if not request.url.path.startswith(V2_PREFIX):
        return await request_validation_exception_handler(request, exc)
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body')}: {e.get('msg')}"
        for e in exc.errors()
    )
    return JSONResponse({"error": f"malformed inference request: {problems}"}, status_code=422)


async def send_error(
    send: Send, status: int, detail: str, headers: dict[str, str] | None = None, path: str = ""
) -> None:
    """The same JSON error, sent from ASGI middleware (before any route runs); in the
    protocol's shape under ``/v2`` when ``path`` is given."""
    body = json.dumps(error_body(path, detail)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *((k.lower().encode(), v.encode()) for k, v in (headers or {}).items()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
