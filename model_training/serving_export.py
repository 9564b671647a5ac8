"""The CPU serving artefacts of a version folder, written once beside its SavedModel.

- ``model.tflite``: the network converted for the LiteRT runtime, with one signature whose
  outputs are ``probabilities``, ``features`` (where the network names them; the
  out-of-distribution guard reads them) and ``feature_map_<j>``, each network's last
  feature map (Grad-CAM reads them).
- ``gradcam.npz``: each network's dense kernel and bias (``wbc_core.gradcam``).

Both are checked before they are recorded (with their sha256) under ``serving`` in
metadata.json: the TFLite outputs against the SavedModel's, and the NumPy Grad-CAM against
TensorFlow's GradientTape, on the same images. The SavedModel stays the model of record and
the GPU path. ``python -m model_training serving-export --model DIR`` adds them to an
exported version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from wbc_core import gradcam
from wbc_core.keras_model import load_keras
from wbc_core.network import FEATURES, members_of
from wbc_core.preprocessing import IMAGE_SIZE

log = logging.getLogger(__name__)

TFLITE = "model.tflite"
OUTPUT_TOLERANCE = 1e-5  # TFLite probabilities against the SavedModel's
CAM_TOLERANCE = 1e-2  # NumPy Grad-CAM against GradientTape (maps in [0, 1]; float32 tape)


def _last_feature_map(net: keras.Model) -> keras.KerasTensor:
    return [layer for layer in net.layers if len(layer.output.shape) == 4][-1].output


def serving_model(model: keras.Model) -> keras.Model:
    """``model`` with named outputs: probabilities, features (if named) and the feature maps."""
    outputs: dict[str, Any] = {"probabilities": model.output}
    try:
        outputs["features"] = model.get_layer(FEATURES).output
    except ValueError:
        pass  # an ensemble: no single feature vector
    nets = members_of(model)
    if nets == [model]:
        outputs["feature_map_0"] = _last_feature_map(model)
    else:  # an ensemble's members are nested models: expose each one's last map
        inner = [keras.Model(n.inputs, [_last_feature_map(n), n.output]) for n in nets]
        x = model.inputs[0]
        probs = []
        for j, net in enumerate(inner):
            fmap, p = net(x)
            outputs[f"feature_map_{j}"] = fmap
            probs.append(p)
        outputs["probabilities"] = keras.layers.Average()(probs)
    return keras.Model(model.inputs, outputs)


def heads(model: keras.Model) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each network's final dense layer (kernel, bias)."""
    out = []
    for net in members_of(model):
        dense = [layer for layer in net.layers if isinstance(layer, keras.layers.Dense)][-1]
        kernel, bias = (np.asarray(w) for w in dense.get_weights())
        out.append((kernel, bias))
    return out


def convert(model: keras.Model) -> bytes:
    """The TFLite flatbuffer of ``serving_model(model)``, by way of a temporary SavedModel
    (the converter freezes a SavedModel's variables into the flatbuffer)."""
    named = serving_model(model)
    archive = keras.export.ExportArchive()
    archive.track(named)
    spec = tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32, name="image")
    archive.add_endpoint(
        name="serving_default",
        fn=lambda image: named(image, training=False),
        input_signature=[spec],
    )
    with tempfile.TemporaryDirectory() as tmp:
        archive.write_out(tmp, verbose=False)
        return tf.lite.TFLiteConverter.from_saved_model(tmp).convert()


