"""A real uvicorn process on a free port, over HTTP: bad input, then good input."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import PROJECT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tiny_model: Path) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "WBC_MODEL_DIR": str(tiny_model), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1",
         "--port", str(port)], cwd=PROJECT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(proc.stdout.read().decode() if proc.stdout else "server died")
        time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("server did not become ready")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


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
