"""A real uvicorn process on a free port, over HTTP: bad input, then good input."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.server import Server


@pytest.fixture(scope="module")
def server(tiny_model: Path) -> Iterator[str]:
    with Server(env={"WBC_MODEL_DIR": str(tiny_model)}) as running:
        yield running.url


def test_bad_input_then_good_input(server: str, cell_jpeg: bytes) -> None:
    with httpx.Client(base_url=server, timeout=30) as http:
        bad = http.post("/predict", content=b"\x89PNG\r\n\x1a\nbroken",
                        headers={"content-type": "image/png"})
        assert bad.status_code == 400
        assert bad.json()["detail"]
        wrong = http.post("/predict", files={"upload": ("a.jpg", cell_jpeg, "image/jpeg")})
        assert wrong.status_code == 422
        good = http.post("/predict", files={"file": ("a.jpg", cell_jpeg, "image/jpeg")})
        assert good.status_code == 200
        assert good.json()["label"] in {"eosinophil", "lymphocyte", "monocyte", "neutrophil"}
        assert http.get("/health/live").status_code == 200
        metrics = http.get("/metrics").text
        assert 'wbc_http_requests_total{method="POST",route="/predict",status="400"} 1.0' in metrics
        assert "wbc_model_load_seconds" in metrics
        assert "wbc_images_classified_total" in metrics