def tf_gradcam(model: keras.Model, image: np.ndarray) -> tuple[np.ndarray, int]:
    """The reference: Grad-CAM with TensorFlow's GradientTape (each network's probability
    of the ensemble's predicted class, differentiated with respect to its last map)."""
    nets = [keras.Model(n.inputs, [_last_feature_map(n), n.output]) for n in members_of(model)]
    x = tf.constant(image[None].astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        outs = [net(x, training=False) for net in nets]
        best = int(tf.argmax(tf.add_n([probs[0] for _, probs in outs])))
        scores = [probs[:, best] for _, probs in outs]
    cams = []
    for (fmap, _), score in zip(outs, scores, strict=True):
        weights = tape.gradient(score, fmap)[0].numpy().mean(axis=(0, 1))
        cam = np.maximum((fmap[0].numpy() * weights).sum(axis=-1), 0)
        cams.append(cam / cam.max() if cam.max() > 0 else cam)
    del tape
    return np.mean(cams, axis=0), best


def check_images(n: int = 6, seed: int = 0) -> np.ndarray:
    """Smooth random images (blobs of colour) in 0..255: inputs that give varied maps."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE] / IMAGE_SIZE
    images = []
    for _ in range(n):
        img = np.full((IMAGE_SIZE, IMAGE_SIZE, 3), rng.uniform(150, 240, 3))
        for _ in range(3):
            cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.08, 0.3)
            mask = ((yy - cy) ** 2 + (xx - cx) ** 2) < r**2
            img[mask] = rng.uniform(40, 200, 3)
        images.append(img)
    return np.clip(np.stack(images), 0, 255).astype(np.float32)


def write_serving_artefacts(version_dir: Path, images: np.ndarray | None = None) -> dict[str, Any]:
    """Convert, check and write the CPU serving artefacts of ``version_dir`` (a SavedModel
    with its metadata.json); returns the record for metadata.json's ``serving``."""
    from wbc_core.litert import LiteRTModel  # the serving side's reader, checked here

    version_dir = Path(version_dir)
    model = load_keras(version_dir)
    tflite_path = version_dir / TFLITE
    tflite_path.write_bytes(convert(model))
    gradcam.save_heads(version_dir, heads(model))
    images = check_images() if images is None else images.astype(np.float32)

    lite = LiteRTModel(tflite_path.read_bytes())
    saved = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    expected = saved(image=tf.constant(images))
    got = lite.run(images)
    worst = float(np.max(np.abs(got["probabilities"] - expected["probabilities"].numpy())))
    if not worst <= OUTPUT_TOLERANCE:  # NaN fails too
        raise RuntimeError(f"TFLite probabilities differ from the SavedModel's by {worst:.2e}")
    if "features" in expected:
        feat_err = float(np.max(np.abs(got["features"] - expected["features"].numpy())))
        scale = float(np.max(np.abs(expected["features"].numpy()))) or 1.0
        if not feat_err <= OUTPUT_TOLERANCE * max(scale, 1.0):
            raise RuntimeError(f"TFLite features differ from the SavedModel's by {feat_err:.2e}")
    cam_err = 0.0
    loaded_heads = gradcam.load_heads(version_dir)
    for i, image in enumerate(images):
        maps = [got[k][i] for k in sorted(got) if k.startswith("feature_map_")]
        cam, best = gradcam.heatmap(maps, loaded_heads)
        ref, ref_best = tf_gradcam(model, image)
        if best != ref_best:
            raise RuntimeError("NumPy Grad-CAM predicts another class than TensorFlow")
        cam_err = max(cam_err, float(np.max(np.abs(cam - ref))))
    if not cam_err <= CAM_TOLERANCE:
        raise RuntimeError(f"NumPy Grad-CAM differs from GradientTape's by {cam_err:.2e}")

    log.info(
        "serving artefacts of %s: probabilities within %.1e, Grad-CAM within %.1e",
        version_dir,
        worst,
        cam_err,
    )
    return {
        "tflite": {"file": TFLITE, "sha256": _sha256(tflite_path), "outputs": sorted(got)},
        "gradcam": {"file": gradcam.FILENAME, "sha256": _sha256(version_dir / gradcam.FILENAME)},
        "checked": {
            "images": len(images),
            "max_probability_difference": worst,
            "max_gradcam_difference": cam_err,
            "tensorflow": tf.__version__,
        },
    }


def add_serving_artefacts(version_dir: Path) -> dict[str, Any]:
    """``write_serving_artefacts`` for an exported version; its metadata.json gains them."""
    path = Path(version_dir) / "metadata.json"
    metadata = json.loads(path.read_text())
    metadata["serving"] = write_serving_artefacts(version_dir)
    path.write_text(json.dumps(metadata, indent=2, default=float) + "\n")
    return metadata


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
