"""API-key access control: constant-time comparison, health routes stay open."""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Annotated

from fastapi import Depends
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from app.config import Settings, get_settings
from app.errors import ServiceError


class Unauthorized(ServiceError):
    status_code = 401


def configured_keys(settings: Settings) -> list[bytes]:
    keys = [settings.api_key] if settings.api_key else []
    if settings.api_key_file:
        try:
            lines = Path(settings.api_key_file).read_text().splitlines()
        except OSError:
            lines = []
            keys.append("\0unreadable key file: nobody gets in\0")
        keys += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return [k.encode() for k in keys]


_bearer = HTTPBearer(auto_error=False)
_header = APIKeyHeader(name="X-API-Key", auto_error=False)


def require_api_key(
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header: Annotated[str | None, Depends(_header)],
    settings: Annotated[Settings, Depends(get_settings)],
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
        raise Unauthorized("missing or invalid API key: send 'Authorization: Bearer <key>' "
                           "or 'X-API-Key: <key>'")
