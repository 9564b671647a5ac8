"""API-key access control: constant-time comparison, health routes stay open.

Two credentials: the API keys (``WBC_API_KEY``, ``WBC_API_KEY_FILE``) for the classifying
and model routes, and an admin key (``WBC_ADMIN_KEY``, ``WBC_ADMIN_KEY_FILE``) for
``/admin/*``, which no API key opens. ``ApiKeyMiddleware`` checks them from the headers
alone, before admission control counts the request and before a byte of its body is
read: a client without a key holds no upload slot and costs no parsing. It is the one
check of the API key (``app.openapi.document_api_key`` names it in the schema); the admin
routes' dependency checks the admin key again and declares the schemes.
"""

from __future__ import annotations

import hmac
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from fastapi import Depends
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from app.config import Settings
from app.deps import SettingsDep
from app.errors import ServiceError, send_error

AUTH_HEADERS = {"WWW-Authenticate": 'Bearer realm="wbc-classifier"'}
MISSING_KEY = "missing or invalid API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
MISSING_ADMIN_KEY = (
    "missing or invalid admin key: /admin routes need the admin key (WBC_ADMIN_KEY), "
    "sent as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'; API keys do not open them"
)
NO_ADMIN_KEY = (
    "no admin key is configured (WBC_ADMIN_KEY or WBC_ADMIN_KEY_FILE): /admin routes are "
    "closed while API keys are set"
)
PUBLIC_PREFIXES = ("/health/", "/v2/health/", "/static/", "/auth/")
SESSION_PREFIXES = ("/specimens",)  # a reviewer's session cookie may stand for a key here
SESSION_COOKIE = b"wbc_session="
PUBLIC_PATHS = (
    "/v2",
    "/docs",
    "/openapi.json",
    "/docs/oauth2-redirect",
    "/login",
    "/logout",
    "/favicon.ico",
)
PAGE_PREFIXES = ("/review",)  # pages: a reviewer's session or a redirect to /login
ADMIN_PREFIX = "/admin"
ADMIN_RETRY = re.compile(r"^/deliveries/[^/]+/retry$")  # re-sending a report: the admin's


class Unauthorized(ServiceError):
    status_code = 401
    headers = AUTH_HEADERS


class Forbidden(ServiceError):
    status_code = 403


def configured_keys(settings: Settings) -> list[bytes]:
    keys = [settings.api_key] if settings.api_key else []
    if settings.api_key_file:
        keys += _key_file(Path(settings.api_key_file), _mtime(settings.api_key_file))
    return [k.encode() for k in keys]


def admin_keys(settings: Settings) -> list[bytes]:
    keys = [settings.admin_key] if settings.admin_key else []
    if settings.admin_key_file:
        keys += _key_file(Path(settings.admin_key_file), _mtime(settings.admin_key_file))
    return [k.encode() for k in keys]


def key_file_problem(settings: Settings) -> str | None:
    """Why a configured key file lets nobody in (unreadable, or no key in it), or None."""
    for name, path in (
        ("WBC_API_KEY_FILE", settings.api_key_file),
        ("WBC_ADMIN_KEY_FILE", settings.admin_key_file),
    ):
        if not path:
            continue
        keys = _key_file(Path(path), _mtime(path))
        if not keys or keys[0].startswith("\0"):
            return (
                f"{name} is unreadable or holds no key: the routes it guards answer 401 "
                "until it names one"
            )
    return None


def matches(given: list[bytes], keys: list[bytes]) -> bool:
    ok = False
    for key in keys:  # compare against every key: time does not tell which one matched
        for candidate in given:  # either header may carry the key; a wrong one beside it
            ok |= hmac.compare_digest(candidate, key)  # does not hide a right one
    return ok


def given_keys(headers: dict[bytes, bytes]) -> list[bytes]:
    given = []
    auth = headers.get(b"authorization", b"")
    scheme, _, token = auth.partition(b" ")
    if scheme.lower() == b"bearer" and token.strip():
        given.append(token.strip())
    if headers.get(b"x-api-key"):
        given.append(headers[b"x-api-key"])
    return given


def refusal(path: str, headers: dict[bytes, bytes], settings: Settings) -> tuple[int, str] | None:
    """Why this request may not proceed (status, message), from its path and headers, or
    None. Open routes and a service with no keys at all let everyone in."""
    if path.startswith(PUBLIC_PREFIXES) or path in PUBLIC_PATHS or path.startswith(PAGE_PREFIXES):
        return None
    api, admin = configured_keys(settings), admin_keys(settings)
    given = given_keys(headers)
    if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/") or ADMIN_RETRY.match(path):
        if admin:
            return None if matches(given, admin) else (401, MISSING_ADMIN_KEY)
        return (403, NO_ADMIN_KEY) if api else None
    if path.startswith(SESSION_PREFIXES) and SESSION_COOKIE in headers.get(b"cookie", b""):
        return None  # the route checks the session (and its CSRF token)
    if api and not matches(given, api):
        return 401, MISSING_KEY
    return None


class ApiKeyMiddleware:
    """Refuses a request without its credential from the headers alone (see the module)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") != "OPTIONS":
            headers = dict(scope.get("headers") or [])
            problem = refusal(scope.get("path", ""), headers, self.settings)
            if problem:
                status, message = problem
                extra = {**AUTH_HEADERS, "Connection": "close"} if status == 401 else {}
                await send_error(send, status, message, extra, path=scope.get("path", ""))
                return
        await self.app(scope, receive, send)


def _mtime(path: Path) -> float:
    try:
        return Path(path).stat().st_mtime
    except OSError:
        return -1.0


@lru_cache(maxsize=8)
def _key_file(path: Path, mtime: float) -> list[str]:
    """Keys of a file, one a line; re-read when the file changes (mtime is in the key)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return ["\0unreadable key file: nobody gets in\0"]
    keys = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    # a key file that names no key is a mistake, not a wish for an open service: fail closed
    return keys or ["\0key file holds no key: nobody gets in\0"]


_bearer = HTTPBearer(auto_error=False)
_header = APIKeyHeader(name="X-API-Key", auto_error=False)


async def require_admin_key(
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header: Annotated[str | None, Depends(_header)],
    settings: SettingsDep,
) -> None:
    """The admin key, never an API key; with API keys set and no admin key, closed (403)."""
    keys = admin_keys(settings)
    given = [g.encode() for g in (bearer.credentials if bearer else None, header) if g]
    if keys and not matches(given, keys):
        raise Unauthorized(MISSING_ADMIN_KEY)
    if not keys and configured_keys(settings):
        raise Forbidden(NO_ADMIN_KEY)
