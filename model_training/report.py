"""Evaluation report: Table I, accuracy, macro-F1, confusion matrix and curves as PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from model_training.data import CLASSES  # noqa: E402


def table(report: dict[str, Any]) -> str:
    lines = ["| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for name in CLASSES:
        c = report["per_class"][name]
        lines.append(
            f"| {name} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} "
            f"| {c['support']} |"
        )
    lines.append(
        f"\naccuracy **{report['accuracy']:.4f}**, macro-F1 **{report['macro_f1']:.4f}**"
        f" on {report['n']} images"
    )
    return "\n".join(lines)


def cell_table(cells: dict) -> str:
    """The per-cell breakdown as Markdown: cells right by majority of views, and the wrong
    cells with how much of the score each carries."""
    lines = [
        f"\n{cells['cells_right']} of {cells['cells']} source cells right by majority of"
        " their views"
    ]
    if cells["wrong_cells"]:
        lines += [
            "",
            "| wrong cell | voted | views wrong / views | share of all views |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {w['cell']} | {w['voted']} | {w['views_wrong']} / {w['views']} "
            f"| {w['share_of_views']:.3f} |"
            for w in cells["wrong_cells"]
        ]
    return "\n".join(lines)


def plot_confusion(matrix: list[list[int]], title: str, path: Path) -> None:
    m = np.array(matrix)
    fig, ax = plt.subplots(figsize=(5, 4.4))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(CLASSES)), CLASSES, rotation=30)
    ax.set_yticks(range(len(CLASSES)), CLASSES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(
                j,
                i,
                str(m[i, j]),
                ha="center",
                va="center",
                color="white" if m[i, j] > m.max() / 2 else "black",
            )
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(history: dict[str, list[float]], path_prefix: Path) -> None:
    for metric, label in (("accuracy", "Accuracy"), ("loss", "Loss")):
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        epochs = np.arange(1, len(history.get(metric, [])) + 1)
        ax.plot(epochs, history.get(metric, []), label="training")
        validated = f"val_{metric}" in history  # a --refit run has no validation
        if validated:
            ax.plot(epochs, history[f"val_{metric}"], label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label.lower())
        ax.set_title(f"Training{' and validation' if validated else ''} {label.lower()}")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(f"{path_prefix}_{metric}.png", dpi=110)
        plt.close(fig)


def write_report(
    out: Path, summary: dict[str, Any], history: dict[str, list[float]] | None
) -> None:
    """``out``/report.md, metrics.json, confusion_<set>.png, curves_{accuracy,loss}.png.
    Without a history (re-calibration of an existing run) the curves are kept as they are."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    if history is not None:
        plot_curves(history, out / "curves")
    parts = [
        f"# Evaluation: protocol `{summary['protocol']}`, arch `{summary['arch']}`\n",
        f"Produced by:\n\n    {summary['command']}\n",
        f"Training wall time: **{summary['train_seconds'] / 60:.1f} min** on "
        f"{summary['machine']}; {summary['epochs_run']} epochs; "
        f"{summary['n_train']} training / {summary['n_val']} validation images; "
        f"skipped unreadable files: {summary['skipped']}.\n",
    ]
    if summary.get("members", 1) > 1:
        parts.append(
            f"**An ensemble of {summary['members']} networks** trained alike from "
            f"other seeds, averaging their probabilities; last-epoch training accuracy "
            f"{', '.join(f'{a:.3f}' for a in summary['last_train_accuracy'])}; the "
            f"curves are the first network's.\n"
        )
    if summary.get("stopped_by_time_budget"):
        parts.append(
            f"**Stopped by the time budget** (`--max-minutes`, "
            f"{summary['stopped_by_time_budget']}) before its last epoch; the best "
            f"validation epoch is the one exported.\n"
        )
    if summary.get("refit"):
        parts.append(
            f"**Refit on all of TRAIN**: the validation cells are in the training set, "
            f"so there is no validation curve; its temperature and review threshold "
            f"come from `{summary['refit']['calibration_from']['command']}`.\n"
        )
    if summary["protocol"] == "paper":
        parts.append(
            "**This split leaks.** As in the paper, all 12,515 files are split at random, "
            "so augmented views of the same source cells fall on both sides. Its "
            "score measures memorisation as much as generalisation; the honest figure "
            "is the `official` protocol's.\n"
        )
    if summary.get("validation"):
        val = summary["validation"]
        parts.append(
            "## Validation (TRAIN's held-out source cells)\n\n"
            f"{table(val)}\n{cell_table(val['cells'])}\n"
        )
    for name, report in summary["test"].items():
        plot_confusion(
            report["confusion_matrix"], f"{name} ({summary['arch']})", out / f"confusion_{name}.png"
        )
        cells = f"\n{cell_table(report['cells'])}\n" if "cells" in report else ""
        parts.append(f"## {name}\n\n{table(report)}\n{cells}\n![confusion](confusion_{name}.png)\n")
    if "calibration" in summary:
        cal = summary["calibration"]
        how = (
            f"Calibration and flag last written by `{summary['calibrate_command']}`.\n\n"
            if "calibrate_command" in summary
            else ""
        )
        parts.append(
            f"## Calibration and review flag\n\n{how}"
            f"Temperature {cal['temperature']:.3f} "
            f"(fitted on {cal['fitted_on']}). Expected calibration error on TEST: "
            f"{cal['ece_before']:.4f} before, {cal['ece_after']:.4f} after.\n\n"
            f"Review threshold {cal['review']['threshold']:.2f} "
            f"(chosen on {cal['fitted_on']}):"
            f" on TEST {cal['review']['flagged_fraction']:.1%} of cells flagged, "
            f"accuracy of the unflagged rest "
            f"{cal['review']['unflagged_accuracy']:.4f}.\n"
        )
    parts.append("![accuracy](curves_accuracy.png) ![loss](curves_loss.png)\n")
    (out / "report.md").write_text("\n".join(parts))
