"""Evaluate an exported SavedModel on any class-folder tree."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from model_training.data import CLASSES, load_folder
from model_training.export import SavedModelRunner
from model_training.metrics import cell_breakdown, classification_report
from model_training.report import cell_table, table
from wbc_core.preprocessing import balance_of, decode, prepare


def evaluate(
    model_dir: Path,
    data: Path,
    cache: Path | None = None,
    errors: Path | None = None,
    max_errors: int = 24,
) -> dict:
    """Print Table I, then, as the last stdout line, the metrics as one JSON object.
    ``errors``: also draw the misclassified images (up to ``max_errors``) into that PNG."""
    runner = SavedModelRunner(model_dir)
    dataset = load_folder(data, cache, balance=balance_of(runner.metadata))
    probs = runner(dataset.x)
    report = classification_report(dataset.y, probs)
    report["cells"] = cell_breakdown(dataset.y, dataset.groups, probs)
    if errors:
        wrong = np.flatnonzero(probs.argmax(axis=1) != dataset.y)
        report["errors_png"] = str(errors)
        plot_errors(
            [Path(dataset.paths[i]) for i in wrong[:max_errors]],
            dataset.y[wrong],
            probs[wrong],
            balance_of(runner.metadata),
            errors,
        )
    report["skipped"] = dataset.skipped
    report["model"] = {
        "name": runner.metadata.get("name"),
        "version": runner.metadata.get("version"),
    }
    print(table(report))
    print(cell_table(report["cells"]))
    if dataset.skipped:
        print(f"skipped {len(dataset.skipped)} unreadable files")
    print(json.dumps(report))
    return report


def plot_errors(
    paths: list[Path],
    truth: np.ndarray,
    probs: np.ndarray,
    balance: str,
    out: Path,
    titles: list[str] | None = None,
    per_row: int = 12,
) -> None:
    """One column per misclassified image (``per_row`` to a row): the image with the box the
    service found (green) above the crop the network saw, titled with ``titles`` (default:
    the file), the label and the answer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(paths))
    cols, rows = min(n, per_row), -(-n // per_row)
    fig, axes = plt.subplots(2 * rows, cols, figsize=(2.6 * cols, 4.6 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, path in enumerate(paths):
        top, bottom = axes[2 * (i // cols), i % cols], axes[2 * (i // cols) + 1, i % cols]
        image = decode(path.read_bytes())
        prepared = prepare(image, balance)
        x0, y0, x1, y1 = prepared.box.as_list()
        top.imshow(image)
        top.add_patch(
            plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="lime", linewidth=1.5)
        )
        title = titles[i] if titles else f"{path.parent.name}/{path.name}"
        top.set_title(f"{title}\nlabel {CLASSES[truth[i]]}", fontsize=7)
        bottom.imshow(prepared.array)
        answer = int(probs[i].argmax())
        bottom.set_title(f"answer {CLASSES[answer]} {probs[i][answer]:.2f}", fontsize=7)
    if not paths:
        axes[0, 0].set_title("no misclassified images")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
