"""Classification metrics (the paper's Table I) and probability calibration, numpy only.
``apply_temperature`` is ``wbc_core.calibration``'s (the service applies it too)."""

from __future__ import annotations

import numpy as np

from wbc_core.calibration import apply_temperature
from wbc_core.classes import CLASSES


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int = len(CLASSES)) -> np.ndarray:
    matrix = np.zeros((n, n), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def classification_report(y_true: np.ndarray, probs: np.ndarray) -> dict:
    """Accuracy, macro-F1 and per-class precision, recall, F1, support."""
    y_pred = probs.argmax(axis=1)
    matrix = confusion(y_true, y_pred)
    per_class = {}
    for i, name in enumerate(CLASSES):
        tp = matrix[i, i]
        predicted, actual = matrix[:, i].sum(), matrix[i, :].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {
            "precision": float(precision),
            "recall": float(recall),
            "f1": float(f1),
            "support": int(actual),
        }
    present = [c for c in CLASSES if per_class[c]["support"] > 0]
    return {
        "accuracy": float((y_pred == y_true).mean()) if len(y_true) else 0.0,
        "macro_f1": float(np.mean([per_class[c]["f1"] for c in present])) if present else 0.0,
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
        "n": int(len(y_true)),
    }


def log_loss(y_true: np.ndarray, probs: np.ndarray, floor: float = 1e-12) -> float:
    """Mean negative log-likelihood of the true classes (probabilities floored at ``floor``)."""
    return float(-np.log(np.clip(probs[np.arange(len(y_true)), y_true], floor, None)).mean())


def fit_temperature(probs: np.ndarray, y_true: np.ndarray) -> float:
    """The temperature minimising negative log-likelihood on held-out data (grid search)."""
    grid = np.exp(np.linspace(np.log(0.25), np.log(8.0), 141))
    nll = [log_loss(y_true, apply_temperature(probs, t)) for t in grid]
    return float(grid[int(np.argmin(nll))])


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, bins: int = 15) -> float:
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def choose_review_threshold(
    probs: np.ndarray, y_true: np.ndarray, review_share: float = 0.05
) -> float:
    """Confidence threshold for the review flag, from held-out predictions.

    The threshold at which the flag best tells wrong answers from right ones: the most
    wrong answers flagged for the fewest right ones (Youden's J: share of the wrong answers
    flagged minus share of the right answers flagged), but never one that flags fewer than
    ``review_share``, so that a technologist always sees the least certain few percent.
    (A target accuracy of the unflagged answers, e.g. 99%, is met on unseen cells by no
    threshold and flags nearly everything: ``operating_points`` shows the price of each.)
    """
    confidence = probs.max(axis=1)
    wrong = probs.argmax(axis=1) != y_true
    best, best_j = 0.99, -1.0
    for threshold in np.round(np.arange(0.40, 0.991, 0.01), 2):
        flagged = confidence < threshold
        caught = flagged[wrong].mean() if wrong.any() else 0.0
        bothered = flagged[~wrong].mean() if (~wrong).any() else 0.0
        if caught - bothered > best_j + 1e-12:
            best, best_j = float(threshold), caught - bothered
    by_share = float(np.ceil(np.quantile(confidence, review_share) * 100) / 100)
    return round(max(best, by_share), 2)


def review_stats(probs: np.ndarray, y_true: np.ndarray, threshold: float) -> dict:
    confidence = probs.max(axis=1)
    kept = confidence >= threshold
    correct = probs.argmax(axis=1) == y_true
    return {
        "threshold": threshold,
        "flagged_fraction": float(1 - kept.mean()),
        "unflagged_accuracy": float(correct[kept].mean()) if kept.any() else 0.0,
        "flagged_accuracy": float(correct[~kept].mean()) if (~kept).any() else None,
    }


def cell_votes(
    y: np.ndarray, groups: np.ndarray, probs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per source cell: its class and the class most of its views were given."""
    cells = np.unique(groups)
    truth = np.array([y[groups == g][0] for g in cells])
    voted = np.array(
        [
            np.bincount(probs[groups == g].argmax(axis=1), minlength=len(CLASSES)).argmax()
            for g in cells
        ]
    )
    return truth, voted


def cell_breakdown(y: np.ndarray, groups: np.ndarray, probs: np.ndarray) -> dict:
    """How a score over augmented views rests on source cells: how many cells the majority
    of their views gets right, and each wrong cell with its number of views and the share
    of all views it carries (Kaggle's TEST gives each of its 4 monocyte cells 155 views and
    each of its 48 neutrophil cells 13, so one cell can move accuracy by 0.06)."""
    truth, voted = cell_votes(y, groups, probs)
    cells = np.unique(groups)
    predicted = probs.argmax(axis=1)
    wrong = []
    for g, t, v in zip(cells, truth, voted, strict=True):
        views = groups == g
        if t != v:
            wrong.append(
                {
                    "cell": str(g),
                    "label": CLASSES[t],
                    "voted": CLASSES[v],
                    "views": int(views.sum()),
                    "views_wrong": int((predicted[views] != t).sum()),
                    "share_of_views": float(views.mean()),
                }
            )
    wrong.sort(key=lambda w: -w["views_wrong"])
    return {
        "cells": int(len(cells)),
        "cells_right": int((truth == voted).sum()),
        "wrong_cells": wrong,
    }
