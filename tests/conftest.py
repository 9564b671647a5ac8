"""Shared fixtures: a tiny real SavedModel trained on synthetic images, the real data dir."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from tests.synthetic import write_kaggle_like

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# every app and server the tests start keeps its SQLite specimen database out of the checkout
os.environ.setdefault("WBC_STORE_DIR", tempfile.mkdtemp(prefix="wbc-test-store-"))
PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def kaggle_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_kaggle_like(tmp_path_factory.mktemp("kaggle"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, kaggle_like: Path) -> Path:
    """Train the tiny arch for one epoch on synthetic data and export it: models/<name>/1."""
    from model_training.train import Augmentation, train

    out = tmp_path_factory.mktemp("models") / "wbc-classifier"
    train(
        "official",
        kaggle_like,
        out,
        arch="tiny",
        epochs=1,
        batch_size=8,
        cache_dir=None,
        report_dir=tmp_path_factory.mktemp("report"),
        aug=Augmentation(scale=0.1),
    )
    return out


def real_data(variable: str, default: str, marker: str) -> Path:
    """A real data folder from ``variable`` (default under ../shared/data): skip the test
    when ``marker`` is not in it, fail under CI=true."""
    path = Path(os.environ.get(variable, PROJECT.parent / "shared/data" / default))
    if not (path / marker).exists():
        message = f"real images not found at {path} (set {variable})"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real Kaggle images."""
    return real_data("WBC_DATA_DIR", "kaggle-blood-cells", "TEST_SIMPLE")


@pytest.fixture(scope="session")
def bccd_dir() -> Path:
    """The real BCCD smear fields with white-cell boxes."""
    return real_data("WBC_BCCD_DIR", "bccd", "ImageSets/Main/test.txt")
