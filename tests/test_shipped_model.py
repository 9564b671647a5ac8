"""The shipped model on the 71 TEST_SIMPLE images, posted over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from model_training.data import CLASSES, list_samples
from tests.conftest import PROJECT

SHIPPED = PROJECT / "models" / "wbc-classifier"
MARGIN = 0.03


def test_shipped_model_accuracy_on_test_simple(data_dir: Path) -> None:
    version = max((p for p in SHIPPED.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    claimed = json.loads((version / "metadata.json").read_text())["test_metrics"]["TEST_SIMPLE"]
    samples = list_samples(data_dir / "TEST_SIMPLE")
    assert len(samples) == 71
    app = create_app(Settings(model_dir=SHIPPED))
    correct = 0
    with TestClient(app) as client:
        for s in samples:
            r = client.post("/predict", files={"file": (s.path.name, s.path.read_bytes(),
                                                        "image/jpeg")})
            assert r.status_code == 200, r.text
            correct += r.json()["label"] == CLASSES[s.label]
    accuracy = correct / len(samples)
    assert accuracy >= claimed["accuracy"] - MARGIN, (accuracy, claimed)


def test_shipped_model_calls_generated_non_cells_unknown() -> None:
    """Noise, solid colours, text, a document scan: never a confident white-cell label."""
    from tests.app.conftest import encode
    from tests.app.test_lab import not_cells

    app = create_app(Settings(model_dir=SHIPPED))
    with TestClient(app) as client:
        for name, image in not_cells().items():
            r = client.post("/predict", files={"file": (f"{name}.png", encode(image, "PNG"),
                                                        "image/png")})
            assert r.status_code == 200
            assert r.json()["label"] == "unknown", (name, r.json())
