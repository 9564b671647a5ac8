"""Dependencies: settings and the classifier, reached through ``Depends``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.classifier import Classifier
from app.config import Settings
from app.errors import ModelBroken, ModelNotReady


async def get_app_settings(request: Request) -> Settings:
    """The settings the app was created with. Read from app state rather than swapped in
    with ``dependency_overrides``: FastAPI re-inspects every overridden dependency's
    signature on every request (about a tenth of the request's CPU, measured)."""
    return request.app.state.settings


async def get_classifier(request: Request) -> Classifier:
    """Async on purpose: FastAPI runs sync dependencies in the thread pool, a hop per call."""
    classifier: Classifier | None = getattr(request.app.state, "classifier", None)
    if classifier is not None and classifier.predictor.ready:
        return classifier
    failed = getattr(request.app.state, "load_error", None)
    if failed:  # retrying will not help until someone fixes the model folder
        raise ModelBroken(f"the model failed to load and no model is served: {failed}")
    raise ModelNotReady("the model is still loading; retry shortly")


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
ClassifierDep = Annotated[Classifier, Depends(get_classifier)]
