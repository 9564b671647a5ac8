"""Grad-CAM in NumPy: where the network looked for its predicted class.

Every network here ends in global average pooling of its last feature map, a dense layer
and a softmax, so the gradient of a class probability with respect to that feature map is
the same at every position and has a closed form: with p = softmax(mean(A) @ W + b),

    d p_c / d A[i, j, k] = p_c * (W[k, c] - sum_m W[k, m] p_m) / (H * W_).

Grad-CAM weights each channel by the spatial mean of that gradient, sums and keeps the
positive part; the positive factor p_c / (H * W_) vanishes when the map is normalised to
its maximum. So the serving runtime needs only the last feature map (an output of the
exported TFLite model) and the dense layer's kernel and bias (``gradcam.npz``): no
automatic differentiation, no TensorFlow. ``model_training.serving_export`` checks this
against TensorFlow's GradientTape when it writes the files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FILENAME = "gradcam.npz"


def save_heads(version_dir: Path, heads: list[tuple[np.ndarray, np.ndarray]]) -> Path:
    """Write each network's dense kernel [D, classes] and bias [classes]."""
    path = Path(version_dir) / FILENAME
    arrays = {}
    for j, (kernel, bias) in enumerate(heads):
        arrays[f"kernel_{j}"] = np.asarray(kernel, np.float32)
        arrays[f"bias_{j}"] = np.asarray(bias, np.float32)
    with path.open("wb") as f:
        np.savez(f, **arrays)
    return path


def load_heads(version_dir: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    with np.load(Path(version_dir) / FILENAME) as data:
        n = sum(1 for k in data.files if k.startswith("kernel_"))
        return [(data[f"kernel_{j}"], data[f"bias_{j}"]) for j in range(n)]


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max())
    return e / e.sum()


def heatmap(
    feature_maps: list[np.ndarray], heads: list[tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, int]:
    """Grad-CAM of the predicted class (the class of the networks' mean probabilities).

    ``feature_maps``: each network's last feature map [H, W, D] for one image. Returns the
    map in [0, 1] (an ensemble's: the mean of its networks' maps, each normalised) and the
    predicted class index."""
    probs = [
        _softmax(fmap.astype(np.float64).mean(axis=(0, 1)) @ k + b)
        for fmap, (k, b) in zip(feature_maps, heads, strict=True)
    ]
    best = int(np.argmax(np.mean(probs, axis=0)))
    cams = []
    for fmap, (kernel, _), p in zip(feature_maps, heads, probs, strict=True):
        weights = kernel[:, best] - kernel @ p  # per channel, up to a positive factor
        cam = np.maximum(np.tensordot(fmap.astype(np.float64), weights, axes=([2], [0])), 0)
        cams.append(cam / cam.max() if cam.max() > 0 else cam)
    return np.mean(cams, axis=0), best
