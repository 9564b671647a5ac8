"""Shared fixtures: a tiny real SavedModel trained on synthetic images, the real data dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.synthetic import write_kaggle_like

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def kaggle_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_kaggle_like(tmp_path_factory.mktemp("kaggle"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, kaggle_like: Path) -> Path:
    """Train the tiny arch for one epoch on synthetic data and export it: models/<name>/1."""
    from model_training.train import train

    out = tmp_path_factory.mktemp("models") / "wbc-classifier"
    train("official", kaggle_like, out, arch="tiny", epochs=1, batch_size=8,
          cache_dir=None, report_dir=tmp_path_factory.mktemp("report"), scale_jitter=0.1)
    return out


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real Kaggle images: skip without them, fail under CI=true."""
    path = Path(os.environ.get("WBC_DATA_DIR", PROJECT.parent / "shared/data/kaggle-blood-cells"))
    if not (path / "TEST_SIMPLE").is_dir():
        message = f"real images not found at {path} (set WBC_DATA_DIR)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path
