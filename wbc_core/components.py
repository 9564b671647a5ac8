"""Connected components of a 2-D mask in NumPy: what the localiser needs of
``scipy.ndimage.label`` (4-connectivity) and ``find_objects``, with the same numbering, so
that serving does not carry SciPy (about 110 MB of the container image) for two calls.

The mask is cut into runs (horizontal stretches of True); runs of neighbouring rows that
share a column are joined; components are numbered in raster order of their first pixel,
as SciPy numbers them. The localiser's masks are about 128 x 96: a few hundred runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row, start column and end column (exclusive) of every run, in raster order: with a
    False column either side of each row, the changes along the flattened mask alternate
    start, end, start, end."""
    height, width = mask.shape
    padded = np.zeros((height, width + 2), bool)
    padded[:, 1:-1] = mask
    flat = padded.ravel()
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts, ends = change[0::2], change[1::2]
    rows = starts // (width + 2)
    return rows, starts - rows * (width + 2) - 1, ends - rows * (width + 2) - 1


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


@dataclass(frozen=True)
class Components:
    """The runs of a mask, each with its component's label (1..count), and each
    component's (rows, cols) slices, as ``find_objects`` gives them."""

    rows: np.ndarray
    starts: np.ndarray
    ends: np.ndarray  # exclusive
    run_label: np.ndarray
    count: int
    objects: list[tuple[slice, slice]]

    def sums(self, values: np.ndarray) -> np.ndarray:
        """The sum of ``values`` (same shape as the mask) over each component, [count + 1]
        (index 0: nothing), summed run by run: no label image is needed."""
        width = values.shape[1]
        bounds = np.empty(2 * len(self.rows), np.int64)
        bounds[0::2] = self.rows * width + self.starts
        bounds[1::2] = self.rows * width + self.ends
        flat = np.append(values.ravel().astype(np.float64), 0.0)  # an end may be the last
        per_run = np.add.reduceat(flat, bounds)[0::2]
        return np.bincount(self.run_label, weights=per_run, minlength=self.count + 1)

    def pixels(self, label: int, width: int) -> np.ndarray:
        """The flat indices (row * ``width`` + column) of component ``label``'s pixels."""
        run = self.run_label == label
        first = self.rows[run] * width + self.starts[run]
        return _expand(first, self.ends[run] - self.starts[run])[1]

    def areas(self) -> np.ndarray:
        """Pixels of each component, [count + 1] (index 0: nothing)."""
        return np.bincount(
            self.run_label, weights=self.ends - self.starts, minlength=self.count + 1
        ).astype(np.int64)


def find(mask: np.ndarray) -> Components:
    """The 4-connected components of ``mask``, numbered as ``scipy.ndimage.label`` numbers
    them."""
    mask = np.asarray(mask, dtype=bool)
    height, width = mask.shape
    rows, starts, ends = _runs(mask)
    n = len(rows)
    if n == 0:
        return Components(rows, starts, ends, np.zeros(0, np.int64), 0, [])
    # the runs of the next row that overlap run i: start < end_i and end > start_i; runs of
    # a row are sorted and disjoint, so they are one range of indices [lo, hi)
    stride = width + 1
    lo = np.searchsorted(rows * stride + ends, (rows + 1) * stride + starts, side="right")
    hi = np.searchsorted(rows * stride + starts, (rows + 1) * stride + ends, side="left")
    a, b = _expand(lo, np.maximum(hi - lo, 0))
    root = _roots(n, a, b) if len(a) else np.arange(n)
    firsts = np.unique(root)  # a component's root is its first run: raster order
    number = np.zeros(n, np.int64)
    number[firsts] = np.arange(1, len(firsts) + 1)
    run_label = number[root]
    count = len(firsts)
    index = run_label - 1
    y1 = np.zeros(count, np.int64)
    x0 = np.full(count, width)
    x1 = np.zeros(count, np.int64)
    np.maximum.at(y1, index, rows + 1)
    np.minimum.at(x0, index, starts)
    np.maximum.at(x1, index, ends)
    y0 = rows[firsts]  # the first run is on the component's first row
    objects = [
        (slice(int(r0), int(r1)), slice(int(c0), int(c1)))
        for r0, r1, c0, c1 in zip(y0, y1, x0, x1, strict=True)
    ]
    return Components(rows, starts, ends, run_label, count, objects)


def label(mask: np.ndarray) -> tuple[np.ndarray, int, list[tuple[slice, slice]]]:
    """``scipy.ndimage.label(mask)`` (4-connectivity): int32 labels 1..count (0 outside)
    and the count, plus ``find_objects``' (rows, cols) slices of each label."""
    found = find(mask)
    labels = np.zeros(np.shape(mask), np.int32)
    _, pixels = _expand(found.rows * labels.shape[1] + found.starts, found.ends - found.starts)
    labels.ravel()[pixels] = np.repeat(found.run_label, found.ends - found.starts)
    return labels, found.count, found.objects


def _expand(first: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each i, ``counts[i]`` consecutive integers from ``first[i]``: (i repeated,
    the integers), flattened."""
    owner = np.repeat(np.arange(len(counts)), counts)
    offset = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    return owner, np.repeat(first, counts) + offset
