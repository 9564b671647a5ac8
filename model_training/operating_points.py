"""Review operating points: what a lab's review threshold (``WBC_REVIEW_THRESHOLD``) buys.

Answers whose calibrated confidence is below the threshold are flagged ``needs_review``; a
higher threshold sends more cells to a person and leaves the released answers more often
right. The thresholds for target accuracies of the released answers are chosen on the
out-of-fold answers of the cross-validation the model was calibrated on (TRAIN's cells, each
answered by networks that never saw it), then read on TEST, which chooses nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from model_training import metrics
from model_training.data import load_folder
from model_training.export import SavedModelRunner
from wbc_core.preprocessing import balance_of

TARGETS = (0.90, 0.95, 0.97, 0.99)  # accuracy of the released (unflagged) answers
GRID = np.round(np.arange(0.400, 1.0, 0.001), 3)  # thresholds tried
MIN_RELEASED = 0.05  # an operating point releases at least this share of the answers


def curve(
    probs: np.ndarray, y: np.ndarray, grid: np.ndarray = GRID
) -> tuple[np.ndarray, np.ndarray]:
    """For each threshold of ``grid``: the share of answers flagged and the accuracy of
    the others (NaN where every answer is flagged)."""
    confidence = probs.max(axis=1)
    order = np.argsort(confidence, kind="stable")
    n_flagged = np.searchsorted(confidence[order], grid, side="left")  # confidence < t
    right_from = np.append(np.cumsum((probs.argmax(axis=1) == y)[order][::-1])[::-1], 0)
    n_released = len(confidence) - n_flagged
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.where(n_released > 0, right_from[n_flagged] / n_released, np.nan)
    return n_flagged / len(confidence), accuracy


def threshold_for(
    probs: np.ndarray, y: np.ndarray, target: float, grid: np.ndarray = GRID
) -> float | None:
    """The lowest threshold of ``grid`` whose released answers are right at least
    ``target`` of the time while still releasing ``MIN_RELEASED`` of them (fewer would be
    a handful of lucky answers, not an operating point); None if there is none."""
    flagged, accuracy = curve(probs, y, grid)
    meets = (1 - flagged >= MIN_RELEASED) & (np.nan_to_num(accuracy) >= target)
    return float(grid[np.argmax(meets)]) if meets.any() else None


def operating_points(
    model_dir: Path,
    data_root: Path,
    out: Path,
    command: str,
    cache: Path | None = Path(".cache/arrays"),
    source: Path | None = None,
) -> dict:
    """Write ``out``/report.md, metrics.json and risk_coverage.png for the model at
    ``model_dir``: thresholds chosen on ``source``'s out-of-fold answers (default: the
    cross-validation the model was calibrated on), read on ``data_root``/TEST."""
    runner = SavedModelRunner(model_dir)
    meta = runner.metadata
    if source is None:
        source = meta.get("refit", {}).get("calibration_from", {}).get("path")
        if source is None:
            raise ValueError(
                f"{model_dir} was not calibrated on a cross-validation; name one with --from"
            )
    source = Path(source)
    with np.load(source / "out_of_fold.npz") as z:
        oof_probs, oof_y = z["probs"], z["y"]
    temperature = float(meta.get("temperature", 1.0))
    test = load_folder(Path(data_root) / "TEST", cache, balance=balance_of(meta))
    answers = {
        "out of fold": (metrics.apply_temperature(oof_probs, temperature), oof_y),
        "TEST": (metrics.apply_temperature(runner(test.x), temperature), test.y),
    }
    shipped = float(meta["review_threshold"])
    rows = [{"target": None, "threshold": shipped}] + [
        {"target": t, "threshold": threshold_for(*answers["out of fold"], t)} for t in TARGETS
    ]
    for row in rows:
        for name, (probs, y) in answers.items():
            row[name] = (
                None
                if row["threshold"] is None
                else metrics.review_stats(probs, y, row["threshold"])
            )
    record = {
        "model": str(model_dir),
        "version": meta.get("version"),
        "out_of_fold": str(source),
        "temperature": temperature,
        "shipped_threshold": shipped,
        "rows": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(record, indent=2))
    plot(answers, rows, out / "risk_coverage.png")
    (out / "report.md").write_text(markdown(record, command))
    return record


def plot(answers: dict[str, tuple[np.ndarray, np.ndarray]], rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for (name, (probs, y)), colour in zip(answers.items(), ("tab:blue", "tab:orange"), strict=True):
        flagged, accuracy = curve(probs, y)
        ax.plot(flagged * 100, accuracy, color=colour, label=name)
        for row in rows:
            if row["threshold"] is not None:
                stats = row[name]
                ax.plot(
                    stats["flagged_fraction"] * 100,
                    stats["unflagged_accuracy"],
                    "o",
                    color=colour,
                    mfc="white" if row["target"] is None else colour,
                )
    for row in rows:
        if row["threshold"] is not None:
            stats = row["out of fold"]
            label = "shipped" if row["target"] is None else f"{row['target']:.2f}"
            ax.annotate(
                f"{label} ({row['threshold']:g})",
                (stats["flagged_fraction"] * 100, stats["unflagged_accuracy"]),
                textcoords="offset points",
                xytext=(6, -10),
                fontsize=8,
            )
    ax.set_xlabel("images flagged for review (%)")
    ax.set_ylabel("accuracy of the answers released without review")
    ax.set_xlim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("Review threshold: flagged share against released accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(record: dict, command: str) -> str:
    def cell(stats: dict | None) -> str:
        if stats is None:
            return "not reachable | -"
        return f"{stats['flagged_fraction']:.1%} | {stats['unflagged_accuracy']:.3f}"

    lines = [
        "# Review operating points: what `WBC_REVIEW_THRESHOLD` buys",
        "",
        "Produced by:",
        "",
        f"    {command}",
        "",
        f"Model `{record['model']}` (version {record['version']}); calibrated confidence "
        f"(temperature {record['temperature']:.3f}). An answer whose confidence is below the "
        "threshold is flagged `needs_review`. Each threshold below is chosen on the "
        f"out-of-fold answers of `{record['out_of_fold']}` (TRAIN's cells, each answered by "
        "networks that never saw it) as the lowest whose released answers reach the target "
        f"(releasing at least {MIN_RELEASED:.0%} of them); TEST is read after and chooses "
        "nothing.",
        "",
        "| target (out of fold) | threshold | flagged, out of fold | released accuracy, out "
        "of fold | flagged, TEST | released accuracy, TEST |",
        "|---|---|---|---|---|---|",
    ]
    for row in record["rows"]:
        target = "shipped default" if row["target"] is None else f"{row['target']:.2f}"
        threshold = "-" if row["threshold"] is None else f"{row['threshold']:g}"
        lines.append(
            f"| {target} | {threshold} | {cell(row['out of fold'])} | {cell(row['TEST'])} |"
        )
    lines += [
        "",
        "A lab sets its row's threshold as `WBC_REVIEW_THRESHOLD` (the model's own "
        "is the shipped default). Flagged: share of images answered `needs_review`; "
        "released accuracy: accuracy of the others. Per image (view), as the service "
        "answers.",
        "",
        "![flagged share against released accuracy](risk_coverage.png)",
        "",
    ]
    return "\n".join(lines)
