"""TFLite (the CPU runtime) agrees with TensorFlow's SavedModel within 1e-4."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
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
    np.testing.assert_allclose(
        tflite_runtime.predict(data.x), tf_runtime.predict(data.x), atol=1e-4
    )
    single = np.stack([tflite_runtime.predict(x[None])[0] for x in data.x[:4]])
    np.testing.assert_allclose(single, tf_runtime.predict(data.x[:4]), atol=1e-4)


def test_tflite_matches_tensorflow_on_shipped_model(data_dir: Path) -> None:
    from tests.conftest import PROJECT

    data = load_folder(data_dir / "TEST_SIMPLE", cache_dir=None, workers=1)
    tf_runtime, tflite_runtime = _both(PROJECT / "models" / "wbc-classifier")
    np.testing.assert_allclose(
        tflite_runtime.predict(data.x), tf_runtime.predict(data.x), atol=1e-4
    )


def test_work_threads_setting_bounds_the_worker_thread_pool(
    tiny_model: Path, cell_jpeg: bytes
) -> None:
    """WBC_WORK_THREADS caps the threads that decode and classify; requests beyond it
    queue and are still answered."""
    import anyio.to_thread
    from fastapi.testclient import TestClient

    from app.main import create_app
    from tests.app.conftest import make_settings

    app = create_app(make_settings(tiny_model, work_threads=3, inline_max_pixels=0))
    with TestClient(app) as client:
        tokens = client.portal.call(
            lambda: anyio.to_thread.current_default_thread_limiter().total_tokens
        )
        assert tokens == 3
        with ThreadPoolExecutor(8) as pool:
            statuses = list(
                pool.map(
                    lambda _: (
                        client.post(
                            "/predict", content=cell_jpeg, headers={"content-type": "image/jpeg"}
                        ).status_code
                    ),
                    range(16),
                )
            )
        assert statuses == [200] * 16


def test_small_images_are_classified_on_the_event_loop_large_ones_in_work_threads(
    tiny_model: Path, cell_jpeg: bytes
) -> None:
    """WBC_INLINE_MAX_PIXELS: a cell image skips the hop to a work thread (it costs more
    than it saves); a larger image goes to the work threads. Same answer either way."""
    import threading

    from fastapi.testclient import TestClient
    from PIL import Image

    from app.main import create_app
    from tests.app.conftest import make_settings

    pixels = Image.open(io.BytesIO(cell_jpeg)).size
    pixels = pixels[0] * pixels[1]
    answers = {}
    for limit in (pixels, pixels - 1):
        app = create_app(make_settings(tiny_model, inline_max_pixels=limit))
        with TestClient(app) as client:
            loop_thread = client.portal.call(threading.get_ident)
            classifier = app.state.classifier
            plain = classifier.classify_one
            seen: list[int] = []

            def recording(upload: object, plain=plain, seen=seen) -> dict:
                seen.append(threading.get_ident())
                return plain(upload)

            classifier.classify_one = recording
            response = client.post(
                "/predict", content=cell_jpeg, headers={"content-type": "image/jpeg"}
            )
            assert response.status_code == 200, response.text
            assert len(seen) == 1
            answers[limit] = (seen[0] == loop_thread, response.json()["probabilities"])
    assert answers[pixels][0] is True  # at the limit: on the event loop
    assert answers[pixels - 1][0] is False  # over it: a work thread
    assert answers[pixels][1] == answers[pixels - 1][1]


def test_a_model_trained_on_other_crops_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    """A model records the crop it was trained on (crop side / cell box); serving it with
    other crops would quietly change its inputs, so it does not load."""
    import json
    import shutil

    import pytest

    from app.predictor import ModelLoadError
    from wbc_core import localise
    from wbc_core.preprocessing import crop_mismatch

    meta = json.loads((tiny_model / "1" / "metadata.json").read_text())
    assert meta["input"]["crop_context"] == localise.CROP_CONTEXT
    assert crop_mismatch(meta) is None
    # models that record no crop were made at 1.15 x (model v5 and before)
    assert (crop_mismatch({"input": {}}) is None) == (
        localise.CROP_CONTEXT == localise.LEGACY_CROP_CONTEXT
    )
    other = tmp_path / "m"
    shutil.copytree(tiny_model, other)
    meta["input"]["crop_context"] = localise.CROP_CONTEXT + 0.4
    (other / "1" / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="trained on crops of"):
        Predictor(other).load()
