"""Connected components of a 2-D mask in NumPy: what the localiser needs of
``scipy.ndimage.label`` (4-connectivity) and ``find_objects``, with the same numbering, so
that serving does not carry SciPy (about 110 MB of the container image) for two calls.

The mask is cut into runs (horizontal stretches of True); runs of neighbouring rows that
share a column are joined; components are numbered in raster order of their first pixel,
as SciPy numbers them. The localiser's masks are about 128 x 96: a few hundred runs.
"""

from __future__ import annotations

import numpy as np


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row, start column and end column (exclusive) of every run, in raster order."""
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), np.int8)
    padded[:, 1:-1] = mask
    step = np.diff(padded, axis=1)
    rows, starts = np.nonzero(step == 1)
    _, ends = np.nonzero(step == -1)
    return rows, starts, ends


def _roots(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For ``n`` nodes joined by edges ``a``-``b``: each node's smallest connected node."""
    root = np.arange(n)
    while True:
        low = np.minimum(root[a], root[b])
        new = root.copy()
        np.minimum.at(new, a, low)
        np.minimum.at(new, b, low)
        new = new[new]  # jump to the root's root: chains collapse in few rounds
        if np.array_equal(new, root):
            return root
        root = new


def label(mask: np.ndarray) -> tuple[np.ndarray, int, list[tuple[slice, slice]]]:
    """``scipy.ndimage.label(mask)`` (4-connectivity): int32 labels 1..count (0 outside)
    and the count, plus ``find_objects``' (rows, cols) slices of each label."""
    mask = np.asarray(mask, dtype=bool)
    height, width = mask.shape
    labels = np.zeros(mask.shape, np.int32)
    rows, starts, ends = _runs(mask)
    n = len(rows)
    if n == 0:
        return labels, 0, []
    # the runs of the next row that overlap run i: start < end_i and end > start_i; runs of
    # a row are sorted and disjoint, so they are one range of indices [lo, hi)
    stride = width + 1
    lo = np.searchsorted(rows * stride + ends, (rows + 1) * stride + starts, side="right")
    hi = np.searchsorted(rows * stride + starts, (rows + 1) * stride + ends, side="left")
    a, b = _expand(lo, np.maximum(hi - lo, 0))
    root = _roots(n, a, b) if len(a) else np.arange(n)
    firsts = np.unique(root)  # a component's root is its first run: raster order
    number = np.zeros(n, np.int32)
    number[firsts] = np.arange(1, len(firsts) + 1, dtype=np.int32)
    run_label = number[root]
    _, pixels = _expand(rows * width + starts, ends - starts)
    labels.ravel()[pixels] = np.repeat(run_label, ends - starts)
    count = len(firsts)
    index = run_label - 1
    y0 = np.full(count, height)
    y1 = np.zeros(count, np.int64)
    x0 = np.full(count, width)
    x1 = np.zeros(count, np.int64)
    np.minimum.at(y0, index, rows)
    np.maximum.at(y1, index, rows + 1)
    np.minimum.at(x0, index, starts)
    np.maximum.at(x1, index, ends)
    objects = [
        (slice(int(r0), int(r1)), slice(int(c0), int(c1)))
        for r0, r1, c0, c1 in zip(y0, y1, x0, x1, strict=True)
    ]
    return labels, count, objects


def _expand(first: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each i, ``counts[i]`` consecutive integers from ``first[i]``: (i repeated,
    the integers), flattened."""
    owner = np.repeat(np.arange(len(counts)), counts)
    offset = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    return owner, np.repeat(first, counts) + offset
