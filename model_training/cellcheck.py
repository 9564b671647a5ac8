"""Is this plausibly a stained blood smear? A colour-gamut check learned from training crops.

Stained smears occupy a small part of RGB space (pale background, pink red cells,
violet nuclei). We keep the 16x16x16 colour bins that hold 99.5% of the training crops'
pixels; an image whose crop has too few pixels in those bins (noise, a photo, a
coloured document), or in which no violet nucleus was found (a solid colour, a text
scan), is "not a white blood cell". Numpy only: it runs on every request.
"""

from __future__ import annotations

from typing import Any

import numpy as np

BINS = 16
MASS = 0.995  # share of training pixels the kept bins must cover
SHIFT = 8 - int(np.log2(BINS))


def _bin_index(arr: np.ndarray) -> np.ndarray:
    """Colour bin of every pixel, in uint16 (BINS**3 = 4096 fits): cheaper than int32, and
    this runs on every request."""
    q = arr >> np.uint8(SHIFT)
    index = q[..., 0].astype(np.uint16)
    index *= BINS
    index += q[..., 1]
    index *= BINS
    index += q[..., 2]
    return index


def fit(x: np.ndarray, quantile: float = 0.005) -> dict[str, Any]:
    """Learn the gamut from uint8 crops [N, H, W, 3]; threshold at a low quantile of the
    training crops' own in-gamut fractions, so about 0.5% of training crops would fail."""
    counts = np.zeros(BINS**3, dtype=np.int64)
    for start in range(0, len(x), 512):
        counts += np.bincount(_bin_index(x[start:start + 512]).ravel(), minlength=BINS**3)
    order = np.argsort(counts)[::-1]
    cumulative = np.cumsum(counts[order]) / counts.sum()
    kept = np.sort(order[: int(np.searchsorted(cumulative, MASS)) + 1])
    allowed = np.zeros(BINS**3, dtype=bool)
    allowed[kept] = True
    fractions = np.array([allowed[_bin_index(img)].mean() for img in x[:: max(1, len(x) // 2000)]])
    return {"bins": BINS, "allowed": kept.tolist(),
            "min_fraction": round(float(np.quantile(fractions, quantile)) * 0.95, 4)}


class CellCheck:
    """Applies a fitted gamut; an absent gamut accepts everything that was localised."""

    def __init__(self, params: dict[str, Any] | None) -> None:
        self.allowed: np.ndarray | None = None
        self.min_fraction = 0.0
        if params:
            self.allowed = np.zeros(params["bins"] ** 3, dtype=bool)
            self.allowed[np.asarray(params["allowed"], dtype=np.int64)] = True
            self.min_fraction = float(params["min_fraction"])

    def in_gamut(self, crop: np.ndarray) -> float:
        if self.allowed is None:
            return 1.0
        index = _bin_index(crop)
        return float(np.count_nonzero(np.take(self.allowed, index)) / index.size)

    def is_cell(self, crop: np.ndarray, localised: bool) -> bool:
        return localised and self.in_gamut(crop) >= self.min_fraction
