"""Table I metrics, temperature scaling, ECE, review threshold, not-a-cell gamut."""

from __future__ import annotations

import numpy as np
import pytest

from model_training import metrics
from wbc_core import cellcheck


def test_classification_report_matches_hand_counts() -> None:
    y = np.array([0, 0, 1, 1, 2, 3])
    probs = np.eye(4)[[0, 1, 1, 1, 2, 0]]
    r = metrics.classification_report(y, probs)
    assert r["accuracy"] == pytest.approx(4 / 6)
    assert r["per_class"]["eosinophil"]["precision"] == pytest.approx(0.5)
    assert r["per_class"]["eosinophil"]["recall"] == pytest.approx(0.5)
    assert r["per_class"]["neutrophil"]["f1"] == 0.0
    assert r["confusion_matrix"][3][0] == 1


def test_temperature_recovers_overconfidence() -> None:
    rng = np.random.default_rng(0)
    n = 4000
    y = rng.integers(0, 4, n)
    logits = rng.normal(0, 1, (n, 4))
    logits[np.arange(n), y] += 1.0
    true_probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.array([rng.choice(4, p=p) for p in true_probs])  # labels drawn from true probs
    overconfident = metrics.apply_temperature(true_probs, 1 / 3)  # sharpened 3x
    t = metrics.fit_temperature(overconfident, y)
    assert t == pytest.approx(3, rel=0.15)
    calibrated = metrics.apply_temperature(overconfident, t)
    assert metrics.expected_calibration_error(calibrated, y) < metrics.expected_calibration_error(
        overconfident, y
    )
    np.testing.assert_allclose(calibrated.sum(1), 1, atol=1e-9)


def test_review_threshold_separates_wrong_answers_from_right_ones() -> None:
    """Right answers' confidence in 0.65-0.95, wrong ones' in 0.5-0.75: up to 0.75 each step
    up flags more wrong answers than right ones, beyond it only right ones: the flag stops
    there, not at 0.99 (which would flag everything)."""
    rng = np.random.default_rng(3)
    y = np.zeros(2000, dtype=int)
    right = rng.uniform(0.65, 0.95, 1600)
    wrong = rng.uniform(0.50, 0.75, 400)
    probs = np.zeros((2000, 4))
    probs[:1600, 0] = right
    probs[:1600, 1] = 1 - right
    probs[1600:, 1] = wrong
    probs[1600:, 0] = 1 - wrong
    t = metrics.choose_review_threshold(probs, y)
    assert 0.74 <= t <= 0.76, t
    stats = metrics.review_stats(probs, y, t)
    assert stats["unflagged_accuracy"] == 1.0  # every wrong answer flagged
    assert 0.43 <= stats["flagged_fraction"] <= 0.50  # with a third of the right ones
    # wrong answers at every confidence (whole cells confidently wrong, as on unseen cells):
    # no threshold leaves 99% right unflagged; the flag still goes where wrong answers gather
    wrong = np.concatenate([rng.uniform(0.5, 0.8, 300), rng.uniform(0.8, 0.95, 100)])
    probs[1600:, 1] = wrong
    probs[1600:, 0] = 1 - wrong
    t = metrics.choose_review_threshold(probs, y)
    assert 0.64 <= t <= 0.66, t  # below 0.65, where the right answers begin: wrong ones only
    assert metrics.review_stats(probs, y, t)["flagged_fraction"] < 0.1


def test_review_threshold_flags_at_least_the_review_share() -> None:
    rng = np.random.default_rng(1)
    confidence = rng.uniform(0.5, 1.0, 1000)
    probs = np.stack([confidence, 1 - confidence, 0 * confidence, 0 * confidence], 1)
    y = np.zeros(1000, dtype=int)  # all correct
    t = metrics.choose_review_threshold(probs, y)
    stats = metrics.review_stats(probs, y, t)
    assert 0.04 <= stats["flagged_fraction"] <= 0.07
    assert stats["unflagged_accuracy"] == 1.0


