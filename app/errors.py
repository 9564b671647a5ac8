"""Domain errors, mapped to HTTP statuses by one handler; body keeps FastAPI's shape."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse


class ServiceError(Exception):
    status_code = 500
    headers: dict[str, str] | None = None

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadImage(ServiceError):
    status_code = 400


class RequestTimeout(ServiceError):
    status_code = 408


class PayloadTooLarge(ServiceError):
    status_code = 413


class UnsupportedMediaType(ServiceError):
    status_code = 415


class MissingField(ServiceError):
    status_code = 422


class ModelNotReady(ServiceError):
    status_code = 503


class TemporarilyUnavailable(ServiceError):
    """The server cannot take this request now (not the client's fault): retry shortly."""

    status_code = 503
    headers = {"Retry-After": "1"}


async def service_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                        headers=exc.headers)
