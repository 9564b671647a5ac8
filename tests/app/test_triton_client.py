"""Triton's own HTTP client (tritonclient 2.x) against a real server on a local port: the
Open Inference Protocol as a KServe or Triton user would try it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from bench.server import Server
from tests.synthetic import class_image

try:
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException
except ImportError:  # pragma: no cover - a test dependency
    triton = None

MODEL = "wbc-classifier"


@pytest.fixture(scope="module")
def server(tiny_model: Path):  # type: ignore[no-untyped-def]
    if triton is None:
        if os.environ.get("CI") == "true":
            pytest.fail("tritonclient[http] is not installed")
        pytest.skip("tritonclient[http] is not installed")
    with Server(env={"WBC_MODEL_DIR": str(tiny_model)}) as s:
        yield s


def client(server: Server):  # type: ignore[no-untyped-def]
    return triton.InferenceServerClient(server.url.removeprefix("http://"))


def jpeg(seed: int) -> bytes:
    import io

    buf = io.BytesIO()
    class_image(seed % 4, seed).save(buf, "JPEG")
    return buf.getvalue()


def test_server_and_model_metadata_and_readiness(server: Server) -> None:
    c = client(server)
    assert c.is_server_live() and c.is_server_ready()
    assert c.get_server_metadata()["name"] == "wbc-classifier"
    assert c.is_model_ready(MODEL)
    assert c.is_model_ready(MODEL, model_version="1")
    meta = c.get_model_metadata(MODEL)
    assert {i["name"] for i in meta["inputs"]} == {"image", "image_bytes"}
    assert {"probabilities", "label", "review_reasons"} <= {o["name"] for o in meta["outputs"]}
    with pytest.raises(InferenceServerException):
        c.get_model_metadata(MODEL, model_version="7")


def test_infer_bytes_and_fp32_as_json(server: Server) -> None:
    import base64

    c = client(server)
    images = np.array([base64.b64encode(jpeg(s)) for s in (1, 2)], dtype=np.object_)
    given = triton.InferInput("image_bytes", [2], "BYTES")
    given.set_data_from_numpy(images, binary_data=False)
    wanted = [
        triton.InferRequestedOutput(n, binary_data=False)
        for n in ("probabilities", "label", "review_reasons")
    ]
    result = c.infer(MODEL, [given], outputs=wanted)
    probs = result.as_numpy("probabilities")
    assert probs.shape == (2, 4) and np.allclose(probs.sum(axis=1), 1, atol=1e-4)
    assert len(result.as_numpy("label")) == 2
    crops = np.full((1, 150, 150, 3), 128.0, dtype=np.float32)
    tensor = triton.InferInput("image", list(crops.shape), "FP32")
    tensor.set_data_from_numpy(crops, binary_data=False)
    out = c.infer(
        MODEL,
        [tensor],
        outputs=[triton.InferRequestedOutput("probabilities", binary_data=False)],
        model_version="1",
    )
    assert out.as_numpy("probabilities").shape == (1, 4)


def test_binary_tensor_data_is_refused_cleanly(server: Server) -> None:
    c = client(server)
    crops = np.full((1, 150, 150, 3), 128.0, dtype=np.float32)
    tensor = triton.InferInput("image", list(crops.shape), "FP32")
    tensor.set_data_from_numpy(crops)  # the client's default: the binary extension
    with pytest.raises(InferenceServerException, match="binary tensor data"):
        c.infer(MODEL, [tensor])
    assert c.is_server_ready()  # and the connection and server go on