def test_cell_gamut_rejects_noise_and_keeps_training_like_crops() -> None:
    rng = np.random.default_rng(2)
    base = np.array([[230, 220, 226], [222, 160, 170], [95, 60, 170]], dtype=np.uint8)
    crops = base[rng.integers(0, 3, (50, 150, 150))]
    params = cellcheck.fit(crops)
    check = cellcheck.CellCheck(params)
    assert check.is_cell(crops[0], localised=True)
    assert not check.is_cell(crops[0], localised=False)
    noise = rng.integers(0, 256, (150, 150, 3), dtype=np.uint8)
    assert not check.is_cell(noise, localised=True)


def test_cell_gamut_covers_each_group_of_crops_however_few() -> None:
    """A look given as a group of its own (a hue turn) keeps its colours in the gamut; pooled
    with 300 times as many crops of the usual look, its bins fall under the mass cut."""
    rng = np.random.default_rng(5)
    base = np.array([[230, 220, 226], [222, 160, 170], [95, 60, 170]], dtype=np.uint8)
    usual = base[rng.integers(0, 3, (300, 20, 20))]
    turned = np.array([[230, 220, 226], [160, 222, 170], [60, 170, 95]], dtype=np.uint8)
    other = turned[rng.integers(0, 3, (1, 20, 20))]
    pooled = cellcheck.CellCheck(cellcheck.fit(np.concatenate([usual, other])))
    grouped = cellcheck.CellCheck(cellcheck.fit([usual, other]))
    assert not pooled.is_cell(other[0], localised=True)
    assert grouped.is_cell(other[0], localised=True)
    assert grouped.is_cell(usual[0], localised=True)
    noise = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    assert not grouped.is_cell(noise, localised=True)


def test_cell_check_rejects_a_page_that_is_only_slide_coloured() -> None:
    """White balance makes paper look like slide background: a crop of background grey
    and dark ink has too few stained pixels, though nearly all of it is in the gamut."""
    rng = np.random.default_rng(3)
    base = np.array([[220, 220, 220], [222, 160, 170], [95, 60, 170]], dtype=np.uint8)
    crops = base[rng.integers(0, 3, (50, 150, 150))]
    check = cellcheck.CellCheck(cellcheck.fit(crops))
    page = np.full((150, 150, 3), 220, dtype=np.uint8)
    page[::10] = (95, 60, 170)  # a few ink lines in a nucleus colour
    gamut, stained = check.fractions(page)
    assert gamut == 1.0 and stained == 0.1
    assert check.is_cell(crops[0], localised=True) is True
    assert check.is_cell(page, localised=True) is False


def test_cell_check_without_a_stain_floor_still_works() -> None:
    """Models fitted before v5 have no ``min_stained``: only the gamut decides."""
    rng = np.random.default_rng(4)
    base = np.array([[230, 220, 226], [222, 160, 170], [95, 60, 170]], dtype=np.uint8)
    crops = base[rng.integers(0, 3, (20, 150, 150))]
    params = cellcheck.fit(crops)
    del params["min_stained"]
    page = np.full((150, 150, 3), (230, 220, 226), dtype=np.uint8)
    assert cellcheck.CellCheck(params).is_cell(page, localised=True) is True


def test_cell_breakdown_names_the_wrong_cells_and_their_weight() -> None:
    # cell "m" (monocyte, 4 views, 3 called neutrophil) carries half of all views;
    # cell "n" (neutrophil, 2 views) is right; cell "e" (eosinophil, 2 views) is tied 1-1
    # and the tie goes to the lower class index, eosinophil: right
    y = np.array([2, 2, 2, 2, 3, 3, 0, 0])
    groups = np.array(["m", "m", "m", "m", "n", "n", "e", "e"])
    probs = np.eye(4)[[3, 3, 3, 2, 3, 3, 0, 3]]
    cells = metrics.cell_breakdown(y, groups, probs)
    assert cells["cells"] == 3 and cells["cells_right"] == 2
    assert cells["wrong_cells"] == [
        {
            "cell": "m",
            "label": "monocyte",
            "voted": "neutrophil",
            "views": 4,
            "views_wrong": 3,
            "share_of_views": 0.5,
        }
    ]
