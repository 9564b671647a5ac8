"""Evaluation of an exported model on each site's test sets, one report per site: accuracy,
macro-F1, per-class table, confusion matrix, calibration (ECE, reliability diagram), the
review flag and the out-of-distribution guard (what is released, and how often it is
wrong), and the risk-coverage curve. No figure ever pools two sites.

    python -m model_training evaluate-sites --model models/wbc-classifier/8 \
        --data kaggle=../shared/data/kaggle-blood-cells --data pbc=../shared/data/pbc \
        --out reports/model
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from model_training import metrics
from model_training.data import Dataset
from model_training.report import plot_confusion, table
from wbc_core import cellcheck
from wbc_core.ood import OodStats
from wbc_core.preprocessing import balance_of


def answers(
    runner: Any,
    ds: Dataset,
    metadata: dict[str, Any],
    ood: OodStats | None,
    localised: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """What the service would answer for each crop of ``ds``: calibrated probabilities,
    review flags by reason, and whether the answer is released without review.
    ``localised``: whether the localiser found each crop's cell (default: every one); one it
    did not find is answered `unknown`, as by the service."""
    raw, features = runner.run(ds.x)
    probs = metrics.apply_temperature(raw, float(metadata.get("temperature", 1.0)))
    confidence = probs.max(axis=1)
    low = confidence < float(metadata.get("review_threshold", 0.9))
    check = cellcheck.CellCheck(metadata.get("cell_check"))
    found = np.ones(len(ds.x), dtype=bool) if localised is None else localised
    not_cell = np.array(
        [not check.is_cell(x, bool(f)) for x, f in zip(ds.x, found, strict=True)], dtype=bool
    )
    scores = (
        ood.score(features) if ood is not None and features is not None else np.zeros(len(ds.y))
    )
    out_of_dist = scores > ood.threshold if ood is not None else np.zeros(len(ds.y), bool)
    return {
        "probs": probs,
        "y": ds.y,
        "low_confidence": low,
        "not_a_cell": not_cell,
        "ood_score": scores,
        "out_of_distribution": out_of_dist,
        "released": ~(low | not_cell | out_of_dist),
    }


def guard_stats(a: dict[str, np.ndarray]) -> dict[str, float]:
    """Shares of a set: released, accuracy of the released, wrong and released, and what
    each flag alone catches."""
    correct = a["probs"].argmax(axis=1) == a["y"]
    released = a["released"]
    n = max(1, len(correct))
    return {
        "released_share": float(released.mean()) if len(correct) else 0.0,
        "released_accuracy": float(correct[released].mean()) if released.any() else None,
        "wrong_and_released_share": float((~correct & released).sum() / n),
        "wrong_share": float((~correct).mean()) if len(correct) else 0.0,
        "low_confidence_share": float(a["low_confidence"].mean()) if len(correct) else 0.0,
        "out_of_distribution_share": float(a["out_of_distribution"].mean())
        if len(correct)
        else 0.0,
        "not_a_cell_share": float(a["not_a_cell"].mean()) if len(correct) else 0.0,
    }


def risk_coverage(a: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, float]:
    """Coverage and accuracy of the released answers as the most doubtful are withheld
    first (doubt: out of distribution first, then by falling confidence), and the area
    under accuracy against coverage."""
    correct = a["probs"].argmax(axis=1) == a["y"]
    confidence = a["probs"].max(axis=1)
    doubt = np.lexsort((confidence, ~a["out_of_distribution"]))  # most doubtful first
    kept_correct = correct[doubt[::-1]]  # most trusted first
    k = np.arange(1, len(correct) + 1)
    accuracy = np.cumsum(kept_correct) / k
    coverage = k / len(correct)
    area = float(np.trapezoid(accuracy, coverage)) if len(k) > 1 else float(accuracy[0])
    return coverage, accuracy, area


def reliability(
    probs: np.ndarray, y: np.ndarray, bins: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per confidence bin: mean confidence, accuracy, count."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    conf = np.array(
        [confidence[which == b].mean() if (which == b).any() else np.nan for b in range(bins)]
    )
    acc = np.array(
        [correct[which == b].mean() if (which == b).any() else np.nan for b in range(bins)]
    )
    return conf, acc, np.bincount(which, minlength=bins)


def plot_reliability(sets: dict[str, dict[str, np.ndarray]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfect")
    for name, a in sets.items():
        conf, acc, _ = reliability(a["probs"], a["y"])
        ax.plot(conf, acc, marker="o", label=name)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_risk_coverage(sets: dict[str, dict[str, np.ndarray]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    for name, a in sets.items():
        coverage, accuracy, area = risk_coverage(a)
        (line,) = ax.plot(coverage, accuracy, label=f"{name} (area {area:.3f})")
        stats = guard_stats(a)
        if stats["released_accuracy"] is not None:
            ax.plot(
                [stats["released_share"]],
                [stats["released_accuracy"]],
                marker="o",
                color=line.get_color(),
            )
    ax.set_xlabel("share of cells released without review")
    ax.set_ylabel("accuracy of the released")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def set_record(a: dict[str, np.ndarray]) -> dict[str, Any]:
    report = metrics.classification_report(a["y"], a["probs"])
    return report | {
        "ece": metrics.expected_calibration_error(a["probs"], a["y"]),
        "guard": guard_stats(a),
        "risk_coverage_area": risk_coverage(a)[2],
    }


def ood_threshold_text(metadata: dict[str, Any]) -> str:
    threshold = metadata.get("ood", {}).get("threshold")
    return "none (guard off)" if threshold is None else f"{float(threshold):.2f}"


def write_site_report(
    out: Path,
    site: str,
    role: str,
    sets: dict[str, dict[str, np.ndarray]],
    metadata: dict[str, Any],
    command: str,
) -> dict[str, Any]:
    """``out``/``<site>.md`` with its PNGs; returns the site's records by test set."""
    out.mkdir(parents=True, exist_ok=True)
    records = {name: set_record(a) for name, a in sets.items()}
    parts = [
        f"# Site `{site}` ({role})\n",
        f"Produced by:\n\n    {command}\n",
        f"Model `{metadata.get('name')}` version {metadata.get('version')}, trained on "
        f"sites {', '.join(metadata.get('sites', {})) or 'kaggle'}; temperature "
        f"{float(metadata.get('temperature', 1.0)):.3f}, review threshold "
        f"{float(metadata.get('review_threshold', 0.9)):.2f}, out-of-distribution "
        f"threshold {ood_threshold_text(metadata)}.\n",
    ]
    for name, rec in records.items():
        png = f"{site}_{name}_confusion.png"
        plot_confusion(rec["confusion_matrix"], f"{site} {name}", out / png)
        g = rec["guard"]
        released_acc = "n/a" if g["released_accuracy"] is None else f"{g['released_accuracy']:.4f}"
        parts.append(
            f"## {name}\n\n{table(rec)}\n\nExpected calibration error **{rec['ece']:.4f}**.\n\n"
            f"Review: {g['released_share']:.1%} released without review, accuracy of the "
            f"released **{released_acc}**; wrong and released "
            f"**{g['wrong_and_released_share']:.1%}** of all (wrong overall "
            f"{g['wrong_share']:.1%}). Flags: low confidence {g['low_confidence_share']:.1%}, "
            f"out of distribution {g['out_of_distribution_share']:.1%}, not a cell "
            f"{g['not_a_cell_share']:.1%}. Risk-coverage area "
            f"{rec['risk_coverage_area']:.4f}.\n\n![confusion]({png})\n"
        )
    plot_reliability(sets, f"{site}: reliability", out / f"{site}_reliability.png")
    plot_risk_coverage(sets, f"{site}: risk-coverage", out / f"{site}_risk_coverage.png")
    parts.append(
        f"![reliability]({site}_reliability.png) ![risk-coverage]({site}_risk_coverage.png)\n"
    )
    (out / f"{site}.md").write_text("\n".join(parts))
    return records


