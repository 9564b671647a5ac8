"""The localiser's connected components (NumPy) equal SciPy's, numbering included."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from wbc_core.components import label

FOUR = ndimage.generate_binary_structure(2, 1)


@pytest.mark.parametrize("seed", range(4))
def test_labels_and_boxes_equal_scipys(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for t in range(400):
        h, w = rng.integers(1, 48, 2)
        mask = rng.random((h, w)) < rng.uniform(0.05, 0.95)
        if t % 2:
            mask = ndimage.binary_closing(mask)  # blobs, as the localiser's masks are
        expected, count = ndimage.label(mask, structure=FOUR)
        labels, n, objects = label(mask)
        assert n == count
        np.testing.assert_array_equal(labels, expected)
        assert objects == ndimage.find_objects(expected)


def test_empty_and_full_masks() -> None:
    labels, n, objects = label(np.zeros((5, 7), bool))
    assert n == 0 and objects == [] and not labels.any()
    labels, n, objects = label(np.ones((5, 7), bool))
    assert n == 1 and objects == [(slice(0, 5), slice(0, 7))] and (labels == 1).all()


def test_a_spiral_is_one_component() -> None:
    """A long winding component: joined through many rows and back."""
    mask = np.zeros((21, 21), bool)
    top, left, bottom, right = 0, 0, 20, 20
    while top <= bottom and left <= right:
        mask[top, left : right + 1] = True
        mask[top : bottom + 1, right] = True
        mask[bottom, left : right + 1] = True
        mask[top + 2 : bottom + 1, left] = True
        if top + 2 <= bottom:
            mask[top + 2, left : right - 1] = True
        top, left, bottom, right = top + 4, left + 2, bottom - 2, right - 2
    expected, count = ndimage.label(mask, structure=FOUR)
    labels, n, _ = label(mask)
    assert n == count
    np.testing.assert_array_equal(labels, expected)


def test_sums_and_areas_equal_the_label_images() -> None:
    """What the localiser reads per component (score mass, area) without a label image."""
    from wbc_core.components import find

    rng = np.random.default_rng(7)
    for _ in range(200):
        h, w = rng.integers(1, 40, 2)
        mask = ndimage.binary_closing(rng.random((h, w)) < 0.5)
        values = rng.uniform(0, 100, (h, w))
        expected, count = ndimage.label(mask, structure=FOUR)
        found = find(mask)
        np.testing.assert_allclose(
            found.sums(values),
            np.bincount(expected.ravel(), weights=values.ravel(), minlength=count + 1)
            * (np.arange(count + 1) > 0),
            rtol=1e-12,
        )
        np.testing.assert_array_equal(
            found.areas()[1:], np.bincount(expected.ravel(), minlength=count + 1)[1:]
        )
