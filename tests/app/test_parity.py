"""The array the service feeds the model is the array training used for the same file,
unbalanced, white-balanced and stain-balanced, as the model's metadata says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.classifier import Classifier
from app.predictor import Predictor
from model_training.data import load_folder


def classifier_for(balance: str) -> Classifier:
    predictor = Predictor(Path("unused"))
    predictor.metadata = {
        "input": {"white_balance": balance != "none", "stain_balance": balance == "stain"}
    }
    return Classifier(predictor, max_pixels=40_000_000)


@pytest.mark.parametrize("balance", ["white", "none", "stain"])
def test_service_and_training_arrays_are_identical(kaggle_like: Path, balance: str) -> None:
    trained = load_folder(kaggle_like / "TEST_SIMPLE", cache_dir=None, workers=1, balance=balance)
    classifier = classifier_for(balance)
    for path, array in zip(trained.paths, trained.x, strict=True):
        served = classifier.prepare(Path(path).read_bytes()).array
        np.testing.assert_array_equal(served, array)


@pytest.mark.parametrize("balance", ["white", "none", "stain"])
def test_parity_on_real_images(data_dir: Path, balance: str) -> None:
    trained = load_folder(data_dir / "TEST_SIMPLE", cache_dir=None, workers=1, balance=balance)
    classifier = classifier_for(balance)
    for path, array in list(zip(trained.paths, trained.x, strict=True))[:20]:
        np.testing.assert_array_equal(classifier.prepare(Path(path).read_bytes()).array, array)


def test_a_model_without_the_flag_is_served_without_white_balance() -> None:
    """Models exported before white balance existed (v1-v4) keep their preprocessing."""
    assert Classifier(Predictor(Path("unused")), max_pixels=1000).balance == "none"
    assert classifier_for("white").balance == "white"
    assert classifier_for("stain").balance == "stain"
