"""The perturbation suite used to judge robustness: shapes, identity, real changes."""

from __future__ import annotations

import numpy as np
import pytest

from model_training.robustness import PERTURBATIONS, perturbed, summarise
from tests.synthetic import field


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    return np.stack([np.asarray(field((150, 150), cells=[(75, 75, 30)]).convert("RGB"))] * 2)


@pytest.mark.parametrize("name", list(PERTURBATIONS))
def test_perturbation_keeps_shape_and_changes_only_when_meant(crops: np.ndarray,
                                                              name: str) -> None:
    out = perturbed(crops, name)
    assert out.shape == crops.shape and out.dtype == np.uint8
    if name == "none":
        np.testing.assert_array_equal(out, crops)
    else:
        assert np.abs(out.astype(int) - crops).mean() > 0.5, name


def test_summary_excludes_the_clean_row() -> None:
    results = {"none": {"accuracy": 1.0}, "a": {"accuracy": 0.5}, "b": {"accuracy": 0.7}}
    assert summarise(results) == {"clean": 1.0, "mean_shifted": 0.6, "worst_shifted": 0.5}
