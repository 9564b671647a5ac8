"""The CPU runtime (the version's model.tflite in LiteRT, no TensorFlow) agrees with
TensorFlow's SavedModel within 1e-5, its NumPy Grad-CAM with TensorFlow's GradientTape, and
the app serves every route with TensorFlow unimportable."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from app.predictor import ModelLoadError, Predictor
from model_training.data import load_folder
from tests.conftest import PROJECT

SHIPPED = PROJECT / "models" / "wbc-classifier"


def _both(model_dir: Path) -> tuple[Predictor, Predictor]:
    tf_runtime = Predictor(model_dir, runtime="tensorflow")
    lite_runtime = Predictor(model_dir)
    tf_runtime.load()
    lite_runtime.load()
    return tf_runtime, lite_runtime


def test_litert_matches_tensorflow_on_tiny_model(tiny_model: Path, kaggle_like: Path) -> None:
    data = load_folder(kaggle_like / "TEST", cache_dir=None, workers=1)
    tf_runtime, lite_runtime = _both(tiny_model)
    assert lite_runtime.runtime == "litert" and tf_runtime.runtime == "tensorflow"
    np.testing.assert_allclose(lite_runtime.predict(data.x), tf_runtime.predict(data.x), atol=1e-5)
    single = np.stack([lite_runtime.predict(x[None])[0] for x in data.x[:4]])
    np.testing.assert_allclose(single, tf_runtime.predict(data.x[:4]), atol=1e-5)
    lite_features = lite_runtime.infer(data.x)[1]
    tf_features = tf_runtime.infer(data.x)[1]
    assert lite_features is not None and tf_features is not None
    np.testing.assert_allclose(lite_features, tf_features, rtol=1e-4, atol=1e-4)


def test_litert_matches_tensorflow_on_shipped_model(data_dir: Path) -> None:
    data = load_folder(data_dir / "TEST_SIMPLE", cache_dir=None, workers=1)
    tf_runtime, lite_runtime = _both(SHIPPED)
    np.testing.assert_allclose(lite_runtime.predict(data.x), tf_runtime.predict(data.x), atol=1e-5)


@pytest.mark.parametrize("which", ["tiny", "shipped"])
def test_numpy_gradcam_matches_tensorflow_gradient_tape(
    which: str, tiny_model: Path, data_dir: Path
) -> None:
    """The heatmap /explain draws (LiteRT feature maps, gradient in NumPy) equals the one
    TensorFlow's GradientTape gives, on real cells, within 0.01 of a map in [0, 1]. (Not
    closer: for a confident cell TensorFlow's float32 softmax gradient p_c (1 - p_c) loses
    digits that the closed form in float64 keeps; on less confident inputs the two agree
    within 1e-5, see metadata.json's serving.checked.)"""
    from model_training.serving_export import tf_gradcam
    from wbc_core.keras_model import load_keras

    model_dir = tiny_model if which == "tiny" else SHIPPED
    predictor = Predictor(model_dir)
    predictor.load()
    assert predictor.version_dir is not None
    model = load_keras(predictor.version_dir)
    data = load_folder(data_dir / "TEST_SIMPLE", cache_dir=None, workers=1)
    for image in data.x[::9]:
        cam, best = predictor.gradcam(image)
        ref, ref_best = tf_gradcam(model, image)
        assert best == ref_best
        assert cam.shape == ref.shape and cam.max() > 0
        np.testing.assert_allclose(cam, ref, atol=1e-2)


LEAN_CLIENT = r"""
import importlib.abc, json, sys

BLOCKED = ("tensorflow", "keras", "model_training", "scipy")

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is made unimportable by this test")

sys.meta_path.insert(0, Blocked())
from fastapi.testclient import TestClient
from app.config import Settings
from app.main import create_app

image = open(sys.argv[2], "rb").read()
app = create_app(Settings(model_dir=sys.argv[1]))
with TestClient(app) as client:
    out = {"ready": client.get("/health/ready").status_code}
    r = client.post("/predict", content=image, headers={"content-type": "image/png"})
    out["predict"] = r.json()
    r = client.post("/explain", content=image, headers={"content-type": "image/png"})
    out["explain"] = [r.status_code, r.headers.get("content-type"), len(r.content)]
    r = client.post("/predict/batch", files=[("files", ("a.png", image, "image/png"))])
    out["batch"] = r.status_code
out["modules"] = sorted(
    m for m in sys.modules if m.split(".")[0] in BLOCKED
)
print("RESULT " + json.dumps(out))
"""


def test_the_app_serves_with_tensorflow_unimportable(tmp_path: Path, data_dir: Path) -> None:
    """The lean path: a subprocess in which importing TensorFlow, Keras, SciPy or the
    training package fails serves /health/ready, /predict, /predict/batch and /explain with the
    shipped model, and its probabilities equal the TensorFlow runtime's within 1e-5."""
    from fastapi.testclient import TestClient

    from app.config import Settings
    from app.main import create_app

    image = sorted((data_dir / "TEST_SIMPLE" / "MONOCYTE").iterdir())[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WBC_")}
    run = subprocess.run(
        [sys.executable, "-c", LEAN_CLIENT, str(SHIPPED), str(image)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=PROJECT,
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    assert run.returncode == 0 and lines, run.stderr[-3000:]
    lean = json.loads(lines[-1][len("RESULT ") :])
    assert lean["modules"] == []
    assert lean["ready"] == 200 and lean["batch"] == 200
    assert lean["explain"][0] == 200 and lean["explain"][1] == "image/png"
    with TestClient(create_app(Settings(model_dir=SHIPPED, runtime="tensorflow"))) as client:
        full = client.post(
            "/predict", content=image.read_bytes(), headers={"content-type": "image/png"}
        ).json()
    assert lean["predict"]["label"] == full["label"]
    for name, p in full["probabilities"].items():
        assert abs(lean["predict"]["probabilities"][name] - p) <= 1e-5


def test_a_version_without_serving_artefacts_is_refused_with_the_command_to_make_them(
    tiny_model: Path, tmp_path: Path
) -> None:
    import shutil

    other = tmp_path / "m"
    shutil.copytree(tiny_model, other)
    (other / "1" / "model.tflite").write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="does not match its sha256"):
        Predictor(other).load()
    meta = json.loads((other / "1" / "metadata.json").read_text())
    del meta["serving"]
    (other / "1" / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="serving-export"):
        Predictor(other).load()


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
