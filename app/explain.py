"""Grad-CAM: where the network looked for its predicted class.

The Keras model is rebuilt from the arch in the model's metadata and given the
SavedModel's own variables (same order, checked by shape), so no extra artefact is needed.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

OUTPUT_SIDE = 300


def _colormap(heat: np.ndarray) -> np.ndarray:
    """A jet-like colour ramp, heat in [0, 1] -> uint8 RGB."""
    r = np.clip(1.5 - np.abs(4 * heat - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * heat - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * heat - 1), 0, 1)
    return (np.stack([r, g, b], axis=-1) * 255).astype(np.uint8)


class GradCam:
    def __init__(self, version_dir: Path) -> None:
        import keras
        import tensorflow as tf

        from wbc_core.keras_model import load_keras
        from wbc_core.network import members_of

        model = load_keras(version_dir)  # the arch comes from the model's metadata.json
        self._tf = tf
        self.members = []  # each network: its last feature map and its probabilities
        for net in members_of(model):
            conv = [layer for layer in net.layers if len(layer.output.shape) == 4][-1]
            self.members.append(keras.Model(net.inputs, [conv.output, net.output]))
        self._lock = threading.Lock()

    def heatmap(self, array: np.ndarray) -> tuple[np.ndarray, int]:
        """Grad-CAM of the predicted class (the members' mean); an ensemble's map is the mean
        of its networks' maps, each normalised."""
        tf = self._tf
        x = tf.constant(array[None].astype(np.float32))
        with self._lock, tf.GradientTape(persistent=True) as tape:
            outs = [net(x, training=False) for net in self.members]
            best = int(tf.argmax(tf.add_n([probs[0] for _, probs in outs])))
            scores = [probs[:, best] for _, probs in outs]
        cams = []
        for (features, _), score in zip(outs, scores, strict=True):
            grads = tape.gradient(score, features)[0].numpy()
            weights = grads.mean(axis=(0, 1))
            cam = np.maximum((features[0].numpy() * weights).sum(axis=-1), 0)
            cams.append(cam / cam.max() if cam.max() > 0 else cam)
        del tape
        return np.mean(cams, axis=0), best

    def overlay_png(self, array: np.ndarray) -> tuple[bytes, dict[str, Any]]:
        cam, best = self.heatmap(array)
        heat = Image.fromarray((cam * 255).astype(np.uint8)).resize(
            (OUTPUT_SIDE, OUTPUT_SIDE), Image.Resampling.BILINEAR
        )
        colour = Image.fromarray(_colormap(np.asarray(heat) / 255.0))
        base = Image.fromarray(array).resize((OUTPUT_SIDE, OUTPUT_SIDE), Image.Resampling.BILINEAR)
        out = io.BytesIO()
        Image.blend(base, colour, 0.45).save(out, format="PNG")
        return out.getvalue(), {"class_index": best}
