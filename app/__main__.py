"""``python -m app``: serve with host, port, workers and log level from WBC_* settings."""

from __future__ import annotations

import os

import uvicorn

from app.config import get_settings


def main() -> None:
    settings = get_settings()
    uvicorn.run("app.main:app", host=settings.host, port=settings.port,
                workers=int(os.environ.get("WBC_WORKERS", "1")),
                log_level=settings.log_level.lower(), timeout_graceful_shutdown=30,
                # uvicorn's default of 5 s raced with busy clients under the soak (a
                # keep-alive close crossing the next request: client ReadErrors)
                timeout_keep_alive=settings.keep_alive_s)


if __name__ == "__main__":
    main()