def report_site(
    runner: Any,
    metadata: dict[str, Any],
    d: Any,
    role: str,
    stats: OodStats | None,
    report_dir: Path | None,
    command: str,
) -> dict[str, Any]:
    """One site's records by set (its validation cells too when the model trained on it),
    and its report in ``report_dir`` when given. ``metadata``: the model's, calibration
    included (a model being exported has it in hand before its file is rewritten)."""
    named = ([("validation", d.val)] if role == "trained on" else []) + list(d.tests.items())
    sets = {n: answers(runner, ds, metadata, stats) for n, ds in named}
    if report_dir is None:
        return {n: set_record(a) for n, a in sets.items()}
    return write_site_report(Path(report_dir), d.site.name, role, sets, metadata, command)


def evaluate_model(
    model_dir: Path, sites: list[Any], cache: Path | None, out: Path, command: str
) -> dict[str, Any]:
    """Every site's report for an exported model (validation cells too for the sites it was
    trained on); returns the records by site."""
    from model_training.export import SavedModelRunner
    from model_training.sites import load_site

    runner = SavedModelRunner(Path(model_dir))
    stats = OodStats.load(Path(model_dir))
    seed = int(runner.metadata.get("seed", 42))
    balance = balance_of(runner.metadata)
    results = {}
    for site in sites:
        role = "trained on" if site.name in runner.metadata.get("sites", {}) else "held out"
        data = load_site(site, cache, seed, balance)
        records = report_site(runner, runner.metadata, data, role, stats, out, command)
        results[site.name] = {
            n: {k: r[k] for k in ("accuracy", "macro_f1", "n", "ece", "guard")}
            for n, r in records.items()
        }
    return results


def summary_rows(sites: dict[str, Any]) -> list[str]:
    """One Markdown row per site and set: accuracy, macro-F1, ECE, and the review guard."""
    rows = [
        "| site | set | role | images | accuracy | macro-F1 | ECE | released | accuracy of "
        "released | wrong and released |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for site, rec in sites.items():
        for name, r in rec["sets"].items():
            rows.append(
                f"| [{site}]({site}.md) | {name} | {rec['role']} | {r['n']} | {figure_cells(r)} |"
            )
    return rows


def figure_cells(r: dict[str, Any]) -> str:
    """A set's record as table cells: accuracy, macro-F1, ECE, released, accuracy of the
    released, wrong and released."""
    g = r["guard"]
    rel = "n/a" if g["released_accuracy"] is None else f"{g['released_accuracy']:.3f}"
    return (
        f"{r['accuracy']:.3f} | {r['macro_f1']:.3f} | {r['ece']:.3f} | "
        f"{g['released_share']:.1%} | {rel} | {g['wrong_and_released_share']:.1%}"
    )


def write_index(folder: Path, title: str, sites: dict[str, Any], command: str) -> None:
    """``folder``/README.md: every site's figures side by side (one row per site and set,
    never pooled), linking to each site's report."""
    lines = [
        f"# {title}\n",
        f"Produced by:\n\n    {command}\n",
        "Released: answered without a review flag (no low confidence, not out of distribution, "
        "a cell). Each site's report has its per-class table, confusion matrices, reliability "
        "diagram and risk-coverage curve.\n",
        *summary_rows(sites),
        "",
    ]
    (Path(folder) / "README.md").write_text("\n".join(lines))


def dump(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=float) + "\n")
