"""How unlike the training data a cell image is: the Mahalanobis distance of the network's
penultimate features to the nearest class (Lee et al. 2018), with one covariance shared by
the classes. Fitted on the training crops' features (and their centres the cell fills, for a
network trained on such zooms) when a model is exported, stored in
the version folder as ``ood.npz``, read by the service. NumPy only.

A cell from a laboratory, stain or scale the network never saw lands away from every class
cluster even when its softmax is confident, which is what the confidence flag alone misses.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FILENAME = "ood.npz"
SHRINKAGE = 0.01  # covariance pulled this far towards its mean variance (stable inverse)
VAL_QUANTILE = 0.975  # threshold: this quantile of the validation cells' distances


@dataclass(frozen=True)
class OodStats:
    means: np.ndarray  # [classes, features]
    precision: np.ndarray  # [features, features], inverse of the shared covariance
    threshold: float  # distance above which a cell is out of distribution

    def score(self, features: np.ndarray) -> np.ndarray:
        """Distance of each row of ``features`` [N, D] to the nearest class mean."""
        features = np.asarray(features, dtype=np.float64)
        diffs = features[:, None, :] - self.means[None, :, :]  # N x C x D
        d2 = np.sum((diffs @ self.precision) * diffs, axis=-1)  # one matrix product: BLAS
        return np.sqrt(np.maximum(d2.min(axis=1), 0.0))

    def is_ood(self, features: np.ndarray) -> np.ndarray:
        return self.score(features) > self.threshold

    def save(self, version_dir: Path) -> str:
        """Write ``ood.npz``; returns its sha256 (for metadata.json)."""
        path = Path(version_dir) / FILENAME
        with path.open("wb") as f:
            np.savez(
                f,
                means=self.means.astype(np.float32),
                precision=self.precision.astype(np.float32),
                threshold=np.float64(self.threshold),
            )
        return hashlib.sha256(path.read_bytes()).hexdigest()

    @classmethod
    def load(cls, version_dir: Path) -> OodStats | None:
        """The stats of a version, or None when it has none (the guard is then off)."""
        path = Path(version_dir) / FILENAME
        if not path.exists():
            return None
        with np.load(path) as z:
            return cls(
                z["means"].astype(np.float64),
                z["precision"].astype(np.float64),
                float(z["threshold"]),
            )


def fit(features: np.ndarray, labels: np.ndarray, n_classes: int) -> OodStats:
    """Class means and the shared (shrunk) covariance of training features; threshold
    infinite until ``with_threshold`` sets it."""
    features = np.asarray(features, dtype=np.float64)
    means = np.stack([features[labels == c].mean(axis=0) for c in range(n_classes)])
    centred = features - means[labels]
    cov = centred.T @ centred / max(1, len(features) - n_classes)
    cov = (1 - SHRINKAGE) * cov + SHRINKAGE * np.trace(cov) / len(cov) * np.eye(len(cov))
    return OodStats(means, np.linalg.inv(cov), float("inf"))


def with_threshold(
    stats: OodStats, val_scores: list[np.ndarray], quantile: float = VAL_QUANTILE
) -> OodStats:
    """``stats`` with the threshold at ``quantile`` of each site's validation distances,
    the largest over sites (so that no validated site loses more than 1 - quantile)."""
    threshold = max(float(np.quantile(s, quantile)) for s in val_scores if len(s))
    return OodStats(stats.means, stats.precision, threshold)
