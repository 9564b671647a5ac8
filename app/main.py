"""Wiring only: settings, lifespan (model load), middleware, routers, error handlers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.concurrency import run_in_threadpool

from app.classifier import Classifier
from app.config import Settings, get_settings
from app.errors import ServiceError, service_error_handler
from app.middleware import RequestContextMiddleware
from app.observability import MODEL_LOAD_SECONDS, MODEL_READY, configure_logging
from app.predictor import ModelLoadError, Predictor
from app.routes import health, predict
from app.uploads import BodyLimitMiddleware

log = logging.getLogger("app")


async def load_model(app: FastAPI, settings: Settings) -> None:
    """Load and warm up the model; on failure stay up, not ready, with a clear reason."""
    predictor = Predictor(settings.model_dir, settings.device, settings.runtime)
    try:
        await run_in_threadpool(predictor.load)
    except ModelLoadError as exc:
        app.state.load_error = str(exc)
        log.error("model not loaded: %s", exc)
        return
    app.state.classifier = Classifier(predictor, settings.max_pixels, settings.review_threshold)
    app.state.load_error = None
    MODEL_LOAD_SECONDS.set(predictor.load_seconds)
    MODEL_READY.set(1)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    configure_logging(settings.log_level)
    app.state.classifier = None
    await load_model(app, settings)
    yield
    MODEL_READY.set(0)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(title="WBC classifier", version="1.0.0", lifespan=lifespan,
                  description="Classifies white-blood-cell images into eosinophil, lymphocyte,"
                              " monocyte and neutrophil, with calibrated probabilities.")
    app.state.settings = settings
    app.dependency_overrides[get_settings] = lambda: settings
    app.add_exception_handler(ServiceError, service_error_handler)
    app.include_router(predict.router)
    app.include_router(health.router)
    app.add_middleware(BodyLimitMiddleware, single_limit=settings.max_image_bytes,
                       bulk_limit=settings.max_request_bytes,
                       bulk_paths=("/predict/batch", "/differential", "/v2/"))
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST"], allow_headers=["*"])
    app.add_middleware(RequestContextMiddleware)
    return app


app = create_app()
