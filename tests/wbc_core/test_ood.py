"""The out-of-distribution statistics: the distance, the threshold, the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wbc_core import ood


@pytest.fixture
def clusters() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 5, (4, 16))
    y = rng.integers(0, 4, 800)
    return centres[y] + rng.normal(0, 1, (800, 16)), y


def test_distance_is_the_mahalanobis_distance_to_the_nearest_class(
    clusters: tuple[np.ndarray, np.ndarray],
) -> None:
    x, y = clusters
    stats = ood.fit(x, y, 4)
    probe = x[:5] + 0.3
    direct = np.array(
        [min(np.sqrt((p - m) @ stats.precision @ (p - m)) for m in stats.means) for p in probe]
    )
    np.testing.assert_allclose(stats.score(probe), direct, rtol=1e-9)


def test_threshold_lets_the_quantile_of_every_site_pass(
    clusters: tuple[np.ndarray, np.ndarray],
) -> None:
    x, y = clusters
    stats = ood.fit(x[:600], y[:600], 4)
    site_a, site_b = stats.score(x[600:700]), stats.score(x[700:])
    guarded = ood.with_threshold(stats, [site_a, site_b], quantile=0.9)
    assert np.mean(site_a <= guarded.threshold) >= 0.9
    assert np.mean(site_b <= guarded.threshold) >= 0.9
    far = x[:10] + 40.0  # a shifted cloud: another stain's features
    assert guarded.is_ood(far).all()


def test_statistics_survive_the_file(
    clusters: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    x, y = clusters
    stats = ood.with_threshold(ood.fit(x, y, 4), [ood.fit(x, y, 4).score(x)])
    sha = stats.save(tmp_path)
    assert len(sha) == 64
    loaded = ood.OodStats.load(tmp_path)
    assert loaded is not None and loaded.threshold == pytest.approx(stats.threshold)
    np.testing.assert_allclose(loaded.score(x[:20]), stats.score(x[:20]), rtol=1e-4)
    assert ood.OodStats.load(tmp_path / "elsewhere") is None
