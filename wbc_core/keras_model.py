"""A Keras model from an exported version folder: the arch (and ensemble size) from its
metadata.json, the weights from its SavedModel. What Grad-CAM needs; imports TensorFlow."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import tensorflow as tf

from wbc_core.network import make_ensemble, make_model


def load_keras(version_dir: Path) -> keras.Model:
    """The Keras model of an exported SavedModel, rebuilt from the arch in its
    ``metadata.json`` (an ensemble of ``members`` of them where it says so) and given the
    SavedModel's own variables (same order, checked by shape): no extra artefact is needed."""
    metadata = json.loads((Path(version_dir) / "metadata.json").read_text())
    arch, members = metadata.get("arch", "wbc"), int(metadata.get("members", 1))
    model = (
        make_ensemble([make_model(arch) for _ in range(members)])
        if members > 1
        else make_model(arch)
    )
    loaded = tf.saved_model.load(str(version_dir))
    if len(model.variables) != len(loaded.variables):
        raise RuntimeError(f"{version_dir}: SavedModel variables do not match the architecture")
    for target, source in zip(model.variables, loaded.variables, strict=True):
        if tuple(target.shape) != tuple(source.shape):
            raise RuntimeError(f"{version_dir}: variable shape mismatch at {target.path}")
        target.assign(source)
    return model
