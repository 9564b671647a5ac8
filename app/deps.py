"""Dependencies: settings and the classifier, reached through ``Depends``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.classifier import Classifier
from app.config import Settings
from app.errors import ModelNotReady


async def get_app_settings(request: Request) -> Settings:
    """The settings the app was created with. Read from app state rather than swapped in
    with ``dependency_overrides``: FastAPI re-inspects every overridden dependency's
    signature on every request (about a tenth of the request's CPU, measured)."""
    return request.app.state.settings


async def get_classifier(request: Request) -> Classifier:
    """Async on purpose: FastAPI runs sync dependencies in the thread pool, a hop per call."""
    classifier: Classifier | None = getattr(request.app.state, "classifier", None)
    if classifier is None or not classifier.predictor.ready:
        raise ModelNotReady("model is not loaded or not warmed up yet; retry shortly")
    return classifier


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
ClassifierDep = Annotated[Classifier, Depends(get_classifier)]
