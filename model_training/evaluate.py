"""Evaluate an exported SavedModel on any class-folder tree."""

from __future__ import annotations

import json
from pathlib import Path

from model_training.data import load_folder
from model_training.export import SavedModelRunner
from model_training.metrics import classification_report
from model_training.preprocessing import balance_of
from model_training.report import table


def evaluate(model_dir: Path, data: Path, cache: Path | None = None) -> dict:
    """Print Table I, then, as the last stdout line, the metrics as one JSON object."""
    runner = SavedModelRunner(model_dir)
    dataset = load_folder(data, cache, balance=balance_of(runner.metadata))
    report = classification_report(dataset.y, runner(dataset.x))
    report["skipped"] = dataset.skipped
    report["model"] = {"name": runner.metadata.get("name"),
                       "version": runner.metadata.get("version")}
    print(table(report))
    if dataset.skipped:
        print(f"skipped {len(dataset.skipped)} unreadable files")
    print(json.dumps(report))
    return report
