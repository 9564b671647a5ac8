"""Training on one site's protocols (``official``, ``paper``): splits, the loss and optimiser,
fit, export (augmentation: ``augment``; calibration and guards: ``postfit``)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from model_training import machine
from model_training.augment import make_dataset
from model_training.data import (
    CLASSES,
    Dataset,
    concat,
    exclusion_record,
    grouped_split,
    load_folder,
    random_split,
    without_cells,
)
from model_training.export import export_savedmodel, input_contract
from model_training.postfit import postfit, refit_calibration
from model_training.recipe import Augmentation
from model_training.report import write_report
from wbc_core.network import make_ensemble, make_model
from wbc_core.preprocessing import (
    balance_of,
)

log = logging.getLogger(__name__)

VAL_FRACTION = 0.15  # share of TRAIN's source cells held out for validation (official)
LABEL_SMOOTHING = 0.1
PAPER_LR = 1e-3
PAPER_PATIENCE = 8  # epochs without a better val accuracy before the paper recipe stops
WBC_LR = 2e-3


def official_splits(
    root: Path, cache: Path | None, seed: int, balance: str = "white"
) -> tuple[Dataset, Dataset, dict[str, Dataset]]:
    """Train and validation from TRAIN, grouped by source cell; test on TEST, TEST_SIMPLE.
    ``balance``: ``preprocessing.BALANCES`` ("none" only to re-examine models before v5)."""
    full = load_folder(root / "TRAIN", cache, balance=balance)
    rest, held = grouped_split(full.groups, full.y, VAL_FRACTION, seed)
    tests = {
        name: load_folder(root / name, cache, balance=balance) for name in ("TEST", "TEST_SIMPLE")
    }
    train, val = full.subset(rest), full.subset(held)
    train.skipped = full.skipped
    return train, val, tests


def paper_splits(
    root: Path, cache: Path | None, seed: int, balance: str = "white"
) -> tuple[Dataset, Dataset, dict[str, Dataset]]:
    """The paper's random 80/10/10 split of all files: views of one cell leak across it."""
    pooled = concat(
        [load_folder(root / n, cache, balance=balance) for n in ("TRAIN", "TEST", "TEST_SIMPLE")]
    )
    tr, va, te = random_split(len(pooled.y), seed)
    train = pooled.subset(tr)
    train.skipped = pooled.skipped
    return train, pooled.subset(va), {"random_test": pooled.subset(te)}


class TimeBudget(keras.callbacks.Callback):
    """Stop after the epoch that would let the next one end past ``minutes`` of training."""

    def __init__(self, minutes: float) -> None:
        super().__init__()
        self.seconds = minutes * 60
        self.stopped = False

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.start = self.last = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        now = time.perf_counter()
        if now - self.start + (now - self.last) > self.seconds:
            log.warning(
                "time budget of %.0f min reached after epoch %d", self.seconds / 60, epoch + 1
            )
            self.stopped = self.model.stop_training = True
        self.last = now


class GeneralizedCrossEntropy(keras.losses.Loss):
    """Zhang and Sabuncu's (2018) loss for noisy labels: the (smoothed) label's weights of
    ``(1 - p^q) / q`` over each class's probability ``p``. Its gradient is cross-entropy's
    times ``p^q``, so a label the network confidently disputes (as it will a wrong label
    once it has learned the class) pulls less; ``q`` -> 0 is cross-entropy."""

    def __init__(
        self,
        q: float,
        label_smoothing: float = LABEL_SMOOTHING,
        reduction: str | None = "sum_over_batch_size",
    ) -> None:
        super().__init__(name=f"generalized_cross_entropy_{q:g}", reduction=reduction)
        self.q, self.label_smoothing = q, label_smoothing

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        y = y_true * (1 - self.label_smoothing) + self.label_smoothing / y_true.shape[-1]
        p = keras.ops.clip(y_pred, keras.backend.epsilon(), 1.0)
        return keras.ops.sum(y * (1 - keras.ops.power(p, self.q)) / self.q, axis=-1)


