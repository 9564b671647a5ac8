"""The perturbation suite used to judge robustness: shapes, identity, real changes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from model_training.robustness import PERTURBATIONS, perturbed, summarise
from tests.synthetic import field
from wbc_core.preprocessing import IMAGE_SIZE, prepare


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    return [field((320, 240), cells=[(150, 110, 30)]).convert("RGB")] * 2


@pytest.mark.parametrize("name", list(PERTURBATIONS))
def test_perturbation_keeps_shape_and_changes_only_when_meant(
    images: list[Image.Image], name: str
) -> None:
    clean = np.stack([prepare(im, balance="none").array for im in images])
    out = perturbed(images, name, balance="none")
    assert out.shape == clean.shape == (2, IMAGE_SIZE, IMAGE_SIZE, 3) and out.dtype == np.uint8
    if name == "none":
        np.testing.assert_array_equal(out, clean)
    else:
        assert np.abs(out.astype(int) - clean).mean() > 0.5, name


@pytest.mark.parametrize("name", [n for n in PERTURBATIONS if n.startswith("cast")])
def test_white_balance_undoes_colour_casts(images: list[Image.Image], name: str) -> None:
    clean = perturbed(images, "none", balance="white").astype(int)
    cast = perturbed(images, name, balance="white").astype(int)
    unbalanced = perturbed(images, name, balance="none").astype(int)
    assert np.abs(cast - clean).mean() < 0.25 * np.abs(unbalanced - clean).mean(), name


def test_summary_excludes_the_clean_row() -> None:
    results = {"none": {"accuracy": 1.0}, "a": {"accuracy": 0.5}, "b": {"accuracy": 0.7}}
    assert summarise(results) == {"clean": 1.0, "mean_shifted": 0.6, "worst_shifted": 0.5}


@pytest.mark.parametrize("name", [n for n in PERTURBATIONS if n.startswith(("zoom", "scale"))])
def test_zoom_and_scale_keep_a_round_cell_round(name: str) -> None:
    """A round cell stays round, its size scaled by the factor (the first zoom stretched
    the 320x240 field's width and height by different factors)."""
    im = Image.new("RGB", (320, 240), "white")
    ImageDraw.Draw(im).ellipse((140, 100, 180, 140), fill=(255, 0, 0))
    a = np.asarray(PERTURBATIONS[name](im)).astype(int)
    ys, xs = np.nonzero((a[..., 0] > 128) & (a[..., 1] < 100))
    width, height = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
    assert abs(width - height) <= 1, (width, height)
    assert width == pytest.approx(41 * float(name.split("x")[1]), abs=2)
