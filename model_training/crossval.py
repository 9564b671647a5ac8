"""Cross-validation of a training recipe over TRAIN's source cells, grouped by cell.

A source cell is the BCCD photograph a Kaggle image was made from
(``model_training.source_fields``; TRAIN has 270). Here TRAIN's cells are dealt into
``folds`` groups (each class's cells spread evenly, every view of a cell in the same fold);
the recipe is trained ``folds`` times, each time on the other folds for the fixed number of
epochs (as the refit that ships), and every cell is classified by the one model that never
saw it. TEST is not read. (Grouping by the ``k`` of the file names instead mixes cells and
leaks: ``model_training.source_fields``.)

    python -m model_training cv --folds 4 --epochs 14 --scale-jitter 0.15 \
        --stain-jitter 2 --out reports/experiments/crossval
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

from model_training import machine, robustness
from model_training.data import CLASSES, Dataset, check_cells, exclusion_record, load_folder
from model_training.metrics import cell_votes, classification_report
from model_training.recipe import Augmentation
from model_training.report import plot_confusion, table
from model_training.train import fit_members
from wbc_core import localise

log = logging.getLogger(__name__)
OUT_OF_FOLD = "out_of_fold"
PERTURBED_SHARE = 4  # every 4th held-out view also goes through the robustness perturbations


def grouped_folds(groups: np.ndarray, labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold number of each sample: each class's source cells shuffled and dealt round the
    folds, so every fold holds about 1/folds of each class's cells and no cell is split."""
    rng = np.random.default_rng(seed)
    fold_of_group: dict[str, int] = {}
    start = 0  # the next class starts dealing where the last one stopped: even fold sizes
    for label in np.unique(labels):
        class_groups = np.unique(groups[labels == label])
        rng.shuffle(class_groups)
        for i, g in enumerate(class_groups):
            fold_of_group[g] = (start + i) % folds
        start = (start + len(class_groups)) % folds
    return np.array([fold_of_group[g] for g in groups])


def by_variant(outs: np.ndarray) -> dict[str, np.ndarray]:
    """The answers scored from every network's (``outs``: [members, N, classes]): the
    recipe's (their mean) and, for an ensemble, its first network's alone."""
    return {"recipe": outs.mean(axis=0)} | ({"first_member": outs[0]} if len(outs) > 1 else {})


