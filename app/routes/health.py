"""Liveness, readiness, model metadata and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.deps import ClassifierDep
from app.observability import exposition_registry

router = APIRouter()  # open: probes and load balancers need no key
model_router = APIRouter()  # behind the API key when one is set


@router.get("/health/live", tags=["health"])
async def live() -> dict[str, str]:
    """The process is up and answering."""
    return {"status": "live"}


@router.get(
    "/health/ready",
    tags=["health"],
    responses={503: {"description": "model not loaded or not warmed up"}},
)
async def ready(request: Request) -> JSONResponse:
    """200 once the model is loaded and warmed up, else 503 with the reason."""
    classifier = getattr(request.app.state, "classifier", None)
    if classifier is not None and classifier.predictor.ready:
        return JSONResponse(
            {
                "status": "ready",
                "model": classifier.model_info(),
                "ood_guard": "on"
                if classifier.ood_threshold is not None
                else "off: this model version has no OOD statistics",
            }
        )
    reason = getattr(request.app.state, "load_error", None) or "model is loading"
    return JSONResponse({"status": "not ready", "detail": reason}, status_code=503)


@model_router.get("/v1/models/wbc-classifier", tags=["model"])
async def model_metadata(classifier: ClassifierDep) -> dict[str, Any]:
    """The served model's metadata: version, classes, input, protocol, networks averaged
    (``members``, for an ensemble), test metrics."""
    meta = classifier.predictor.metadata
    keys = (
        "name",
        "version",
        "classes",
        "input",
        "protocol",
        "arch",
        "members",
        "test_metrics",
        "calibration",
        "temperature",
        "review_threshold",
        "data_fingerprint",
        "created",
        "train_seconds",
        "sites",
        "ood",
    )
    info = {k: meta[k] for k in keys if k in meta}
    info["runtime"] = classifier.predictor.runtime
    info["review_threshold_in_use"] = classifier.threshold
    info["ood_guard"] = classifier.ood_threshold is not None
    info["ood_threshold"] = classifier.ood_threshold
    return info


@model_router.get("/metrics", tags=["health"], response_class=Response)
def metrics() -> Response:
    """Prometheus text format."""
    return Response(generate_latest(exposition_registry()), media_type=CONTENT_TYPE_LATEST)
