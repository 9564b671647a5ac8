"""Prometheus metrics and structured JSON logging with request ids.

With several worker processes (``WBC_WORKERS`` > 1) the supervisor sets
``PROMETHEUS_MULTIPROC_DIR``: every worker then keeps its metrics in files there and
``/metrics``, whichever worker answers it, reports the sum over all of them
(``exposition_registry``). Otherwise one scrape would show one worker's counts.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from contextvars import ContextVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    multiprocess,
)

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)  # process_resident_memory_bytes and friends, to alert on
REQUESTS = Counter(
    "wbc_http_requests_total",
    "HTTP requests by route and status",
    ["method", "route", "status"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "wbc_http_request_duration_seconds",
    "HTTP request latency by route",
    ["route"],
    registry=REGISTRY,
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30),
)
CLASSIFIED = Counter(
    "wbc_images_classified_total",
    "Images classified, by predicted class",
    ["label"],
    registry=REGISTRY,
)
CELLS_SEEN = Counter(
    "wbc_cells_classified_total",
    "Cells classified, by model version (the denominator of the out-of-distribution share)",
    ["model_version"],
    registry=REGISTRY,
)
OUT_OF_DISTRIBUTION_CELLS = Counter(
    "wbc_cells_out_of_distribution_total",
    "Cells the guard found unlike the model's training "
    "data, by model version: alert on rate(this) / rate(wbc_cells_classified_total)",
    ["model_version"],
    registry=REGISTRY,
)
REJECTED = Counter(
    "wbc_images_rejected_total", "Images refused, by HTTP status", ["status"], registry=REGISTRY
)
SEVERAL_CELLS = Counter(
    "wbc_images_several_cells_total",
    "Images in which more than one white cell was found (smear fields)",
    registry=REGISTRY,
)
REBALANCED = Counter(
    "wbc_connections_rebalanced_total",
    "Responses that closed their "
    "keep-alive connection because this worker held more than its share",
    registry=REGISTRY,
)
SHED = Counter(
    "wbc_requests_shed_total",
    "Classification requests refused with 503 because "
    "the worker already held its limit (WBC_MAX_PENDING)",
    registry=REGISTRY,
)
PENDING = Gauge(
    "wbc_requests_pending",
    "Classification requests in progress or waiting",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
MODEL_LOAD_SECONDS = Gauge(
    "wbc_model_load_seconds",
    "Seconds the last model load took (the slowest worker's)",
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
MODEL_INFO = Gauge(
    "wbc_model_info",
    "1 for the model version served (name, version, whether its OOD guard is on)",
    ["name", "version", "ood_guard"],
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
DELIVERIES = Counter(
    "wbc_deliveries_total",
    "tries to deliver a report message to the LIS, by destination and outcome "
    "(delivered, retry, failed)",
    ["destination", "outcome"],
    registry=REGISTRY,
)
OUTBOX_PENDING = Gauge(
    "wbc_outbox_pending",
    "report messages waiting to be delivered (read from the database)",
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
OUTBOX_OLDEST = Gauge(
    "wbc_outbox_oldest_pending_seconds",
    "age of the oldest report message waiting to be delivered",
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
MODEL_READY = Gauge(
    "wbc_model_ready",
    "1 when the model is loaded and warmed up (in every worker)",
    registry=REGISTRY,
    multiprocess_mode="livemin",
)


def exposition_registry() -> CollectorRegistry:
    """What ``/metrics`` shows: this process's metrics, or the sum over every worker."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    ProcessCollector(registry=registry)  # the answering worker's own memory, CPU, files
    return registry


request_id: ContextVar[str] = ContextVar("request_id", default="-")
_STD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, extras."""

    _second, _stamp = -1, ""

    def timestamp(self, created: float) -> str:
        """The record's local time to the second, formatted once a second (a line is
        logged for every request)."""
        second = int(created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(second))
        return self._stamp

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": request_id.get(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STD_ATTRS})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str) -> None:
    # Nothing logged names its thread, process or source line: the logging module's own
    # advice for skipping the work of finding them (a third of an access-log line's cost)
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
