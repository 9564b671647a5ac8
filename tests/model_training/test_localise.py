"""The localiser on synthetic fields with violet cells at known places."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image, ImageDraw
from scipy import ndimage

from tests.synthetic import BACKGROUND, CYTOPLASM, NUCLEUS, RED_CELL, field
from wbc_core.localise import (
    close,
    find_cell,
    find_cells,
    nuclei,
    nucleus_threshold,
    percentile,
    square_crop,
    violet_score,
)
from wbc_core.preprocessing import (
    IMAGE_SIZE,
    locate_cells,
    prepare,
    prepare_cells,
    preprocess_bytes,
    preprocess_cells,
)


def _inside(box, x: int, y: int) -> bool:
    return box.x0 <= x <= box.x1 and box.y0 <= y <= box.y1


@pytest.mark.parametrize(
    "cx,cy", [(160, 120), (30, 30), (290, 30), (30, 210), (290, 210), (160, 12), (5, 120)]
)
def test_finds_cell_at_known_places(cx: int, cy: int) -> None:
    box = find_cell(field(cells=[(cx, cy, 26)], seed=cx + cy))
    assert box.localised
    assert _inside(box, cx, cy)
    # the box covers the whole cell (radius 26) but not much more, clipped to the image
    assert box.x0 <= max(2, cx - 20) and box.x1 >= min(318, cx + 20)
    assert box.x1 - box.x0 <= 2.2 * 26 + 10
    assert 0 <= box.x0 < box.x1 <= 320 and 0 <= box.y0 < box.y1 <= 240


def test_two_cells_picks_the_larger() -> None:
    box = find_cell(field(cells=[(70, 70, 16), (230, 160, 32)]))
    assert _inside(box, 230, 160)
    assert not _inside(box, 70, 70)


def test_finds_every_white_cell_of_a_field_the_most_prominent_first() -> None:
    image = field(size=(480, 320), cells=[(100, 100, 26), (360, 220, 30)], seed=3)
    cells = find_cells(image)
    assert len(cells) == 2 and all(c.localised for c in cells)
    assert _inside(cells[0], 360, 220) and _inside(cells[1], 100, 100)  # larger nucleus first
    assert cells[0] == find_cell(image)
    # as served (white-balanced working copy): prepare crops the first and names the
    # other; prepare_cells crops both
    boxes, _ = locate_cells(image)
    assert len(boxes) == 2
    one = prepare(image)
    assert one.box == boxes[0] and one.others == (boxes[1],)
    both = prepare_cells(image)
    assert [p.box for p in both] == boxes
    np.testing.assert_array_equal(both[0].array, one.array)
    assert not np.array_equal(both[1].array, one.array)
    # the serving entry point from upload bytes gives the same crops
    buf = io.BytesIO()
    image.save(buf, "PNG")
    served = preprocess_cells(buf.getvalue())
    assert [p.box for p in served] == boxes
    np.testing.assert_array_equal(served[1].array, both[1].array)
    np.testing.assert_array_equal(served[0].array, preprocess_bytes(buf.getvalue()).array)


def test_a_small_violet_spot_or_a_loose_lobe_is_not_another_cell() -> None:
    # a nucleus of a third of the first's radius: under a tenth of its mass (a platelet clump)
    assert len(find_cells(field(cells=[(100, 100, 30), (300, 160, 10)]))) == 1
    # a four-lobed neutrophil whose lobes stay apart: their centres lie inside its box
    lobed = field(cells=[(160, 120, 34)], lobes=4, seed=5)
    assert len(find_cells(lobed)) == 1
    assert len(find_cells(Image.new("RGB", (320, 240), BACKGROUND))) == 1  # the whole image


def test_cell_filling_the_frame_keeps_nearly_whole_image() -> None:
    image = field(size=(120, 120), cells=[(60, 60, 58)])
    box = find_cell(image)
    assert box.localised
    x0, y0, x1, y1 = square_crop(box, *image.size)
    assert (x1 - x0) >= 0.9 * 120


@pytest.mark.parametrize("shift", [0.3, 0.35, 0.5])
def test_a_nucleus_stained_in_another_hue_is_found_by_its_darkness(shift: float) -> None:
    """A stain that leaves the nucleus brown-red or yellow: no violet component at all, and
    the darkness fallback finds the cell where the violet nucleus would have been."""
    from model_training.robustness import hue_turn

    cx, cy = 200, 90
    image = hue_turn(shift)(field(cells=[(cx, cy, 26)], seed=3))
    score = violet_score(np.asarray(image))
    assert nuclei(score, nucleus_threshold(percentile(score, 99.9)), 1.0, 320, 240) == []
    box = find_cell(image)
    assert box.localised and _inside(box, cx, cy)
    assert box.x1 - box.x0 <= 2.2 * 26 + 10


@pytest.mark.parametrize("stain", ["hue +0.3", "dyes swapped"])
def test_a_brown_red_cell_filling_its_frame_is_found_by_its_darkness(stain: str) -> None:
    """A cell that fills a small frame in a brown-red stain: the stained pixels are mostly
    the cell itself, so the nucleus is measured against the stained pixels outside it
    (cytoplasm, a red cell), not against all of them."""
    from model_training.robustness import dye_swap, hue_turn

    look = hue_turn(0.3) if stain == "hue +0.3" else dye_swap()
    # a lymphocyte: its round nucleus most of the cell, the cell most of the frame
    image = Image.new("RGB", (120, 120), BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.ellipse((-8, -8, 22, 22), fill=RED_CELL)
    draw.ellipse((4, 4, 116, 116), fill=CYTOPLASM)
    draw.ellipse((16, 16, 104, 104), fill=NUCLEUS)
    noise = np.random.default_rng(4).normal(0, 3, (120, 120, 3))
    image = look(Image.fromarray(np.clip(np.asarray(image) + noise, 0, 255).astype(np.uint8)))
    score = violet_score(np.asarray(image))
    assert nuclei(score, nucleus_threshold(percentile(score, 99.9)), 1.0, 120, 120) == []
    box = find_cell(image)
    assert box.localised and _inside(box, 60, 60)


@pytest.mark.parametrize("shift", [0.0, 0.3])
def test_a_field_of_red_cells_alone_is_not_a_white_cell(shift: float) -> None:
    """Red cells are darker than the background but not than a nucleus: the darkness
    fallback does not take one for a white cell, in the usual stain or another."""
    from model_training.robustness import hue_turn

    image = hue_turn(shift)(field(cells=[], seed=8))
    assert not find_cell(image).localised


@pytest.mark.parametrize("width", [3, 6])
def test_ruled_lines_or_a_violet_band_are_not_a_nucleus(width: int) -> None:
    """A straight-edged component (ruled lines closed into a block, a band of violet ink)
    fills its box as no nucleus does (MAX_BOX_FILL): no cell, whether it is the violet
    search or the darkness fallback that meets it; a round nucleus of the same colour is
    still found."""
    page = Image.new("RGB", (300, 400), (245, 243, 236))
    draw = ImageDraw.Draw(page)
    for row in range(20):
        draw.line((20, 20 + 18 * row, 280, 20 + 18 * row), fill=(30, 30, 120), width=width)
    assert not find_cell(page).localised
    band = Image.new("RGB", (320, 240), BACKGROUND)
    ImageDraw.Draw(band).rectangle((40, 100, 280, 130), fill=NUCLEUS)
    assert not find_cell(band).localised
    round_one = Image.new("RGB", (320, 240), BACKGROUND)
    ImageDraw.Draw(round_one).ellipse((130, 90, 190, 150), fill=NUCLEUS)
    assert find_cell(round_one).localised


def test_plain_background_falls_back_to_whole_image() -> None:
    image = Image.new("RGB", (320, 240), BACKGROUND)
    box = find_cell(image)
    assert not box.localised
    assert box.as_list() == [0, 0, 320, 240]
    assert square_crop(box, 320, 240) == (0, 0, 320, 240)
    prepared = prepare(image)
    assert prepared.array.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    assert not prepared.box.localised


def test_crop_is_square_and_inside_image() -> None:
    image = field(cells=[(300, 225, 24)])
    x0, y0, x1, y1 = square_crop(find_cell(image), *image.size)
    assert x1 - x0 == y1 - y0
    assert 0 <= x0 and 0 <= y0 and x1 <= 320 and y1 <= 240


def test_prepared_crop_is_centred_on_the_cell() -> None:
    prepared = prepare(field(cells=[(60, 180, 26)]))
    arr = prepared.array.astype(int)
    violet = (arr[..., 2] - arr[..., 1]) > 60
    ys, xs = np.nonzero(violet)
    assert abs(xs.mean() - IMAGE_SIZE / 2) < IMAGE_SIZE * 0.15
    assert abs(ys.mean() - IMAGE_SIZE / 2) < IMAGE_SIZE * 0.15


@settings(max_examples=300, deadline=None)
@given(
    mask=hnp.arrays(bool, hnp.array_shapes(min_dims=2, max_dims=2, max_side=40)),
    iterations=st.integers(1, 3),
)
def test_fast_closing_equals_scipy(mask: np.ndarray, iterations: int) -> None:
    """The numpy closing on the request path is scipy's binary closing, bit for bit."""
    expected = ndimage.binary_closing(
        mask, structure=np.ones((3, 3), dtype=bool), iterations=iterations
    )
    np.testing.assert_array_equal(close(mask, iterations), expected)


