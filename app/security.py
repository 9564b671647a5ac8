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


def configured_keys(settings: Settings) -> list[bytes]:
    keys = [settings.api_key] if settings.api_key else []
    if settings.api_key_file:
        keys += _key_file(Path(settings.api_key_file), _mtime(settings.api_key_file))
    return [k.encode() for k in keys]


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
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


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
    given = (bearer.credentials if bearer else header) or ""
    ok = False
    for key in keys:  # compare against every key: time does not tell which one matched
        ok |= hmac.compare_digest(given.encode(), key)
    if not ok:
        raise Unauthorized(
            "missing or invalid API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
        )
