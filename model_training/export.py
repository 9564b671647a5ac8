"""SavedModel export (TensorFlow Serving layout) and loading."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from wbc_core import localise
from wbc_core.preprocessing import IMAGE_SIZE, RESIZE_METHOD

SIGNATURE = "serving_default"
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
FEATURES_NAME = "features"


def features_model(model: keras.Model) -> keras.Model | None:
    """``model`` with its penultimate features as a second output, or None (an ensemble,
    or a network built before the layer was named)."""
    try:
        layer = model.get_layer(FEATURES_NAME)
    except ValueError:
        return None
    return keras.Model(model.inputs, [model.output, layer.output])


def input_contract(balance: str = "white") -> dict[str, Any]:
    """What metadata.json says a model takes (the service prepares images by it): size, range,
    colour, the crop around the cell and the balance the training images had."""
    return {
        "size": [IMAGE_SIZE, IMAGE_SIZE, 3],
        "dtype": "float32",
        "range": [0, 255],
        "color": "RGB",
        "resize_method": RESIZE_METHOD,
        "white_balance": True,
        "stain_balance": balance == "stain",
        "crop_context": localise.CROP_CONTEXT,
    }


def export_savedmodel(model: keras.Model, version_dir: Path, metadata: dict[str, Any]) -> None:
    """Write ``version_dir`` as a SavedModel with a named ``serving_default`` signature,
    plus the CPU serving artefacts (``serving_export``) and ``metadata.json`` beside the
    graph; ``metadata`` gains their record."""
    from model_training.serving_export import write_serving_artefacts

    archive = keras.export.ExportArchive()
    archive.track(model)
    spec = tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32, name=INPUT_NAME)

    both = features_model(model)

    def serve(image: tf.Tensor) -> dict[str, tf.Tensor]:
        if both is None:
            return {OUTPUT_NAME: model(image, training=False)}
        probs, features = both(image, training=False)
        return {OUTPUT_NAME: probs, FEATURES_NAME: features}

    archive.add_endpoint(name=SIGNATURE, fn=serve, input_signature=[spec])
    version_dir.mkdir(parents=True, exist_ok=True)
    archive.write_out(str(version_dir), verbose=False)
    (version_dir / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    metadata["serving"] = write_serving_artefacts(version_dir)
    (version_dir / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")


class SavedModelRunner:
    """Calls a SavedModel's ``serving_default`` on uint8 or float batches."""

    def __init__(self, version_dir: Path) -> None:
        self.loaded = tf.saved_model.load(str(version_dir))
        self.fn = self.loaded.signatures[SIGNATURE]
        self.metadata = json.loads((Path(version_dir) / "metadata.json").read_text())

    def __call__(self, batch: np.ndarray, batch_size: int = 128) -> np.ndarray:
        return self.run(batch, batch_size)[0]

    @property
    def has_features(self) -> bool:
        return FEATURES_NAME in self.fn.structured_outputs

    def run(self, batch: np.ndarray, batch_size: int = 128) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities [N, 4] and, where the model exports them, features [N, D]."""
        probs, feats = [], []
        for start in range(0, len(batch), batch_size):
            chunk = tf.constant(batch[start : start + batch_size], dtype=tf.float32)
            out = self.fn(**{INPUT_NAME: chunk})
            probs.append(out[OUTPUT_NAME].numpy())
            if FEATURES_NAME in out:
                feats.append(out[FEATURES_NAME].numpy())
        if not probs:
            return np.zeros((0, 4), np.float32), None
        return np.concatenate(probs), (np.concatenate(feats) if feats else None)
