"""The KServe Python SDK's REST client (kserve 0.21, ``InferenceRESTClient`` with the v2
protocol) against a real server on a local port, with an API key: liveness, readiness,
model readiness, and inference with BYTES and FP32 inputs as JSON."""

from __future__ import annotations

import asyncio
import base64
import io
import os
from pathlib import Path

import numpy as np
import pytest

from bench.server import Server
from tests.synthetic import class_image

try:
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
except ImportError:  # pragma: no cover - a test dependency
    InferenceRESTClient = None

MODEL = "wbc-classifier"
KEY = "kserve-test-key"


@pytest.fixture(scope="module")
def server(tiny_model: Path):  # type: ignore[no-untyped-def]
    if InferenceRESTClient is None:
        if os.environ.get("CI") == "true":
            pytest.fail("kserve is not installed")
        pytest.skip("kserve is not installed")
    with Server(env={"WBC_MODEL_DIR": str(tiny_model), "WBC_API_KEY": KEY}) as s:
        yield s


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def _client() -> InferenceRESTClient:
    return InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30))


HEADERS = {"Authorization": f"Bearer {KEY}"}


def test_server_and_model_readiness(server: Server) -> None:
    async def probe() -> tuple[bool, bool, bool]:
        c = _client()
        try:
            return (
                await c.is_server_live(server.url, headers=HEADERS),
                await c.is_server_ready(server.url, headers=HEADERS),
                await c.is_model_ready(server.url, MODEL, headers=HEADERS),
            )
        finally:
            await c.close()

    assert run(probe()) == (True, True, True)


def _jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    class_image(seed % 4, seed).save(buf, "JPEG")
    return buf.getvalue()


def test_infer_bytes_and_fp32(server: Server) -> None:
    images = [base64.b64encode(_jpeg(s)).decode() for s in (3, 4, 5)]
    given = InferInput("image_bytes", [3], "BYTES", data=images)
    crops = np.full((2, 150, 150, 3), 120.0, dtype=np.float32)
    tensor = InferInput("image", list(crops.shape), "FP32")
    tensor.set_data_from_numpy(crops, binary_data=False)

    async def infer() -> tuple:
        c = _client()
        try:
            a = await c.infer(
                server.url, InferRequest(MODEL, [given]), model_name=MODEL, headers=HEADERS
            )
            b = await c.infer(
                server.url, InferRequest(MODEL, [tensor]), model_name=MODEL, headers=HEADERS
            )
            return a, b
        finally:
            await c.close()

    by_bytes, by_fp32 = run(infer())
    for response, n in ((by_bytes, 3), (by_fp32, 2)):
        outputs = {o.name: o for o in response.outputs}
        probs = outputs["probabilities"].as_numpy()
        assert probs.shape == (n, 4)
        assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
        assert len(outputs["label"].as_numpy()) == n
        assert response.model_name == MODEL


def test_a_wrong_key_is_refused(server: Server) -> None:
    async def ready() -> bool:
        c = _client()
        try:
            return await c.is_model_ready(server.url, MODEL, headers={"X-API-Key": "wrong"})
        finally:
            await c.close()

    assert run(ready()) is False  # the client reads the 401 as "not ready"
