"""White balance: the slide background becomes the same grey whatever the cast."""

from __future__ import annotations

import numpy as np
from PIL import Image

from tests.synthetic import BACKGROUND, field
from wbc_core.preprocessing import BACKGROUND_LEVEL, GAIN_LIMITS, white_balance

IMAGE = field((320, 240), cells=[(160, 120, 30)]).convert("RGB")
SLIDE = np.abs(np.asarray(IMAGE, dtype=float) - BACKGROUND).max(axis=2) < 12  # no cell there


def background(image: Image.Image) -> np.ndarray:
    """Mean colour of the field's background pixels."""
    return np.asarray(image, dtype=float)[SLIDE].mean(axis=0)


def test_a_colour_cast_and_a_dim_lamp_are_undone() -> None:
    image = IMAGE
    for gains in [(1.0, 0.95, 0.8), (0.85, 0.95, 1.0), (0.7, 0.7, 0.7)]:
        cast = Image.fromarray(np.clip(np.asarray(image, float) * gains, 0, 255).astype(np.uint8))
        assert np.ptp(background(cast)) > 5 or gains[0] == 0.7
        balanced = background(white_balance(cast))
        np.testing.assert_allclose(balanced, BACKGROUND_LEVEL, atol=4)
        np.testing.assert_allclose(balanced, background(white_balance(image)), atol=3)


def test_the_cell_keeps_its_colours_relative_to_the_background() -> None:
    """Balance scales channels; it does not flatten the stain: the nucleus stays violet."""
    rgb = np.asarray(white_balance(IMAGE), dtype=int)
    nucleus = rgb[120, 160]
    assert nucleus[2] - nucleus[1] > 40


def test_gains_are_bounded_on_an_image_without_background() -> None:
    """A solid colour (no slide background to judge by) is not blown up beyond the limits."""
    solid = Image.new("RGB", (64, 64), (200, 40, 90))
    out = np.asarray(white_balance(solid), dtype=float)[0, 0]
    gains = out / np.array([200, 40, 90])
    assert np.all(gains >= GAIN_LIMITS[0] - 0.02) and np.all(gains <= GAIN_LIMITS[1] + 0.02)


def test_every_image_size_and_a_single_pixel() -> None:
    for size in [(1, 1), (3, 500), (4000, 3000)]:
        image = Image.new("RGB", size, (180, 190, 200))
        assert white_balance(image).size == size
