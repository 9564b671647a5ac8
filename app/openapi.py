"""OpenAPI descriptions of request bodies that routes parse themselves."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute

from app.schemas import ErrorResponse, V2ErrorResponse, ValidationErrorResponse

IMAGE_TYPES = ("image/jpeg", "image/png", "image/bmp", "image/tiff", "image/webp")


API_KEY_SECURITY = [{"HTTPBearer": []}, {"APIKeyHeader": []}]


def document_api_key(router: APIRouter) -> APIRouter:
    """Names the API key in the schema of each of the router's operations. The key itself
    is checked once, by ``ApiKeyMiddleware`` from the headers (app/security.py): a route
    dependency checking it again cost a quarter of the framework's time per request
    (``python -m bench.app_overhead``). The two schemes enter ``components`` through the
    admin routes' dependencies, which use the same scheme objects (``require_admin_key``)."""
    for route in router.routes:
        if isinstance(route, APIRoute):
            route.openapi_extra = {**(route.openapi_extra or {}), "security": API_KEY_SECURITY}
    return router


def image_body(field: str, many: bool) -> dict[str, Any]:
    binary = {"type": "string", "format": "binary"}
    prop = {"type": "array", "items": binary} if many else binary
    content: dict[str, Any] = {
        "multipart/form-data": {
            "schema": {"type": "object", "required": [field], "properties": {field: prop}}
        }
    }
    if not many:
        content.update({t: {"schema": binary} for t in IMAGE_TYPES})
    return {"requestBody": {"required": True, "content": content}}


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in (
        (400, "undecodable or truncated image"),
        (413, "body or image over the byte or pixel limit"),
        (415, "unsupported content type or image format"),
        (422, "missing or malformed field"),
        (
            503,
            "model not ready; or server busy (WBC_MAX_PENDING, WBC_MAX_PENDING_BYTES) or "
            "out of temporary space: not processed, retry after the Retry-After seconds",
        ),
    )
}
ERRORS[422]["model"] = ValidationErrorResponse
ERRORS[503]["headers"] = {
    "Retry-After": {
        "description": "seconds to wait before sending the request again (when busy)",
        "schema": {"type": "integer"},
    }
}

AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {
        "model": ErrorResponse,
        "description": "missing or invalid API key",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    },
}
ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {
        "model": ErrorResponse,
        "description": "missing or invalid admin key (API keys do not open /admin)",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    },
    403: {"model": ErrorResponse, "description": "API keys are set but no admin key is"},
    409: {"model": ErrorResponse, "description": "the reload failed; the previous model serves"},
}
V2_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": V2ErrorResponse, "description": text}
    for code, text in (
        (400, "not JSON, a multipart or binary body, or an input that is not an image"),
        (401, "missing or invalid API key"),
        (404, "a model version that is not served"),
        (413, "over WBC_MAX_BATCH images, WBC_MAX_IMAGE_BYTES, or the body limit"),
        (415, "unsupported image format"),
        (422, "malformed inference request"),
        (503, "model not ready, or server busy: retry after the Retry-After seconds"),
    )
}
