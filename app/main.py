"""Wiring only: settings, lifespan (model load), middleware, routers, error handlers."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from starlette.concurrency import run_in_threadpool

from app import delivery, orders
from app.admission import AdmissionMiddleware
from app.config import Settings, get_settings
from app.db import Database, database_url, migrate_embedded
from app.errors import ServiceError, service_error_handler, validation_error_handler
from app.lifecycle import install_reload_signal, load_model, watch_reloads
from app.middleware import RequestContextMiddleware
from app.observability import MODEL_READY, configure_logging
from app.openapi import ADMIN_ERRORS, AUTH_ERRORS, V2_ERRORS, document_api_key
from app.routes import (
    admin,
    auth,
    deliveries,
    differential,
    docs,
    explain,
    health,
    pages,
    predict,
    specimens,
    v2,
)
from app.security import ApiKeyMiddleware, key_file_problem, require_admin_key
from app.uploads import MULTIPART_OVERHEAD, BodyLimitMiddleware, BodyLimits

BULK_PATHS = ("/predict/batch", "/differential", "/v2/")  # many images per request
CLASSIFYING_PATHS = ("/predict", "/differential", "/explain", "/v2/")  # POST: admission


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    configure_logging(settings.log_level)
    # The event loop waits for the GIL while an inference thread holds it; the default
    # 5 ms switch interval then adds milliseconds to every request (bench/run.py shows it).
    sys.setswitchinterval(settings.gil_switch_interval_s)
    anyio.to_thread.current_default_thread_limiter().total_tokens = settings.work_threads
    app.state.classifier = None
    if problem := key_file_problem(settings):
        logging.getLogger("app").error(problem)
    await load_model(app, settings)
    await run_in_threadpool(open_database, app, settings)
    install_reload_signal(app, settings)
    watcher = asyncio.create_task(watch_reloads(app, settings))
    deliverer = asyncio.create_task(delivery.run(app))  # the outbox to the LIS
    listener = asyncio.create_task(orders.serve(app))  # orders from the LIS, when enabled
    yield
    watcher.cancel()
    deliverer.cancel()
    listener.cancel()
    MODEL_READY.set(0)
    if getattr(app.state, "db", None) is not None:
        app.state.db.dispose()


def open_database(app: FastAPI, settings: Settings) -> None:
    """The specimen database: SQLite (the default) is migrated here; any other must be at
    the current migration already (``python -m app db upgrade``), or the specimen routes
    answer 503 saying so. Classification never depends on it."""
    app.state.db, app.state.db_error = None, None
    try:
        url = database_url(settings.database_url, settings.store_dir)
        migrate_embedded(url)
        db = Database(url)
        if not db.is_current():
            db.dispose()
            app.state.db_error = (
                "the database is not at the current migration: run `python -m app db upgrade`"
            )
        else:
            app.state.db = db
    except Exception as exc:  # noqa: BLE001 - the service still classifies without it
        app.state.db_error = f"the database is not available ({type(exc).__name__})"
    if app.state.db_error:
        logging.getLogger("app").error(app.state.db_error)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="WBC classifier",
        version="2.0.0",
        lifespan=lifespan,
        docs_url=None,  # served from vendored assets by app.routes.docs
        redoc_url=None,
        # no OpenTelemetry here (Prometheus at /metrics): FastAPI otherwise asks the
        # global providers on every request whether anyone configured one
        telemetry={"tracing": False, "metrics": False, "logs": False},
        description="Classifies white-blood-cell images into eosinophil, lymphocyte,"
        " monocyte and neutrophil, with calibrated probabilities.",
    )
    app.state.settings = settings
    app.add_exception_handler(ServiceError, service_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    # The classifying and model routes first (the router tries routes in order), each
    # guarded by ApiKeyMiddleware (app/security.py)
    for router in (predict.router, differential.router, explain.router, health.model_router):
        app.include_router(document_api_key(router), responses=AUTH_ERRORS)
    app.include_router(document_api_key(v2.router), responses=V2_ERRORS)
    app.include_router(docs.router)
    app.mount("/static", docs.static_files(), name="static")
    app.include_router(health.router)
    app.include_router(v2.health_router)
    app.include_router(
        admin.router, dependencies=[Depends(require_admin_key)], responses=ADMIN_ERRORS
    )
    app.include_router(auth.router)  # sign-in: no API key (rate-limited per account)
    app.include_router(specimens.router)  # an API key or a reviewer's session (app/actors.py)
    app.include_router(pages.router)  # the review pages: a reviewer's session
    app.include_router(deliveries.router)  # the outbox to the LIS
    limits = BodyLimits(
        single=settings.max_image_bytes + MULTIPART_OVERHEAD,
        bulk=settings.max_request_bytes,
        bulk_paths=BULK_PATHS,
    )
    app.add_middleware(BodyLimitMiddleware, limits=limits, body_timeout=settings.body_timeout_s)
    app.add_middleware(
        AdmissionMiddleware,
        max_pending=settings.max_pending,
        max_pending_bytes=settings.max_pending_bytes,
        paths=CLASSIFYING_PATHS,
        limits=limits,
    )
    app.add_middleware(ApiKeyMiddleware, settings=settings)  # before admission and bodies
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
        )
    app.add_middleware(RequestContextMiddleware)
    return app


app = create_app()
