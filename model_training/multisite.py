"""Training on several laboratories at once, and leave-one-lab-out evaluation.

    python -m model_training train-sites --data kaggle=../shared/data/kaggle-blood-cells \
        --data pbc=../shared/data/pbc --version 3 --out models/wbc-classifier \
        --report reports/model
    python -m model_training cross-site --data kaggle=... --data pbc=... \
        --out reports/cross-site

One network, depthwise-separable at its core (``network.make_model``), trained from
scratch on a stream that draws every site equally often (``augment.site_balanced``) with
the augmentation of ``augment.SiteAugmentation``. Temperature and review threshold are
fitted on the validation cells of every site; the out-of-distribution guard (``ood``) on
the training crops' features, its threshold on every site's validation cells.
``blend-sites`` makes a version between two trained ones (weight-space ensembling) and
finishes it the same way.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from model_training import machine, metrics, site_eval
from model_training.augment import SiteAugmentation, site_balanced
from model_training.data import CLASSES
from model_training.export import SavedModelRunner, export_savedmodel, input_contract
from model_training.postfit import add_cell_check, add_ood_guard
from model_training.report import plot_curves
from model_training.sites import Site, SiteData, load_site, pooled, split_path
from model_training.train import WBC_LR, TimeBudget, compile_model
from wbc_core.network import make_model
from wbc_core.preprocessing import balance_of

log = logging.getLogger(__name__)
SUMMARY_KEYS = ("accuracy", "macro_f1", "n", "ece", "guard", "risk_coverage_area", "per_class")


def site_record(d: SiteData) -> dict[str, Any]:
    """What metadata.json records of a site: where, how split, how many images."""
    record: dict[str, Any] = {
        "root": str(d.site.root),
        "counts": d.counts(),
        "train_fingerprint": d.train.fingerprint(),
    }
    if d.site.publisher_split:
        record["split"] = "publisher's TRAIN/TEST folders; validation: grouped share of TRAIN"
    else:
        path = split_path(d.site.name)
        record["split"] = f"model_training/splits/{path.name}"
        record["split_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return record


def fit_sites(
    data: list[SiteData],
    arch: str,
    epochs: int,
    batch_size: int,
    seed: int,
    aug: SiteAugmentation,
    steps_per_epoch: int | None,
    callbacks: list[keras.callbacks.Callback],
    label_smoothing: float = 0.0,
    init: Path | None = None,
    learning_rate: float = WBC_LR,
) -> tuple[keras.Model, dict, int]:
    """Fit one network on the site-balanced stream; returns it, its history and the steps
    per epoch. ``init``: a version folder whose network's weights it starts from (to
    go on training a shipped network on a changed stream) instead of random ones."""
    keras.utils.set_random_seed(seed)
    steps = steps_per_epoch or math.ceil(sum(len(d.train.y) for d in data) / batch_size)
    model = make_model(arch)
    if init is not None:
        load_weights(model, init)
    compile_model(
        model,
        arch,
        steps * epochs,
        epochs,
        validate=False,
        label_smoothing=label_smoothing,
        learning_rate=learning_rate,
    )
    stream = site_balanced([d.train for d in data], batch_size, seed, aug)
    history = model.fit(
        stream, epochs=epochs, steps_per_epoch=steps, callbacks=callbacks, verbose=2
    )
    return model, history.history, steps


def load_weights(model: keras.Model, version_dir: Path) -> None:
    """Set ``model``'s weights to those of the SavedModel in ``version_dir``, variable by
    variable in the order the export tracked them (``model.variables``'; layer names carry
    counters that differ from process to process); an error when the two networks differ
    in the number or shape of their variables."""
    saved = tf.saved_model.load(str(version_dir)).variables
    mine = model.variables
    if len(saved) != len(mine) or any(
        tuple(a.shape) != tuple(b.shape) for a, b in zip(saved, mine, strict=True)
    ):
        raise ValueError(f"{version_dir} holds another network than {model.name}")
    for variable, value in zip(mine, saved, strict=True):
        variable.assign(value.numpy())


def calibrate(runner: SavedModelRunner, data: list[SiteData], metadata: dict[str, Any]) -> None:
    """Temperature and review threshold fitted on every site's validation cells, written
    into ``metadata``."""
    probs = np.concatenate([runner(d.val.x) for d in data])
    y = np.concatenate([d.val.y for d in data])
    temperature = metrics.fit_temperature(probs, y)
    threshold = metrics.choose_review_threshold(metrics.apply_temperature(probs, temperature), y)
    metadata.update(
        {
            "temperature": temperature,
            "review_threshold": threshold,
            "calibration": {
                "fitted_on": "validation cells of every site: "
                + ", ".join(d.site.name for d in data)
            },
        }
    )


def train_sites(
    sites: list[Site],
    out: Path,
    *,
    arch: str = "wbc",
    epochs: int = 14,
    batch_size: int = 32,
    seed: int = 42,
    version: int = 1,
    cache: Path | None = Path(".cache/arrays"),
    aug: SiteAugmentation = SiteAugmentation(),
    steps_per_epoch: int | None = None,
    label_smoothing: float = 0.0,
    report_dir: Path | None = None,
    max_minutes: float | None = None,
    held_out: list[Site] | None = None,
    command: str | None = None,
    init: Path | None = None,
    learning_rate: float = WBC_LR,
    balance: str = "white",
) -> dict[str, Any]:
    """Train on ``sites``, export version ``version`` under ``out`` (SavedModel,
    metadata.json, ood.npz), and write a report per site (and per ``held_out`` site, whose
    test sets only are read) into ``report_dir``. ``balance``: the preprocessing's balance
    (``preprocessing.BALANCES``; ``"stain"`` adds the stain balance), recorded in the model's
    input contract so that the service prepares images the same way."""
    command = command or ("python -m model_training " + shlex.join(sys.argv[1:]))
    tf.config.experimental.enable_op_determinism()
    data = [load_site(s, cache, seed, balance) for s in sites]
    for d in data:
        log.info("site %s: %s", d.site.name, d.counts())
    callbacks: list[keras.callbacks.Callback] = []
    budget = TimeBudget(max_minutes) if max_minutes else None
    if budget:
        callbacks.append(budget)
    start = time.perf_counter()
    model, history, steps = fit_sites(
        data,
        arch,
        epochs,
        batch_size,
        seed,
        aug,
        steps_per_epoch,
        callbacks,
        label_smoothing,
        init=init,
        learning_rate=learning_rate,
    )
    train_seconds = time.perf_counter() - start
    metadata: dict[str, Any] = {
        "name": "wbc-classifier",
        "version": str(version),
        "classes": list(CLASSES),
        "input": input_contract(balance),
        "protocol": "sites",
        "arch": arch,
        "epochs": len(history.get("loss", [])),
        "steps_per_epoch": steps,
        "batch_size": batch_size,
        "seed": seed,
        "augmentation": aug.metadata(),
        "label_smoothing": label_smoothing,
        "learning_rate": learning_rate,
        "initial_weights": None if init is None else str(init),
        "sites": {d.site.name: site_record(d) for d in data},
        "train_seconds": round(train_seconds, 1),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command,
    }
    others = [load_site(s, cache, seed, balance) for s in held_out or []]
    summary = finish(model, metadata, Path(out) / str(version), data, others, report_dir)
    if report_dir:
        plot_curves(history, Path(report_dir) / "curves")
    return summary


def finish(
    model: keras.Model,
    metadata: dict[str, Any],
    version_dir: Path,
    data: list[SiteData],
    others: list[SiteData],
    report_dir: Path | None,
) -> dict[str, Any]:
    """Export a trained network to ``version_dir`` with ``metadata``, fit what every
    version carries (temperature and review threshold, the not-a-cell gamut, the
    out-of-distribution guard) on ``data``'s sites, report each site (``others``: held out,
    their test sets only) into ``report_dir``; returns the summary."""
    command = metadata["command"]
    export_savedmodel(model, version_dir, metadata)
    runner = SavedModelRunner(version_dir)
    calibrate(runner, data, metadata)
    add_cell_check(
        metadata,
        pooled([d.train for d in data]),
        {f"{d.site.name}/{n}": t for d in data for n, t in d.tests.items()},
    )
    stats = add_ood_guard(
        metadata, version_dir, runner, [d.train for d in data], [d.val for d in data]
    )
    summary: dict[str, Any] = {
        "command": command,
        "train_seconds": metadata["train_seconds"],
        "machine": machine.describe(),
        "steps_per_epoch": metadata["steps_per_epoch"],
        "epochs_run": metadata["epochs"],
        "sites": {},
    }
    metadata["test_metrics"] = {}
    for d, role in [(d, "trained on") for d in data] + [(d, "held out") for d in others]:
        records = site_eval.report_site(runner, metadata, d, role, stats, report_dir, command)
        summary["sites"][d.site.name] = {
            "role": role,
            "counts": d.counts(),
            "sets": {n: {k: r[k] for k in SUMMARY_KEYS} for n, r in records.items()},
        }
        metadata["test_metrics"][d.site.name] = {
            n: {k: r[k] for k in ("accuracy", "macro_f1", "n", "ece")}
            for n, r in records.items()
            if n != "validation"
        }
    (version_dir / "metadata.json").write_text(json.dumps(metadata, indent=2, default=float) + "\n")
    if report_dir:
        site_eval.dump(Path(report_dir) / "metrics.json", summary)
        site_eval.write_index(
            Path(report_dir),
            f"Model trained on {', '.join(d.site.name for d in data)}",
            summary["sites"],
            command,
        )
    return summary


def blend_sites(
    sites: list[Site],
    out: Path,
    start: Path,
    end: Path,
    alpha: float,
    *,
    version: int,
    cache: Path | None = Path(".cache/arrays"),
    report_dir: Path | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """A network whose every variable is ``(1 - alpha)`` x ``start``'s + ``alpha`` x
    ``end``'s, where ``end`` was trained on from ``start`` (weight-space ensembling of a
    fine-tuned network with the one it started from, WiSE-FT: Wortsman et al. 2022):
    exported as version ``version`` under ``out`` and finished as ``train_sites`` finishes
    a trained one (``finish``) on ``sites``, which must be ``end``'s. Its recipe
    (architecture, seed, augmentation, balance) is ``end``'s; nothing is trained."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], not {alpha}")
    command = command or ("python -m model_training " + shlex.join(sys.argv[1:]))
    recipe = json.loads((Path(end) / "metadata.json").read_text())
    trained = sorted(recipe.get("sites", {}))
    if sorted(s.name for s in sites) != trained:
        raise ValueError(f"{end} was trained on sites {trained}: give exactly those")
    balance = balance_of(recipe)
    seed = int(recipe["seed"])
    data = [load_site(s, cache, seed, balance) for s in sites]
    model = make_model(recipe["arch"])
    load_weights(model, start)
    first = [v.numpy() for v in model.variables]
    load_weights(model, end)
    for variable, a in zip(model.variables, first, strict=True):
        variable.assign((1.0 - alpha) * a + alpha * variable.numpy())
    metadata: dict[str, Any] = {
        key: recipe[key]
        for key in (
            "name",
            "classes",
            "input",
            "protocol",
            "arch",
            "epochs",
            "steps_per_epoch",
            "batch_size",
            "seed",
            "augmentation",
            "label_smoothing",
            "learning_rate",
            "initial_weights",
        )
    } | {
        "version": str(version),
        "blend": {"start": str(start), "end": str(end), "alpha": alpha},
        "sites": {d.site.name: site_record(d) for d in data},
        "train_seconds": 0.0,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command,
    }
    return finish(model, metadata, Path(out) / str(version), data, [], report_dir)