def compile_model(
    model: keras.Model,
    arch: str,
    steps: int,
    epochs: int,
    validate: bool = True,
    weight_decay: float = 0.0,
    robust_loss: float = 0.0,
    label_smoothing: float = LABEL_SMOOTHING,
    learning_rate: float = WBC_LR,
) -> list[keras.callbacks.Callback]:
    """The paper's recipe for ``paper`` (Adam, ReduceLROnPlateau on val accuracy, patience 3,
    factor 0.3; up to ``epochs``, stopping after ``PAPER_PATIENCE`` epochs without progress);
    cosine decay and label smoothing for the others. Both keep the best validation epoch.
    ``weight_decay`` > 0 (not for ``paper``): AdamW's decoupled decay of the convolution and
    dense kernels (not of biases and batch normalisation). ``robust_loss`` > 0 (not for
    ``paper``): ``GeneralizedCrossEntropy`` with that q instead of cross-entropy.
    ``label_smoothing``: of the cross-entropy's targets (it caps the confidence a network
    learns, at 0.925 for 0.1: too low for a site the network gets nearly all right).
    ``learning_rate``: where the cosine decay starts (not for ``paper``)."""
    if arch == "paper":
        optimizer = keras.optimizers.Adam(PAPER_LR)
        loss = keras.losses.CategoricalCrossentropy()
        callbacks = [
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_accuracy", factor=0.3, patience=3, verbose=1
            )
        ]
    else:
        schedule = keras.optimizers.schedules.CosineDecay(
            learning_rate, decay_steps=steps, warmup_target=None
        )
        if weight_decay > 0:
            optimizer = keras.optimizers.AdamW(schedule, weight_decay=weight_decay)
            optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
        else:
            optimizer = keras.optimizers.Adam(schedule)
        loss = (
            GeneralizedCrossEntropy(robust_loss)
            if robust_loss > 0
            else keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
        )
        callbacks = []
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    if validate:
        patience = PAPER_PATIENCE if arch == "paper" else epochs
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_accuracy", patience=patience, restore_best_weights=True
            )
        )
    return callbacks


def fit_network(
    train_ds: Dataset,
    val_ds: Dataset | None,
    arch: str,
    epochs: int,
    batch_size: int,
    seed: int,
    aug: Augmentation,
    callbacks: list[keras.callbacks.Callback] | None = None,
) -> tuple[keras.Model, keras.callbacks.History]:
    """Build and fit the network: the recipe of ``compile_model``, the augmentation of
    ``make_dataset``; without ``val_ds``, for the fixed ``epochs``."""
    # the same command and seed train the same network: without this, multi-threaded CPU
    # kernels and the parallel augmentation made two runs differ (TEST_SIMPLE 0.901 vs 0.930,
    # reports/experiments/official-v5-validated-rerun); a one-off probe found no slowdown
    tf.config.experimental.enable_op_determinism()
    steps = epochs * math.ceil(len(train_ds.y) / batch_size)
    model = make_model(arch)
    callbacks = compile_model(
        model,
        arch,
        steps,
        epochs,
        validate=val_ds is not None,
        weight_decay=aug.weight_decay,
        robust_loss=aug.robust_loss,
    ) + list(callbacks or [])
    history = model.fit(
        make_dataset(train_ds, batch_size, True, seed, aug),
        epochs=epochs,
        validation_data=None if val_ds is None else make_dataset(val_ds, 128, False, seed),
        callbacks=callbacks,
        verbose=2,
    )
    return model, history


def fit_members(
    train_ds: Dataset,
    val_ds: Dataset | None,
    arch: str,
    epochs: int,
    batch_size: int,
    seed: int,
    aug: Augmentation,
    members: int = 1,
    callbacks: list[keras.callbacks.Callback] | None = None,
) -> list[tuple[keras.Model, keras.callbacks.History]]:
    """``members`` networks of one recipe, fitted one after another (``fit_network``):
    network ``j`` from seed ``seed + 1000 * j``; the first from the seeding the caller has
    set, so that one member trains exactly as a single network does. ``callbacks`` go to
    the first only."""
    fitted = []
    for j in range(members):
        if j:
            keras.utils.set_random_seed(seed + 1000 * j)
        fitted.append(
            fit_network(
                train_ds,
                val_ds,
                arch,
                epochs,
                batch_size,
                seed + 1000 * j,
                aug,
                None if j else callbacks,
            )
        )
    return fitted


