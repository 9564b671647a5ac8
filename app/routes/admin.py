"""POST /admin/reload: load the newest model version and swap it in without dropping
requests (in-flight requests finish on the model they started with), in every worker.
Needs the admin key (app/security.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from app.errors import ServiceError
from app.lifecycle import announce_reload, load_model

router = APIRouter(prefix="/admin", tags=["admin"])


class ReloadFailed(ServiceError):
    status_code = 409


@router.post("/reload")
async def reload_model(request: Request) -> dict[str, Any]:
    """Reload from WBC_MODEL_DIR in this worker now, and in every other worker within a
    second; a worker whose load fails keeps serving its previous model."""
    settings = request.app.state.settings
    number = announce_reload(request.app)
    ok = await load_model(request.app, settings)
    if not ok:
        raise ReloadFailed(
            f"reload failed, still serving the previous model: {request.app.state.load_error}"
        )
    return {
        "status": "reloaded",
        "model": request.app.state.classifier.model_info(),
        "workers": settings.workers if number else 1,
        "other_workers": "reload within a second" if number else "none",
    }
