"""Review operating points: thresholds chosen on out-of-fold answers, read on TEST."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model_training.metrics import review_stats
from model_training.operating_points import MIN_RELEASED, curve, threshold_for


def answers(confidence: list[float], right: list[bool]) -> tuple[np.ndarray, np.ndarray]:
    """Four-class probabilities with these top confidences; class 0 is the answer, and
    the label is 0 where ``right``, 1 otherwise."""
    c = np.array(confidence)
    probs = np.column_stack([c, *(np.full_like(c, (1 - c) / 3) for _ in range(3))])
    return probs, np.where(right, 0, 1)


def test_curve_gives_the_flagged_share_and_the_accuracy_of_the_rest() -> None:
    probs, y = answers([0.5, 0.6, 0.7, 0.8], [False, True, False, True])
    flagged, accuracy = curve(probs, y, np.array([0.4, 0.65, 0.75, 0.9]))
    np.testing.assert_allclose(flagged, [0.0, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(accuracy[:3], [0.5, 0.5, 1.0])
    assert np.isnan(accuracy[3])  # nothing released


def test_curve_agrees_with_the_service_review_figures_at_every_threshold() -> None:
    """One sorted pass gives, at each threshold (ties with confidences included), what
    ``review_stats`` counts one threshold at a time."""
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4) * 0.5, size=500).round(2)  # rounded: many ties
    y = rng.integers(0, 4, 500)
    grid = np.unique(np.concatenate([probs.max(axis=1), np.linspace(0.25, 1.0, 31)]))
    flagged, accuracy = curve(probs, y, grid)
    for t, f, a in zip(grid, flagged, accuracy, strict=True):
        stats = review_stats(probs, y, float(t))
        assert f == pytest.approx(stats["flagged_fraction"])
        if stats["flagged_fraction"] < 1:
            assert a == pytest.approx(stats["unflagged_accuracy"])


def test_threshold_is_the_lowest_that_reaches_the_target() -> None:
    # 100 answers: the 20 least confident are wrong half the time, the rest always right
    confidence = list(np.linspace(0.45, 0.99, 100))
    right = [i % 2 == 0 if i < 20 else True for i in range(100)]
    probs, y = answers(confidence, right)
    t = threshold_for(probs, y, 0.95)
    flagged, accuracy = curve(probs, y, np.array([t, t - 0.001]))
    assert accuracy[0] >= 0.95 > accuracy[1]  # one step lower misses it
    assert threshold_for(probs, y, 0.5) == 0.4  # the lowest threshold already does
    # released always includes the 80 right ones: 100% reachable, but not from a handful
    assert threshold_for(probs, y, 1.0) is not None


def test_no_threshold_when_only_a_handful_would_be_released() -> None:
    n = 200
    confidence = list(np.linspace(0.45, 0.99, n))
    # only the top 2% are right: reaching 0.9 would release fewer than MIN_RELEASED
    right = [i >= n * (1 - MIN_RELEASED / 2.5) for i in range(n)]
    probs, y = answers(confidence, right)
    assert threshold_for(probs, y, 0.9) is None


def test_operating_points_of_a_model_calibrated_on_a_cross_validation(
    kaggle_like: Path, tmp_path: Path, tiny_model: Path
) -> None:
    from model_training.__main__ import main
    from model_training.crossval import cross_validate, write
    from model_training.train import Augmentation, train

    aug = Augmentation(scale=0.1)
    record = cross_validate(
        kaggle_like, folds=2, arch="tiny", epochs=1, batch_size=8, aug=aug, cache_dir=None
    )
    write(tmp_path / "cv", record, "python -m model_training cv --folds 2")
    train(
        "official",
        kaggle_like,
        tmp_path / "m",
        arch="tiny",
        epochs=1,
        batch_size=8,
        cache_dir=None,
        aug=aug,
        refit=tmp_path / "cv",
        report_dir=tmp_path / "report",
    )
    out = tmp_path / "op"
    main(
        [
            "operating-points",
            "--model",
            str(tmp_path / "m" / "1"),
            "--data",
            str(kaggle_like),
            "--cache",
            str(tmp_path / "cache"),
            "--out",
            str(out),
        ]
    )
    result = json.loads((out / "metrics.json").read_text())
    meta = json.loads((tmp_path / "m" / "1" / "metadata.json").read_text())
    assert result["out_of_fold"] == str(tmp_path / "cv")
    assert result["rows"][0] == result["rows"][0] | {
        "target": None,
        "threshold": meta["review_threshold"],
    }
    assert [r["target"] for r in result["rows"][1:]] == [0.90, 0.95, 0.97, 0.99]
    for row in result["rows"]:
        if row["threshold"] is None:
            assert row["TEST"] is None
            continue
        if row["target"] is not None:  # chosen out of fold: reaches it there
            assert row["out of fold"]["unflagged_accuracy"] >= row["target"]
        assert 0 <= row["TEST"]["flagged_fraction"] <= 1
    report = (out / "report.md").read_text()
    assert "python -m model_training operating-points" in report
    assert report.count("\n| ") == 6  # header and five rows
    assert (out / "risk_coverage.png").stat().st_size > 10_000
    # a model not calibrated on a cross-validation needs --from
    with pytest.raises(ValueError, match="--from"):
        main(
            [
                "operating-points",
                "--model",
                str(tiny_model / "1"),
                "--data",
                str(kaggle_like),
                "--cache",
                str(tmp_path / "cache"),
                "--out",
                str(tmp_path / "op2"),
            ]
        )
