"""Stain balance: the red cells around the white cell take the reference stain's optical
density, so a stronger or paler stain (or another camera gamma) reaches the network as the
reference would have left it; the white cell itself does not set the balance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from model_training.data import load_folder
from tests.synthetic import BACKGROUND, CYTOPLASM, NUCLEUS, field
from wbc_core.localise import working_copy
from wbc_core.preprocessing import (
    BACKGROUND_LEVEL,
    STAIN_GAIN_LIMITS,
    STAIN_REFERENCE_OD,
    apply_balance,
    balance_of,
    balance_table,
    locate,
    measure,
    prepare,
    stain_reference,
    surroundings_od,
    white_balance,
)


def stained(image: Image.Image, gains: tuple[float, float, float]) -> Image.Image:
    """``image`` (white-balanced) as a stain ``gains`` times as dense per channel would
    have left it: optical density ``ln(L / v)`` scaled, the background kept."""
    ratio = np.asarray(image, dtype=float) / BACKGROUND_LEVEL
    out = BACKGROUND_LEVEL * np.power(ratio, np.asarray(gains))
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))


def red_cell_od(image: Image.Image) -> np.ndarray:
    """Median optical density of the stained pixels of a white-balanced field."""
    rgb = np.asarray(image, dtype=float)
    od = np.log(BACKGROUND_LEVEL / np.maximum(rgb, 1.0))
    return np.median(od[od.sum(axis=2) > 0.3], axis=0)


SYNTHETIC = white_balance(field((320, 240), cells=[]))
# a white-balanced field whose red cells have the reference stain's density
FIELD = stained(
    white_balance(field((320, 240), cells=[(160, 120, 30)])),
    tuple(np.asarray(STAIN_REFERENCE_OD) / red_cell_od(SYNTHETIC)),
)


@pytest.mark.parametrize("gains", [(1.4, 1.3, 1.2), (0.7, 0.75, 0.8), (1.2, 0.8, 1.0)])
def test_a_denser_paler_or_other_hue_stain_is_taken_back(gains: tuple[float, ...]) -> None:
    clean = prepare(FIELD, "stain").array.astype(int)
    other = stained(FIELD, gains)
    balanced = prepare(other, "stain").array.astype(int)
    white_only = prepare(other, "white").array.astype(int)
    assert np.abs(white_only - clean).mean() > 2
    assert np.abs(balanced - clean).mean() < 0.2 * np.abs(white_only - clean).mean()


def test_the_surroundings_reach_the_reference_density() -> None:
    """Whatever the field's own red cells, after the balance the stained pixels around the
    cell (as measured, on the localiser's working copy) have the reference's density."""
    image = stained(FIELD, (1.3, 0.8, 1.1))
    small, scale = working_copy(image)
    pixels = apply_balance(np.asarray(small), balance_table(small))
    box, table = locate(image, "stain")
    before = surroundings_od(pixels, box, scale)
    assert not np.allclose(before, STAIN_REFERENCE_OD, atol=0.03)
    after = surroundings_od(apply_balance(np.asarray(small), table), box, scale)
    np.testing.assert_allclose(after, STAIN_REFERENCE_OD, atol=0.012)


def surroundings(image: Image.Image) -> np.ndarray:
    return measure(image, "stain")[2]


def test_the_white_cell_does_not_set_the_balance() -> None:
    """Red granules in the white cell leave the measured stain alone (an eosinophil's
    colour is not balanced away as if it were the stain); the same red outside the cell's
    box moves it."""

    def painted(centres: list[tuple[int, int]]) -> Image.Image:
        out = FIELD.copy()
        for x, y in centres:
            ImageDraw.Draw(out).ellipse((x - 2, y - 2, x + 2, y + 2), fill=(210, 90, 90))
        return out

    granular = painted([(160 + dx, 120 + dy) for dx in (-20, 20) for dy in (-20, 20)])
    assert locate(granular, "stain")[0] == locate(FIELD, "stain")[0]
    np.testing.assert_allclose(surroundings(granular), surroundings(FIELD), atol=0.002)
    outside = painted([(x, y) for x in range(10, 110, 8) for y in range(10, 230, 8)])
    assert np.abs(surroundings(outside) - surroundings(FIELD)).max() > 0.02


def test_black_borders_are_not_stain() -> None:
    """Kaggle's rotated views have black corners, and a lower magnification pads the field
    with black: neither is red cells, and neither moves the measured stain."""
    framed = np.asarray(FIELD).copy()
    framed[:, :40] = 0
    framed[:30] = 3
    assert locate(Image.fromarray(framed), "stain")[0] == locate(FIELD, "stain")[0]
    np.testing.assert_allclose(
        surroundings(Image.fromarray(framed)), surroundings(FIELD), atol=0.03
    )


def test_without_surroundings_only_the_white_balance_applies() -> None:
    """No red cells to judge the stain by: a white cell alone on the slide, and an image
    where no cell is found (all violet: nothing tells the cell from its surroundings)."""
    alone = Image.new("RGB", (320, 240), BACKGROUND)
    ImageDraw.Draw(alone).ellipse((130, 90, 190, 150), fill=CYTOPLASM)
    ImageDraw.Draw(alone).ellipse((142, 102, 178, 138), fill=NUCLEUS)
    violet = Image.new("RGB", (120, 120), BACKGROUND)
    ImageDraw.Draw(violet).ellipse((5, 5, 115, 115), fill=NUCLEUS)
    assert locate(alone, "stain")[0].localised and not locate(violet, "stain")[0].localised
    for image in (alone, violet):
        np.testing.assert_array_equal(locate(image, "stain")[1], locate(image, "white")[1])


def test_the_correction_is_bounded() -> None:
    """A field of red cells 2.5 times as dense is not lightened beyond the limits."""
    dense = stained(FIELD, (2.5, 2.5, 2.5))
    table = locate(dense, "stain")[1].astype(float)
    white = locate(dense, "white")[1].astype(float)
    v = np.arange(60, 200)
    gains = np.log(table[:, v] / BACKGROUND_LEVEL) / np.log(white[:, v] / BACKGROUND_LEVEL)
    assert np.all(gains >= STAIN_GAIN_LIMITS[0] - 0.05)
    assert np.all(gains <= STAIN_GAIN_LIMITS[0] + 0.05)  # the dense stain hits the limit


def test_balance_of_reads_the_model_metadata() -> None:
    assert balance_of({}) == "none"
    assert balance_of({"input": {"white_balance": True}}) == "white"
    assert balance_of({"input": {"white_balance": True, "stain_balance": False}}) == "white"
    assert balance_of({"input": {"white_balance": True, "stain_balance": True}}) == "stain"
    with pytest.raises(ValueError, match="balance must be one of"):
        locate(FIELD, "grey")
    with pytest.raises(ValueError, match="balance must be one of"):
        load_folder(Path("no-such-folder"), balance="grey")


def test_the_reference_is_the_median_of_the_images(tmp_path: Path) -> None:
    paths = []
    for i, gains in enumerate([(0.8, 0.8, 0.8), (1.0, 1.0, 1.0), (1.3, 1.3, 1.3)]):
        paths.append(tmp_path / f"{i}.png")
        stained(FIELD, gains).save(paths[-1])
    reference, counted = stain_reference(paths)
    assert counted == 3
    _, middle = stain_reference(paths[1:2])
    assert middle == 1
    np.testing.assert_allclose(reference, stain_reference(paths[1:2])[0], atol=1e-6)
