"""Test-time augmentation, measured before it is adopted: does averaging a cell's
probabilities over flipped and rotated views of its crop beat the single crop?

A cell has no orientation, so the eight flips and quarter turns of a crop are equally
valid views of it. Averaging them costs one inference per view on every request, so the
service only does it if the validation cells (inside TRAIN, grouped by source cell; never
TEST) say it pays.

    python -m model_training tta --model /tmp/v5val/wbc-classifier/1 --out reports/experiments/tta
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from model_training.export import SavedModelRunner
from model_training.metrics import cell_votes, classification_report, log_loss
from wbc_core.preprocessing import balance_of

View = Callable[[np.ndarray], np.ndarray]


def _view(turns: int, mirror: bool) -> View:
    def apply(batch: np.ndarray) -> np.ndarray:  # batch: [N, H, W, C]
        out = np.rot90(batch, turns, axes=(1, 2))
        return np.ascontiguousarray(out[:, :, ::-1] if mirror else out)

    return apply


VIEWS: dict[str, View] = {
    f"rot{90 * t}{' mirrored' if m else ''}": _view(t, m) for t in range(4) for m in (False, True)
}

# which views each scheme averages: 1 (the service today), 2, 4 and all 8
SCHEMES: dict[str, list[str]] = {
    "single crop": ["rot0"],
    "mirror (2 views)": ["rot0", "rot0 mirrored"],
    "quarter turns (4 views)": ["rot0", "rot90", "rot180", "rot270"],
    "dihedral (8 views)": list(VIEWS),
}


def cell_accuracy(y: np.ndarray, groups: np.ndarray, probs: np.ndarray) -> float:
    """Share of source cells whose views' most common answer is their class (the vote
    that cross-validation uses)."""
    truth, voted = cell_votes(y, groups, probs)
    return float(np.mean(truth == voted))


def compare(
    runner: SavedModelRunner, x: np.ndarray, y: np.ndarray, groups: np.ndarray
) -> dict[str, dict[str, float]]:
    """Accuracy, macro-F1, mean log-loss and cell accuracy for each view and scheme."""
    probs = {name: runner(view(x)) for name, view in VIEWS.items()}

    def scores(p: np.ndarray) -> dict[str, float]:
        report = classification_report(y, p)
        return {
            "accuracy": report["accuracy"],
            "macro_f1": report["macro_f1"],
            "nll": log_loss(y, p, floor=1e-7),
            "cell_accuracy": cell_accuracy(y, groups, p),
        }

    return {
        "schemes": {
            name: scores(np.mean([probs[v] for v in views], axis=0))
            for name, views in SCHEMES.items()
        },
        "views": {name: scores(p) for name, p in probs.items()},
    }


def run(
    model_dir: Path, data_root: Path, cache: Path | None, out: Path | None, command: str
) -> dict:
    from model_training.train import official_splits

    runner = SavedModelRunner(model_dir)
    if "refit" in runner.metadata or runner.metadata.get("protocol") != "official":
        raise SystemExit(
            f"{model_dir}: needs a validated run of the official protocol "
            "(a refit model trained on its validation cells)"
        )
    _, val, _ = official_splits(
        data_root, cache, int(runner.metadata.get("seed", 42)), balance_of(runner.metadata)
    )
    record = {
        "model": str(model_dir),
        "command": command,
        "n": int(len(val.y)),
        "cells": int(len(np.unique(val.groups))),
        **compare(runner, val.x, val.y, val.groups),
    }
    if out:
        write(out, record)
    return record


def write(out: Path, record: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "tta.json").write_text(json.dumps(record, indent=2))
    lines = [
        "# Test-time augmentation on validation cells",
        "",
        f"Produced by `{record['command']}`. Model: `{record['model']}`; "
        f"{record['n']} validation images of {record['cells']} source cells (inside "
        "TRAIN, grouped by cell; TEST is not used).",
        "",
        "| views averaged | accuracy | macro-F1 | log-loss | cells right |",
        "|---|---|---|---|---|",
    ]
    for section in ("schemes", "views"):
        if section == "views":
            lines += [
                "",
                "Each view alone:",
                "",
                "| view | accuracy | macro-F1 | log-loss | cells right |",
                "|---|---|---|---|---|",
            ]
        for name, s in record[section].items():
            lines.append(
                f"| {name} | {s['accuracy']:.4f} | {s['macro_f1']:.4f} | "
                f"{s['nll']:.4f} | {s['cell_accuracy']:.3f} |"
            )
    (out / "report.md").write_text("\n".join(lines) + "\n")
