"""Reading uploads: body-size limits and the two accepted request shapes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import (
    MissingField,
    PayloadTooLarge,
    RequestTimeout,
    TemporarilyUnavailable,
    UnsupportedMediaType,
    send_error,
)

MULTIPART_OVERHEAD = 64 * 1024
MAX_PARTS = 1000


@dataclass
class Upload:
    filename: str
    data: bytes


@dataclass(frozen=True)
class BodyLimits:
    """The most a request body may be, by route: one image (and its multipart envelope),
    or a batch on the bulk routes. One place for both middlewares that need it."""

    single: int
    bulk: int
    bulk_paths: tuple[str, ...]

    def for_path(self, path: str) -> int:
        return self.bulk if path.startswith(self.bulk_paths) else self.single


def declared_length(scope: Scope) -> int | None:
    """The request's Content-Length; None when it has none or it is not a number."""
    for name, value in scope.get("headers") or []:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodyLimitMiddleware:
    """Refuses bodies over the limit: at once from Content-Length, else while streaming."""

    def __init__(self, app: ASGIApp, limits: BodyLimits, body_timeout: float = 30.0) -> None:
        self.app = app
        self.body_timeout = body_timeout
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.for_path(scope.get("path", ""))
        declared = declared_length(scope)
        if declared is not None and declared > limit:
            # the body is not read: close the connection rather than drain it
            await send_error(
                send,
                413,
                f"request body of {declared} bytes is over the limit of {limit} bytes",
                {"Connection": "close"},
            )
            return
        received = 0
        deadline = asyncio.get_running_loop().time() + self.body_timeout

        async def limited_receive() -> Message:
            nonlocal received
            try:
                # a deadline on this task, not asyncio.wait_for's new task per message
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError as exc:
                raise RequestTimeout(
                    f"request body not received within {self.body_timeout:g} s"
                ) from exc
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
            return message

        await self.app(scope, limited_receive, send)


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_single(request: Request, limit: int) -> Upload:
    """One image: multipart field ``file`` or a raw ``image/*`` body."""
    ctype = _content_type(request)
    if ctype == "multipart/form-data":
        files = await read_files(request, "file", 1, limit)
        return files[0]
    if ctype.startswith("image/"):
        data = await request.body()
        _check_size(len(data), limit, "image")
        return Upload("body", data)
    raise UnsupportedMediaType(
        f"unsupported content type {ctype or '(none)'}: send multipart/form-data with a "
        f"'file' field, or the image itself with an image/* content type"
    )


async def read_files(
    request: Request,
    field: str,
    max_files: int,
    limit: int,
) -> list[Upload]:
    """All uploads of multipart field ``field``, in order (at least one)."""
    ctype = _content_type(request)
    if ctype != "multipart/form-data":
        raise UnsupportedMediaType(
            f"unsupported content type {ctype or '(none)'}: send "
            f"multipart/form-data with '{field}' fields"
        )
    form = await _form(request)
    items = [v for v in form.getlist(field) if isinstance(v, UploadFile)]
    if not items:
        present = sorted(set(form.keys()))
        raise MissingField(
            f"missing multipart file field '{field}'"
            + (f" (got fields: {', '.join(present)})" if present else "")
        )
    if len(items) > max_files:
        raise PayloadTooLarge(f"{len(items)} files sent; the limit is {max_files} per request")
    uploads = []
    for item in items:
        data = await item.read()
        name = item.filename or ""
        _check_size(len(data), limit, f"file {safe_filename(name)!r}")
        uploads.append(Upload(safe_filename(name), data))
    return uploads


async def _form(request: Request) -> Any:
    try:
        return await request.form(max_files=MAX_PARTS, max_fields=MAX_PARTS)
    except (PayloadTooLarge, RequestTimeout):
        raise
    except OSError as exc:  # parts over 1 MB are spooled to TMPDIR (a small tmpfs in the
        # container): a full disk is the server's state, not a malformed request
        raise TemporarilyUnavailable(
            f"no temporary space left for the upload ({exc}); retry shortly"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - malformed multipart is the client's error
        if "Too many" in str(exc):
            raise PayloadTooLarge(f"too many multipart parts: {exc}") from exc
        raise MissingField(f"malformed multipart body: {exc}") from exc


def _check_size(size: int, limit: int, what: str) -> None:
    if size > limit:
        raise PayloadTooLarge(f"{what} is {size} bytes; the limit is {limit} bytes")


def safe_filename(name: str) -> str:
    """Base name only, control characters removed, bounded length: safe to echo back."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(ch for ch in base if ch.isprintable())
    return cleaned[:255]
