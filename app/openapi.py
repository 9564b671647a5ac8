"""OpenAPI descriptions of request bodies that routes parse themselves."""

from __future__ import annotations

from typing import Any

from app.schemas import ErrorResponse

IMAGE_TYPES = ("image/jpeg", "image/png", "image/bmp", "image/tiff", "image/webp")


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
ERRORS[503]["headers"] = {
    "Retry-After": {
        "description": "seconds to wait before sending the request again (when busy)",
        "schema": {"type": "integer"},
    }
}
