"""TFLite (the CPU runtime) agrees with TensorFlow's SavedModel within 1e-4."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.predictor import Predictor
from model_training.data import load_folder


def _both(model_dir: Path) -> tuple[Predictor, Predictor]:
    tf_runtime = Predictor(model_dir, runtime="tensorflow")
    tflite_runtime = Predictor(model_dir, runtime="tflite")
    tf_runtime.load()
    tflite_runtime.load()
    return tf_runtime, tflite_runtime


def test_tflite_matches_tensorflow_on_tiny_model(tiny_model: Path, kaggle_like: Path) -> None:
    data = load_folder(kaggle_like / "TEST", cache_dir=None, workers=1)
    tf_runtime, tflite_runtime = _both(tiny_model)
    assert tflite_runtime.runtime == "tflite" and tf_runtime.runtime == "tensorflow"
    np.testing.assert_allclose(tflite_runtime.predict(data.x), tf_runtime.predict(data.x),
                               atol=1e-4)
    single = np.stack([tflite_runtime.predict(x[None])[0] for x in data.x[:4]])
    np.testing.assert_allclose(single, tf_runtime.predict(data.x[:4]), atol=1e-4)


def test_tflite_matches_tensorflow_on_shipped_model(data_dir: Path) -> None:
    from tests.conftest import PROJECT

    data = load_folder(data_dir / "TEST_SIMPLE", cache_dir=None, workers=1)
    tf_runtime, tflite_runtime = _both(PROJECT / "models" / "wbc-classifier")
    np.testing.assert_allclose(tflite_runtime.predict(data.x), tf_runtime.predict(data.x),
                               atol=1e-4)
