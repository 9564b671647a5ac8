"""Admission control: a burst over WBC_MAX_PENDING gets 503 + Retry-After at once, the rest
is served, probes keep answering, and nothing else changes."""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from app.admission import AdmissionMiddleware
from app.uploads import BodyLimits
from bench.server import Server

PATHS = ("/predict", "/differential")
BULK = ("/predict/batch", "/differential")


def call(
    app: Any, path: str, method: str = "POST", length: int | None = None
) -> tuple[asyncio.Task, list[dict]]:
    """Start one request through ``app``; its task and the messages it sends."""
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    headers = [] if length is None else [(b"content-length", str(length).encode())]
    scope = {"type": "http", "method": method, "path": path, "headers": headers}
    return asyncio.ensure_future(app(scope, receive, send)), sent


def status(sent: list[dict]) -> int:
    return next(m["status"] for m in sent if m["type"] == "http.response.start")


def held_app() -> tuple[Any, asyncio.Event]:
    """An app whose requests all wait until the event is set."""
    release = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    return app, release


def test_requests_over_the_count_are_refused_and_admitted_again_when_one_ends() -> None:
    async def scenario() -> None:
        inner, release = held_app()
        app = AdmissionMiddleware(
            inner,
            max_pending=3,
            max_pending_bytes=10**9,
            paths=PATHS,
            limits=BodyLimits(single=100, bulk=1000, bulk_paths=BULK),
        )
        held = [call(app, "/predict")[0] for _ in range(3)]
        await asyncio.sleep(0.01)
        over, over_sent = call(app, "/predict/batch")
        await asyncio.sleep(0.01)
        assert over.done() and status(over_sent) == 503
        headers = dict(over_sent[0]["headers"])
        assert headers[b"retry-after"] == b"1"
        assert b"server busy" in over_sent[1]["body"]
        probe, probe_sent = call(app, "/health/ready", method="GET")
        get_model, _ = call(app, "/predict", method="GET")  # only POSTs classify
        await asyncio.sleep(0.01)
        assert app.pending == 3
        release.set()
        await asyncio.gather(*held, probe, get_model)
        assert status(probe_sent) == 200
        assert app.pending == 0 and app.pending_bytes == 0
        again, again_sent = call(app, "/predict")
        await again
        assert status(again_sent) == 200

    asyncio.run(scenario())


def test_upload_bytes_are_bounded_but_a_request_alone_always_runs() -> None:
    async def scenario() -> None:
        inner, release = held_app()
        app = AdmissionMiddleware(
            inner,
            max_pending=100,
            max_pending_bytes=1000,
            paths=PATHS,
            limits=BodyLimits(single=100, bulk=5000, bulk_paths=BULK),
        )
        alone, _ = call(app, "/predict/batch", length=4000)  # over the budget, but alone
        await asyncio.sleep(0.01)
        assert not alone.done() and app.pending_bytes == 4000
        small, small_sent = call(app, "/predict", length=50)
        await asyncio.sleep(0.01)
        assert status(small_sent) == 503 and b"bytes of uploads" in small_sent[1]["body"]
        release.set()
        await alone
        release.clear()
        first, _ = call(app, "/differential", length=600)
        fits, _ = call(app, "/predict", length=80)  # 680 <= 1000
        unknown, unknown_sent = call(app, "/predict")  # no length: counts as its limit, 100
        too_big, too_big_sent = call(app, "/differential", length=400)  # 1180 > 1000
        await asyncio.sleep(0.01)
        assert status(too_big_sent) == 503 and not unknown_sent
        assert app.pending == 3 and app.pending_bytes == 780
        release.set()
        await asyncio.gather(first, fits, unknown)
        assert app.pending_bytes == 0

    asyncio.run(scenario())


def big_jpeg() -> bytes:
    """Over the inline limit (1 MP): classified in a work thread, tens of ms each."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(150, 230, (1500, 2000, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


async def burst(url: str, body: bytes, n: int) -> tuple[list[httpx.Response], int]:
    """``n`` requests at once on ``n`` connections, and a readiness probe among them."""
    limits = httpx.Limits(max_connections=n + 1, max_keepalive_connections=n + 1)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        posts = [
            http.post("/predict", content=body, headers={"content-type": "image/jpeg"})
            for _ in range(n)
        ]

        async def probe() -> int:
            await asyncio.sleep(0.2)
            return (await http.get("/health/ready")).status_code

        *responses, ready = await asyncio.gather(*posts, probe())
    return responses, ready


@pytest.mark.parametrize("max_pending", [4, 0])
def test_a_burst_over_the_limit_is_partly_refused_and_the_rest_served(
    tiny_model: Path, max_pending: int
) -> None:
    body = big_jpeg()
    env = {"WBC_MODEL_DIR": str(tiny_model), "WBC_MAX_PENDING": str(max_pending)}
    with Server(env=env) as running:
        responses, ready = asyncio.run(burst(running.url, body, 24))
        codes = [r.status_code for r in responses]
        assert ready == 200  # probes are never refused
        refused = [r for r in responses if r.status_code == 503]
        if max_pending:
            assert set(codes) == {200, 503} and codes.count(200) >= max_pending
            assert all(
                r.headers["retry-after"] == "1" and "server busy" in r.json()["detail"]
                for r in refused
            )
        else:
            assert codes == [200] * len(codes)  # no bound: everything waits its turn
        with httpx.Client(base_url=running.url, timeout=60) as http:
            after = http.post("/predict", content=body, headers={"content-type": "image/jpeg"})
            assert after.status_code == 200
            metrics = http.get("/metrics").text
        shed = re.search(r"^wbc_requests_shed_total (\S+)$", metrics, re.M)
        assert shed and float(shed.group(1)) == len(refused)
        assert re.search(r"^wbc_requests_pending 0\.0$", metrics, re.M)