def cross_site(sites: list[Site], out: Path, **kwargs: Any) -> dict[str, Any]:
    """Leave one lab out: for each site, train on the others and evaluate on its test sets.
    Models go to a temporary folder (they are not shipped); reports to ``out/<site>``."""
    if len(sites) < 2:
        raise ValueError("cross-site needs at least two sites")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for held in sites:
            trained = [s for s in sites if s is not held]
            summary = train_sites(
                trained,
                Path(tmp) / f"without-{held.name}",
                report_dir=Path(out) / f"without-{held.name}",
                held_out=[held],
                **kwargs,
            )
            results[held.name] = summary["sites"][held.name] | {
                "trained_on": [s.name for s in trained],
                "command": summary["command"],
            }
    site_eval.dump(Path(out) / "metrics.json", results)
    write_cross_site_index(Path(out), results)
    return results


def write_cross_site_index(out: Path, results: dict[str, Any]) -> None:
    """``out``/README.md: each laboratory as seen by a model that never saw it."""
    lines = [
        "# Leave one lab out\n",
        f"Produced by:\n\n    {next(iter(results.values()))['command']}\n",
        "Each row: a model trained on the other site(s) only, by the recipe of the command "
        "above, tested on this site's test sets. The nearest measure here of "
        "how the model does in a laboratory it has never seen. Each direction's folder has "
        "the held-out site's report (confusion matrices, reliability, risk-coverage).\n",
        "| held-out site | trained on | set | images | accuracy | macro-F1 | ECE | released "
        "| accuracy of released | wrong and released | out of distribution |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for site, rec in results.items():
        for name, r in rec["sets"].items():
            lines.append(
                f"| [{site}](without-{site}/{site}.md) | {', '.join(rec['trained_on'])} | "
                f"{name} | {r['n']} | {site_eval.figure_cells(r)} | "
                f"{r['guard']['out_of_distribution_share']:.1%} |"
            )
    (out / "README.md").write_text("\n".join(lines) + "\n")
