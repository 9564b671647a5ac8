"""POST /admin/reload: load the newest model version and swap it in without dropping
requests (in-flight requests finish on the model they started with)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from app.errors import ServiceError
from app.lifecycle import load_model

router = APIRouter(prefix="/admin", tags=["admin"])


class ReloadFailed(ServiceError):
    status_code = 409


@router.post("/reload")
async def reload_model(request: Request) -> dict[str, Any]:
    """Reload from WBC_MODEL_DIR; the old model keeps serving if the new one fails."""
    ok = await load_model(request.app, request.app.state.settings)
    if not ok:
        raise ReloadFailed(
            f"reload failed, still serving the previous model: {request.app.state.load_error}"
        )
    return {"status": "reloaded", "model": request.app.state.classifier.model_info()}
