"""Dependencies: settings and the classifier, reached through ``Depends``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.classifier import Classifier
from app.config import Settings, get_settings
from app.errors import ModelNotReady


async def get_classifier(request: Request) -> Classifier:
    """Async on purpose: FastAPI runs sync dependencies in the thread pool, a hop per call."""
    classifier: Classifier | None = getattr(request.app.state, "classifier", None)
    if classifier is None or not classifier.predictor.ready:
        raise ModelNotReady("model is not loaded or not warmed up yet; retry shortly")
    return classifier


SettingsDep = Annotated[Settings, Depends(get_settings)]
ClassifierDep = Annotated[Classifier, Depends(get_classifier)]