def train(
    protocol: str,
    data_root: Path,
    out: Path,
    arch: str = "wbc",
    epochs: int = 12,
    batch_size: int = 32,
    seed: int = 42,
    version: int = 1,
    cache_dir: Path | None = Path(".cache/arrays"),
    report_dir: Path | None = None,
    max_train: int | None = None,
    aug: Augmentation = Augmentation(),
    refit: Path | None = None,
    max_minutes: float | None = None,
    members: int = 1,
    balance: str = "white",
    exclude: Path | None = None,
) -> dict[str, Any]:
    """Run one full training and write the SavedModel, metadata.json and report.

    ``refit``: a validated run of the same recipe, or a cross-validation report of it
    (``cv --out``). The run then trains on all of TRAIN, validation cells included (there are
    only 16 monocyte source cells in TRAIN), for the fixed number of epochs, and takes its
    temperature and review threshold from there (``refit_calibration``), as nothing is left
    to fit them on.

    ``members`` > 1: that many networks trained one after another (seeds ``seed + 1000 *
    member``, the first as a single network's) and exported as one model averaging their
    probabilities (``network.make_ensemble``); ``max_minutes`` and the curves concern the
    first.

    ``balance``: ``"white"`` (models v5-v7) or ``"stain"`` (white and stain balance).

    ``exclude``: a file of TRAIN's source cells (``data.read_cell_list``) left out of
    training (a validated run still validates on those that fall in its validation cells).
    """
    if balance not in ("white", "stain"):
        raise ValueError(f"balance must be 'white' or 'stain', not {balance!r}")
    if refit and (protocol != "official" or arch == "paper"):
        raise ValueError(
            "--refit needs the official protocol and a fixed schedule "
            "(the paper's recipe steers its learning rate by validation)"
        )
    from_cv = bool(refit) and (Path(refit) / "out_of_fold.npz").exists()
    reference = (
        json.loads((Path(refit) / "metadata.json").read_text()) if refit and not from_cv else {}
    )
    if refit and not from_cv and balance_of(reference) != balance:
        raise ValueError(
            f"--refit {refit}: that model's preprocessing balanced "
            f"{balance_of(reference)!r}, this run's {balance!r}; its calibration "
            "does not carry over"
        )
    recipe = {
        "input": input_contract(balance),
        "protocol": protocol,
        "arch": arch,
        "epochs": epochs,
        "seed": seed,
        **({"members": members} if members > 1 else {}),
        **aug.metadata(),
    }
    cells_out, excluded_record = exclusion_record(exclude)
    recipe |= excluded_record
    # before training: a refit against another recipe's report fails now, not after it
    kept, made = refit_calibration(recipe, Path(refit)) if refit else (None, None)
    keras.utils.set_random_seed(seed)
    command = "python -m model_training " + shlex.join(sys.argv[1:]) if sys.argv[1:] else ""
    splitter = official_splits if protocol == "official" else paper_splits
    train_ds, val_ds, tests = splitter(Path(data_root), cache_dir, seed, balance)
    if max_train:
        train_ds = train_ds.subset(np.arange(min(max_train, len(train_ds.y))))
    if protocol == "official":
        overlap = set(train_ds.groups) & set(val_ds.groups)
        assert not overlap, f"source cells on both sides of the split: {sorted(overlap)[:5]}"
    if refit:  # concat keeps train_ds's skipped files (a subset carries none)
        train_ds = concat([train_ds, val_ds])
    if cells_out:
        train_ds = without_cells(
            train_ds, cells_out, np.concatenate([train_ds.groups, val_ds.groups])
        )
    callbacks: list[keras.callbacks.Callback] = []
    budget = TimeBudget(max_minutes) if max_minutes else None
    if budget:  # EarlyStopping restores the best validation epoch whoever stops the run
        callbacks.append(budget)
    if report_dir:  # the curve so far survives an interrupted run
        Path(report_dir).mkdir(parents=True, exist_ok=True)
        callbacks.append(keras.callbacks.CSVLogger(str(Path(report_dir) / "history.csv")))
    n_val = 0 if refit else len(val_ds.y)
    log.info("training %s on %d images, validating on %d", arch, len(train_ds.y), n_val)
    start = time.perf_counter()
    fitted = fit_members(
        train_ds, None if refit else val_ds, arch, epochs, batch_size, seed, aug, members, callbacks
    )
    networks, histories = [m for m, _ in fitted], [h for _, h in fitted]
    model = make_ensemble(networks) if members > 1 else networks[0]
    history = histories[0]
    train_seconds = time.perf_counter() - start

    version_dir = Path(out) / str(version)
    metadata: dict[str, Any] = {
        "name": Path(out).name,
        "version": str(version),
        "classes": list(CLASSES),
        **recipe,
        "data_fingerprint": {
            name: ds.fingerprint()
            for name, ds in (
                {"train": train_ds} | ({} if refit else {"val": val_ds}) | tests
            ).items()
        },
        "train_seconds": round(train_seconds, 1),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command,
    }
    if refit:
        metadata["refit"] = {
            "validation": "none: trained on all of TRAIN",
            "calibration_from": made,
        }
    export_savedmodel(model, version_dir, metadata)
    test_reports, calibration, validation = postfit(version_dir, train_ds, val_ds, tests, kept)

    summary = {
        "protocol": protocol,
        "arch": arch,
        "members": members,
        "command": command,
        "epochs_run": len(history.history.get("loss", [])),
        "last_train_accuracy": [round(float(h.history["accuracy"][-1]), 4) for h in histories],
        "train_seconds": round(train_seconds, 1),
        "machine": machine.describe(),
        "n_train": int(len(train_ds.y)),
        "n_val": n_val,
        "refit": metadata.get("refit"),
        "skipped": len(train_ds.skipped) + sum(len(t.skipped) for t in tests.values()),
        "val_accuracy_best": (
            float(max(history.history["val_accuracy"]))
            if "val_accuracy" in history.history
            else None
        ),
        "validation": validation,
        "test": test_reports,
        "calibration": calibration,
        "model_dir": str(version_dir),
        "stopped_by_time_budget": f"{max_minutes:g} min" if budget and budget.stopped else None,
    }
    if report_dir:
        write_report(Path(report_dir), summary, history.history)
    return summary
