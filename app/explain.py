"""The Grad-CAM overlay /explain returns: the predictor's map (``Predictor.gradcam``) in a
colour ramp, blended over the network's input."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from app.predictor import Predictor

OUTPUT_SIDE = 300


def _colormap(heat: np.ndarray) -> np.ndarray:
    """A jet-like colour ramp, heat in [0, 1] -> uint8 RGB."""
    r = np.clip(1.5 - np.abs(4 * heat - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * heat - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * heat - 1), 0, 1)
    return (np.stack([r, g, b], axis=-1) * 255).astype(np.uint8)


def overlay_png(predictor: Predictor, array: np.ndarray) -> tuple[bytes, dict[str, Any]]:
    cam, best = predictor.gradcam(array)
    heat = Image.fromarray((cam * 255).astype(np.uint8)).resize(
        (OUTPUT_SIDE, OUTPUT_SIDE), Image.Resampling.BILINEAR
    )
    colour = Image.fromarray(_colormap(np.asarray(heat) / 255.0))
    base = Image.fromarray(array).resize((OUTPUT_SIDE, OUTPUT_SIDE), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    Image.blend(base, colour, 0.45).save(out, format="PNG")
    return out.getvalue(), {"class_index": best}
