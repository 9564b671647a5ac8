"""The array the service feeds the model is the array training used for the same file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.classifier import Classifier
from app.predictor import Predictor
from model_training.data import load_folder


def test_service_and_training_arrays_are_identical(kaggle_like: Path) -> None:
    trained = load_folder(kaggle_like / "TEST_SIMPLE", cache_dir=None, workers=1)
    classifier = Classifier(Predictor(Path("unused")), max_pixels=40_000_000)
    for path, array in zip(trained.paths, trained.x, strict=True):
        served = classifier.prepare(Path(path).read_bytes()).array
        np.testing.assert_array_equal(served, array)


def test_parity_on_real_images(data_dir: Path) -> None:
    trained = load_folder(data_dir / "TEST_SIMPLE", cache_dir=None, workers=1)
    classifier = Classifier(Predictor(Path("unused")), max_pixels=40_000_000)
    for path, array in list(zip(trained.paths, trained.x, strict=True))[:20]:
        np.testing.assert_array_equal(classifier.prepare(Path(path).read_bytes()).array, array)
