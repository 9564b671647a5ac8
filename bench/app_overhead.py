"""The app's own share of a ``POST /predict``: everything but the classification.

The ASGI app is called directly (no socket, no load generator) with a classifier whose
``open`` and ``classify_one`` return at once, so what is timed is routing, dependency
resolution, the middlewares, reading the body and the JSON answer. Three variants, the
same requests, CPU time per request (``time.thread_time``):

- ``app``: the service's app as it serves (middlewares, API key set, the real route,
  its access-log line written to ``os.devnull``);
- ``routes only``: the same app with its middlewares removed (FastAPI and Starlette alone);
- ``bare ASGI``: a plain ASGI callable that reads the body and sends the same JSON, the
  least any Python server could do per request.

    python -m bench.app_overhead [--requests 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import time
from types import SimpleNamespace
from typing import Any

RESULT = {
    "class": "neutrophil",
    "probabilities": {"eosinophil": 0.01, "lymphocyte": 0.01, "monocyte": 0.01, "neutrophil": 0.97},
    "confidence": 0.97,
    "needs_review": False,
    "model_version": "3",
}
KEY = "bench-key"


class InstantClassifier:
    """Answers at once: the route's work without the model's."""

    predictor = SimpleNamespace(ready=True)

    def open(self, data: bytes) -> Any:  # noqa: A003 - the classifier's own name
        return SimpleNamespace(width=360, height=360)

    def classify_one(self, image: Any) -> dict[str, Any]:
        return dict(RESULT)


def service_app() -> Any:
    from app.config import Settings
    from app.main import create_app

    app = create_app(Settings(api_key=KEY))
    app.state.classifier = InstantClassifier()
    return app


def routes_only_app() -> Any:
    app = service_app()
    app.user_middleware.clear()
    return app


async def bare_app(scope: dict, receive: Any, send: Any) -> None:
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    payload = json.dumps(dict(RESULT)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def call(app: Any, body: bytes) -> int:
    """One ``POST /predict`` with a raw image body, as uvicorn hands it to the app."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/predict",
        "raw_path": b"/predict",
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"image/jpeg"),
            (b"content-length", str(len(body)).encode()),
            (b"x-api-key", KEY.encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    sent = False
    status = 0

    async def receive() -> dict:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def per_request_ms(app: Any, body: bytes, requests: int) -> float:
    for _ in range(200):  # warm-up: the middleware stack is built on the first call
        if (status := await call(app, body)) != 200:
            raise SystemExit(f"the app answered {status}, not 200")
    start = time.thread_time()
    for _ in range(requests):
        await call(app, body)
    return (time.thread_time() - start) * 1000 / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3, help="median of this many")
    args = parser.parse_args()
    from app.observability import configure_logging

    configure_logging("info")  # the access log as served, to a file that keeps nothing
    logging.getLogger().handlers[0].setStream(open(os.devnull, "w"))  # noqa: SIM115
    body = b"\xff\xd8" + bytes(7000)  # a cell JPEG's size; never decoded here
    apps = {"app": service_app(), "routes only": routes_only_app(), "bare ASGI": bare_app}
    results: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(args.rounds):
        for name, app in apps.items():
            results[name].append(asyncio.run(per_request_ms(app, body, args.requests)))
    print(f"CPU per POST /predict, classification excluded (median of {args.rounds} rounds):")
    for name, values in results.items():
        print(f"  {name:12s} {statistics.median(values):.3f} ms")


if __name__ == "__main__":
    main()
