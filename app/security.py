"""API-key access control: constant-time comparison, health routes stay open."""

from __future__ import annotations

import hmac
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from fastapi import Depends
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from app.config import Settings
from app.deps import SettingsDep
from app.errors import ServiceError


class Unauthorized(ServiceError):
    status_code = 401
    headers = {"WWW-Authenticate": 'Bearer realm="wbc-classifier"'}


def configured_keys(settings: Settings) -> list[bytes]:
    keys = [settings.api_key] if settings.api_key else []
    if settings.api_key_file:
        keys += _key_file(Path(settings.api_key_file), _mtime(settings.api_key_file))
    return [k.encode() for k in keys]


def key_file_problem(settings: Settings) -> str | None:
    """Why the configured key file lets nobody in (unreadable, or no key in it), or None."""
    if not settings.api_key_file:
        return None
    keys = _key_file(Path(settings.api_key_file), _mtime(settings.api_key_file))
    if keys and not keys[0].startswith("\0"):
        return None
    return (
        "WBC_API_KEY_FILE is unreadable or holds no key: every protected route answers "
        "401 until it names one"
    )


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


async def require_api_key(
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header: Annotated[str | None, Depends(_header)],
    settings: SettingsDep,
) -> None:
    """No keys configured: open. Otherwise a Bearer token or X-API-Key must match one."""
    keys = configured_keys(settings)
    if not keys:
        return
    given = [g.encode() for g in (bearer.credentials if bearer else None, header) if g]
    ok = False
    for key in keys:  # compare against every key: time does not tell which one matched
        for candidate in given:  # either header may carry the key; a wrong one beside it
            ok |= hmac.compare_digest(candidate, key)  # does not hide a right one
    if not ok:
        raise Unauthorized(
            "missing or invalid API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
        )
