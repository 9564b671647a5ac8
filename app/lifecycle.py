"""Loading a model version and swapping it in (at start, on POST /admin/reload, on SIGHUP)."""

from __future__ import annotations

import asyncio
import logging
import re
import signal
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from app.classifier import Classifier
from app.config import Settings
from app.observability import MODEL_INFO, MODEL_LOAD_SECONDS, MODEL_READY
from app.predictor import ModelLoadError, Predictor

log = logging.getLogger("app")

# Under the supervisor (app/serve.py) every worker shares this counter of reloads asked
# for: a worker that answers POST /admin/reload bumps it, and every worker's watcher
# (``watch_reloads``) loads the model again when it changes. None when serving alone.
RELOADS: Any = None
WATCH_INTERVAL_S = 0.5


def without_paths(reason: str, model_dir: Path) -> str:
    """A load failure's reason as clients may read it: the server's folders replaced by
    what they are (``WBC_MODEL_DIR``, a version of it)."""
    folder = str(Path(model_dir))
    reason = re.sub(re.escape(folder) + r"/(\d+)", r"model version \1", reason)
    return reason.replace(folder, "WBC_MODEL_DIR")


async def load_model(app: FastAPI, settings: Settings) -> bool:
    """Load and warm up the newest model version, then swap it in. On failure keep what
    is served (nothing, at start: up but not ready) and record a clear reason."""
    predictor = Predictor(settings.model_dir, settings.device, settings.runtime)
    try:
        await run_in_threadpool(predictor.load)
    except ModelLoadError as exc:
        app.state.load_error = without_paths(str(exc), settings.model_dir)
        log.error("model not loaded: %s", exc)  # the operator's log keeps the full path
        return False
    app.state.classifier = Classifier(predictor, settings.max_pixels, settings.review_threshold)
    app.state.load_error = None
    MODEL_LOAD_SECONDS.set(predictor.load_seconds)
    MODEL_READY.set(1)
    info = app.state.classifier.model_info()
    MODEL_INFO.clear()  # one version served at a time
    MODEL_INFO.labels(info["name"], info["version"], str(predictor.ood is not None).lower()).set(1)
    return True


def install_reload_signal(app: FastAPI, settings: Settings) -> None:
    """SIGHUP reloads the model, like POST /admin/reload."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(
            signal.SIGHUP, lambda: asyncio.ensure_future(load_model(app, settings))
        )
    except (NotImplementedError, RuntimeError, ValueError):
        log.warning("SIGHUP reload not available here")


def announce_reload(app: FastAPI) -> int:
    """Tell every worker to reload; returns the reload's number (0 when serving alone).
    This worker counts it as seen: the caller reloads it."""
    if RELOADS is None:
        return 0
    with RELOADS.get_lock():
        RELOADS.value += 1
        app.state.reload_seen = RELOADS.value
    return int(app.state.reload_seen)


async def watch_reloads(app: FastAPI, settings: Settings) -> None:
    """Reload this worker whenever another one announced a reload (runs for the worker's
    life; nothing to do when serving alone)."""
    if RELOADS is None:
        return
    app.state.reload_seen = RELOADS.value
    while True:
        await asyncio.sleep(WATCH_INTERVAL_S)
        wanted = RELOADS.value
        if wanted != app.state.reload_seen:
            app.state.reload_seen = wanted
            log.info("reloading: announced by another worker", extra={"reload": wanted})
            await load_model(app, settings)
