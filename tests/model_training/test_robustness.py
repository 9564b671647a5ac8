"""The perturbation suite used to judge robustness: shapes, identity, real changes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from model_training import sites
from model_training.robustness import (
    PERTURBATIONS,
    SMALL_FRAME,
    fills_small_frame,
    perturbed,
    site_looks,
    site_split,
    site_table,
    summarise,
)
from model_training.sites import make_split, parse_site, read_split, write_split
from tests.synthetic import field, write_class_tree
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


def test_the_small_frame_is_filled_by_the_cell() -> None:
    """The cell (radius 30 in a 320x240 field) fills the 120 px frame: its violet nucleus
    covers a share of the frame many times the share it covered of the field."""
    im = field((320, 240), cells=[(150, 110, 30)]).convert("RGB")
    small = fills_small_frame(im)
    assert small.size == (SMALL_FRAME, SMALL_FRAME)

    def nucleus_share(image: Image.Image) -> float:
        a = np.asarray(image).astype(int)
        return float((a[..., 2] > a[..., 0] + 50).mean())  # blue well above red: violet

    assert nucleus_share(small) > 0.25
    assert nucleus_share(small) > 8 * nucleus_share(im)


def test_site_looks_change_the_image_except_none() -> None:
    im = field((320, 240), cells=[(150, 110, 30)]).convert("RGB")
    looks = site_looks()
    assert list(looks)[0] == "none" and looks["none"](im) is im
    stain = [n for n in looks if n.startswith("stain")]
    assert len(stain) == 2
    for name in stain:
        out = looks[name](im)
        assert out.size == im.size
        assert np.abs(np.asarray(out).astype(int) - np.asarray(im)).mean() > 5, name


def test_dye_swap_stains_the_nucleus_brown_red_and_keeps_the_background() -> None:
    from model_training.robustness import dye_swap

    a = np.full((60, 80, 3), 220, np.uint8)
    a[20:40, 30:50] = (95, 60, 170)  # the Romanowsky nucleus dye
    out = np.asarray(dye_swap()(Image.fromarray(a))).astype(int)
    assert np.abs(out[:10] - 220).max() <= 1  # slide background as it was
    r, g, b = out[30, 40]
    assert r > g > b and r - b > 60, (r, g, b)  # brown-red, no longer violet


def test_site_table_answers_only_the_test_split(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lower = ("eosinophil", "lymphocyte", "monocyte", "neutrophil")
    root = write_class_tree(tmp_path / "lab", per_class=8, groups=8, seed=3, names=lower)
    write_split(make_split(root, seed=0), tmp_path / "splits" / "lab.csv", seed=0)
    monkeypatch.setattr(sites, "SPLITS_DIR", tmp_path / "splits")
    site = parse_site(f"lab={root}")
    test_files = {k for k, v in read_split(tmp_path / "splits" / "lab.csv").items() if v == "test"}
    cells = site_split(site, "test")
    assert {f"{Path(p).parent.name}/{Path(p).name}" for p in cells.paths} == test_files
    from model_training.export import SavedModelRunner
    from wbc_core.ood import OodStats

    version = tiny_model / "1"
    table = site_table(SavedModelRunner(version), OodStats.load(version), site)
    assert list(table) == list(site_looks())
    for row in table.values():
        assert row["n"] == len(test_files)
        for key in ("accuracy", "review_share", "wrong_and_released_share"):
            assert 0.0 <= row[key] <= 1.0
        # wrong and released cannot exceed what is wrong, nor what is released
        assert row["wrong_and_released_share"] <= 1 - row["accuracy"] + 1e-9
        assert row["wrong_and_released_share"] <= 1 - row["review_share"] + 1e-9


def test_a_network_trained_on_random_convolutions_gets_a_gamut_with_other_hues() -> None:
    """The not-a-cell gamut of a model trained with random convolutions also admits cells
    of another stain's hue; without them the gamut turns such a cell away."""
    from model_training.data import Dataset
    from model_training.postfit import OTHER_STAIN_HUES, add_cell_check
    from wbc_core.cellcheck import CellCheck

    crops = np.stack(
        [prepare(field(cells=[(150, 110, 30)], seed=i), "white").array for i in range(24)]
    )
    train = Dataset(crops, np.zeros(24, dtype=np.int64), np.arange(24).astype(str), [""] * 24)
    turned = np.asarray(PERTURBATIONS["none"](Image.fromarray(crops[0])).convert("HSV")).copy()
    # a turn the gamut was fitted with (real crops' colours are continuous and fill the
    # hues between; these synthetic cells have a few flat colours)
    turned[..., 0] = (turned[..., 0].astype(int) + round(OTHER_STAIN_HUES[-1] * 255)) % 256
    other_stain = np.asarray(Image.fromarray(turned, "HSV").convert("RGB"))
    gamuts = {}
    for randconv in (0.0, 0.5):
        metadata = {"augmentation": {"randconv": randconv}, "stain_jitter": 0.0}
        add_cell_check(metadata, train, {})
        gamuts[randconv] = metadata["cell_check"]
    assert gamuts[0.0]["hues"] == [] and gamuts[0.5]["hues"] == list(OTHER_STAIN_HUES)
    assert CellCheck(gamuts[0.5]).is_cell(crops[1], True)  # the site's own cells still pass
    assert not CellCheck(gamuts[0.0]).is_cell(other_stain, True)
    assert CellCheck(gamuts[0.5]).is_cell(other_stain, True)