def cross_validate(
    data_root: Path,
    folds: int = 4,
    arch: str = "wbc",
    epochs: int = 14,
    batch_size: int = 32,
    seed: int = 42,
    aug: Augmentation | None = None,
    cache_dir: Path | None = Path(".cache/arrays"),
    members: int = 1,
    balance: str = "white",
    exclude: Path | None = None,
) -> dict[str, Any]:
    """``members`` > 1: each fold trains that many networks (seeds ``seed + fold + 1000 *
    member``; the first is the single network of ``members=1``) and classifies by their
    mean probabilities; the first member alone is scored too (``first_member``), on the same
    folds and views, for a paired comparison. ``balance``: the preprocessing's
    (``preprocessing.BALANCES``), for the training crops and the perturbed ones alike.
    ``exclude``: a file of source cells (``data.read_cell_list``, e.g.
    ``neutrophil/BloodImage_00016``) left out of every fold's training; they are still held
    out and scored in their own fold."""

    aug = aug or Augmentation()  # the CLI's defaults
    full = load_folder(Path(data_root) / "TRAIN", cache_dir, balance=balance)
    fold = grouped_folds(full.groups, full.y, folds, seed)
    cells_out, excluded_record = exclusion_record(exclude)
    check_cells(cells_out, full.groups)
    excluded = np.isin(full.groups, cells_out)
    variants = ["recipe", "first_member"] if members > 1 else ["recipe"]
    probs = {v: np.zeros((len(full.y), len(CLASSES)), np.float32) for v in variants}
    each = np.zeros((members, len(full.y), len(CLASSES)), np.float32)  # every network's own
    shifted: dict[str, dict[str, list[float]]] = {
        v: {name: [] for name in robustness.PERTURBATIONS} for v in variants
    }
    per_fold = []
    start = time.perf_counter()
    for k in range(folds):
        held = np.flatnonzero(fold == k)
        rest = np.flatnonzero((fold != k) & ~excluded)
        assert not set(full.groups[held]) & set(full.groups[rest])
        log.info(
            "fold %d/%d: training %d network(s) on %d images, %d held-out images of %d cells",
            k + 1,
            folds,
            members,
            len(rest),
            len(held),
            len(np.unique(full.groups[held])),
        )
        t0 = time.perf_counter()
        keras.utils.set_random_seed(seed + k)
        models = [
            m
            for m, _ in fit_members(
                full.subset(rest), None, arch, epochs, batch_size, seed + k, aug, members
            )
        ]
        held_ds: Dataset = full.subset(held)

        def answers(x: np.ndarray, models: list[keras.Model] = models) -> np.ndarray:
            """Every network's probabilities, [members, N, classes], each network run once."""
            return np.stack(
                [m.predict(x.astype(np.float32), batch_size=128, verbose=0) for m in models]
            )

        outs = answers(held_ds.x)
        each[:, held] = outs
        for v, p in by_variant(outs).items():
            probs[v][held] = p
        # the held-out cells' source images as other labs' might look (every view of one
        # in PERTURBED_SHARE: the views of a cell are near copies)
        sample = held_ds.subset(np.arange(0, len(held), PERTURBED_SHARE))
        perturbed: dict[str, dict[str, float]] = {}
        for name, crops in robustness.perturbed_crops(sample.paths, balance):
            for v, p in by_variant(answers(np.stack([c.array for c in crops]))).items():
                accuracy = classification_report(sample.y, p)["accuracy"]
                shifted[v][name].extend([accuracy] * len(sample.y))
                if v == "recipe":
                    perturbed[name] = {"accuracy": accuracy}
        report = classification_report(held_ds.y, probs["recipe"][held])
        fold_shifted = robustness.summarise(perturbed)
        truth, voted = cell_votes(held_ds.y, held_ds.groups, probs["recipe"][held])
        per_fold.append(
            {
                "fold": k,
                "images": int(len(held)),
                "cells": int(len(truth)),
                "accuracy": report["accuracy"],
                "cell_accuracy": float((truth == voted).mean()),
                "cells_right": int((truth == voted).sum()),
                "mean_shifted": fold_shifted["mean_shifted"],
                "worst_shifted": fold_shifted["worst_shifted"],
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
        log.info(
            "fold %d: accuracy %.4f, cells right %d/%d, perturbed: mean %.4f, worst %.4f, %s",
            k + 1,
            report["accuracy"],
            int((truth == voted).sum()),
            len(truth),
            fold_shifted["mean_shifted"],
            fold_shifted["worst_shifted"],
            json.dumps({n: round(r["accuracy"], 4) for n, r in perturbed.items()}),
        )
        if members > 1:
            first = classification_report(held_ds.y, probs["first_member"][held])
            log.info("fold %d, first member alone: accuracy %.4f", k + 1, first["accuracy"])
        keras.backend.clear_session()

    def summary(v: str) -> dict[str, Any]:
        truth, voted = cell_votes(full.y, full.groups, probs[v])
        return {
            "views": classification_report(full.y, probs[v]),
            "cells": classification_report(truth, np.eye(len(CLASSES))[voted]),
            "cells_wrong": sorted(
                f"{g} -> {CLASSES[c]}"
                for g, t, c in zip(np.unique(full.groups), truth, voted, strict=True)
                if t != c
            ),
            # accuracy under each perturbation, the folds weighted by their sampled views
            "perturbed": {name: float(np.mean(a)) for name, a in shifted[v].items()},
        }

    record = {
        "folds": folds,
        "arch": arch,
        "epochs": epochs,
        "seed": seed,
        **aug.metadata(every=True),
        "members": members,
        "crop_context": localise.CROP_CONTEXT,
        "balance": balance,
        **excluded_record,
        "seconds": round(time.perf_counter() - start, 1),
        "machine": machine.describe(),
        **summary("recipe"),
        "per_fold": per_fold,
        OUT_OF_FOLD: {"probs": probs["recipe"], "y": full.y}
        | ({"member_probs": each} if members > 1 else {}),
    }
    if members > 1:
        record["first_member"] = summary("first_member")
    return record


def write(out: Path, record: dict[str, Any], command: str) -> None:
    """The report, metrics.json and the out-of-fold probabilities (``OUT_OF_FOLD``.npz:
    every TRAIN view as classified by the fold model that never saw its cell), from which
    ``calibrate --calibration-from`` fits a refit's temperature and review threshold."""
    out.mkdir(parents=True, exist_ok=True)
    record = {"command": command} | record
    arrays = record.pop(OUT_OF_FOLD, None)
    if arrays is not None:
        np.savez_compressed(out / f"{OUT_OF_FOLD}.npz", **arrays)
    (out / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    plot_confusion(
        record["views"]["confusion_matrix"],
        f"{record['folds']}-fold cross-validation, views",
        out / "confusion_views.png",
    )
    plot_confusion(
        record["cells"]["confusion_matrix"],
        f"{record['folds']}-fold cross-validation, cells (majority of views)",
        out / "confusion_cells.png",
    )
    cells = record["cells"]
    shifted = robustness.summarise({n: {"accuracy": a} for n, a in record["perturbed"].items()})
    lines = [
        f"# Cross-validation of the recipe over TRAIN's source cells ({record['folds']} folds)",
        "",
        "Produced by:",
        "",
        f"    {command}",
        "",
        f"Arch `{record['arch']}`, {record['epochs']} epoch(s) per fold, scale jitter "
        f"{record['scale_jitter']:g}, stain jitter {record['stain_jitter']:g}, noise jitter "
        f"{record.get('noise_jitter', 0):g}, mixup {record.get('mixup', 0):g}, gamma jitter "
        f"{record.get('gamma_jitter', 0):g}, cutout {record.get('cutout', 0):g}, weight decay "
        f"{record.get('weight_decay', 0):g}, robust loss {record.get('robust_loss', 0):g}, "
        f"crop context "
        f"{record.get('crop_context', localise.LEGACY_CROP_CONTEXT):g}, balance "
        f"{record.get('balance', 'white')}, seed "
        f"{record['seed']}"
        + (
            f", {len(record['excluded_cells'])} cells left out of training (scored)"
            if record.get("excluded_cells")
            else ""
        )
        + ". Each of TRAIN's source cells falls in one fold with all its views; "
        "each fold is classified by the model trained on the others (fixed epochs, no "
        "validation, as the shipped refit). TEST is not read. Wall time "
        f"**{record['seconds'] / 60:.1f} min** on {record['machine']}.",
        "",
        "## Per view",
        "",
        table(record["views"]),
        "",
        "![confusion, views](confusion_views.png)",
        "",
        "## Per source cell (the class most of its views were given)",
        "",
        table(cells).replace(" images", " source cells"),
        "",
        f"{sum(c['support'] for c in cells['per_class'].values()) - len(record['cells_wrong'])}"
        f" of {cells['n']} cells right; wrong: "
        + (", ".join(f"`{w}`" for w in record["cells_wrong"]) or "none"),
        "",
        "![confusion, cells](confusion_cells.png)",
        "",
        "## Under other labs' looks",
        "",
        f"Every {PERTURBED_SHARE}th held-out view's source image perturbed as in "
        "`model_training/robustness.py` (stain, colour cast, focus, magnification, noise, "
        "JPEG), then preprocessed as in serving, and classified by its fold's model:",
        "",
        "| perturbation | accuracy |",
        "|---|---|",
        *[f"| {n} | {a:.3f} |" for n, a in record["perturbed"].items()],
        f"| **mean shifted** | **{shifted['mean_shifted']:.3f}** |",
        f"| **worst shifted** | **{shifted['worst_shifted']:.3f}** |",
        "",
        "## Folds",
        "",
        "| fold | held-out images | accuracy | cells right | perturbed: mean | worst | minutes |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in record["per_fold"]:
        lines.append(
            f"| {f['fold'] + 1} | {f['images']} | {f['accuracy']:.4f} "
            f"| {f['cells_right']} / {f['cells']} | {f['mean_shifted']:.3f} "
            f"| {f['worst_shifted']:.3f} | {f['seconds'] / 60:.1f} |"
        )
    if "first_member" in record:
        lines += ["", *paired_comparison(record)]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def paired_comparison(record: dict[str, Any]) -> list[str]:
    """The ensemble against its first member alone, on the same folds and views."""
    rows = []
    for name, r in (
        ("first member alone", record["first_member"]),
        (f"mean of {record['members']} networks", record),
    ):
        s = robustness.summarise({n: {"accuracy": a} for n, a in r["perturbed"].items()})
        rows.append(
            f"| {name} | {r['views']['accuracy']:.4f} | {r['views']['macro_f1']:.4f} "
            f"| {r['cells']['n'] - len(r['cells_wrong'])} / {r['cells']['n']} "
            f"| {s['mean_shifted']:.3f} | {s['worst_shifted']:.3f} |"
        )
    return [
        "## Ensemble against one network",
        "",
        f"Each fold trained {record['members']} networks with different seeds; the first "
        "is the network a single-model run trains. Same folds, same views:",
        "",
        "| classified by | view accuracy | macro-F1 | cells right | perturbed: mean | worst |",
        "|---|---|---|---|---|---|",
        *rows,
    ]


def wrong_cells(reports: list[Path]) -> list[dict[str, str]]:
    """Each cross-validation report's wrong source cells, cell -> the class it was given."""
    return [
        dict(
            w.split(" -> ")
            for w in json.loads((Path(r) / "metrics.json").read_text())["cells_wrong"]
        )
        for r in reports
    ]


def compare(reports: list[Path]) -> str:
    """Which source cells each cross-validation report (``cv --out``) got wrong, side by side:
    a cell every recipe gets wrong is a limit of the data (an ambiguous cell, or a label to
    review), not of one recipe. A markdown table, cells wrong in the most reports first."""
    wrong = wrong_cells(reports)
    cells = sorted(set().union(*wrong), key=lambda c: (-sum(c in w for w in wrong), c))
    n = len(reports)
    always = sum(all(c in w for w in wrong) for c in cells)
    lines = [
        "| cell | " + " | ".join(Path(r).name for r in reports) + " | wrong in |",
        "|---|" + "---|" * (n + 1),
    ]
    lines += [
        f"| {c} | "
        + " | ".join(w.get(c, "") for w in wrong)
        + f" | {sum(c in w for w in wrong)} of {n} |"
        for c in cells
    ]
    return (
        "\n".join(
            lines
            + [
                "",
                f"{len(cells)} cells wrong in at least one report, {always} "
                f"in all {n}; wrong cells per report: " + ", ".join(str(len(w)) for w in wrong),
            ]
        )
        + "\n"
    )


def sheet_of_always_wrong(
    reports: list[Path], data_root: Path, cache_dir: Path | None, out: Path
) -> list[str]:
    """Draw the cells every report got wrong, one view each, as ``evaluate --errors`` draws
    errors: the view the last report's out-of-fold answer gave the cell's wrong class most
    surely. The cells to show someone who can review their labels. Returns them."""
    from model_training.evaluate import plot_errors

    wrong = wrong_cells(reports)
    always = sorted(c for c in wrong[0] if all(c in w for w in wrong))
    full = load_folder(Path(data_root) / "TRAIN", cache_dir)
    with np.load(Path(reports[-1]) / f"{OUT_OF_FOLD}.npz") as z:
        probs = z["probs"]
    if len(probs) != len(full.y):
        raise ValueError(f"{reports[-1]} was not made on {data_root}/TRAIN")
    views = []
    for c in always:
        own = np.flatnonzero(full.groups == c)
        views.append(int(own[probs[own, CLASSES.index(wrong[-1][c])].argmax()]))
    balance = json.loads((Path(reports[-1]) / "metrics.json").read_text()).get("balance", "white")
    plot_errors(
        [Path(full.paths[i]) for i in views],
        full.y[views],
        probs[views],
        balance,
        out,
        titles=always,
        per_row=10,
    )
    return always