@settings(max_examples=300, deadline=None)
@given(
    values=hnp.arrays(
        np.int16,
        hnp.array_shapes(min_dims=1, max_dims=2, max_side=300),
        elements=st.integers(-255, 255),
    ),
    q=st.sampled_from([0.0, 50.0, 99.0, 99.9, 100.0]),
)
def test_fast_percentile_equals_numpy(values: np.ndarray, q: float) -> None:
    assert percentile(values, q) == float(np.percentile(values, q))


def test_nucleus_threshold_follows_a_paler_stain_and_keeps_the_usual_one() -> None:
    from wbc_core import localise
    from wbc_core.localise import nucleus_threshold

    ref, floor = localise.STAIN_REF, localise.SCORE_FLOOR
    for top in (ref, 133.0, 180.0, 255.0):  # the usual stain: the threshold as it always was
        assert nucleus_threshold(top) == max(localise.SCORE_MIN, localise.SCORE_REL * top)
    for top in (60.0, 80.0, 99.0):  # paler: the threshold shrinks with the score, in step
        assert nucleus_threshold(top) == pytest.approx(localise.SCORE_MIN * top / ref)
        assert nucleus_threshold(0.6 * top) == pytest.approx(
            max(0.6 * nucleus_threshold(top), floor)
        )
    assert nucleus_threshold(5.0) == floor  # no stain to speak of: nothing is nucleus
    tops = np.linspace(0, 255, 512)
    assert np.all(np.diff([nucleus_threshold(t) for t in tops]) >= 0)  # never drops
