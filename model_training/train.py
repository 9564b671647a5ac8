"""Training: splits, augmentation pipeline, fit, calibration, evaluation, export."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import keras
import numpy as np
import tensorflow as tf

from model_training import machine, metrics
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
from model_training.export import SavedModelRunner, export_savedmodel
from model_training.recipe import Augmentation
from model_training.report import write_report
from wbc_core import cellcheck, localise, ood
from wbc_core.network import make_ensemble, make_model
from wbc_core.preprocessing import (
    BACKGROUND_LEVEL,
    IMAGE_SIZE,
    RESIZE_METHOD,
    balance_of,
    crop_context_of,
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


def augment(
    image: tf.Tensor, label: tf.Tensor, stain: float = 1.0, gamma: float = 0.0
) -> tuple[tf.Tensor, tf.Tensor]:
    """Orientation (a cell has none), a camera's tone curve and stain/illumination jitter
    (other labs, other stains); ``stain`` scales the jitter ranges (1: hue 0.04, saturation
    0.75-1.3, brightness 0.08, contrast 0.8-1.2).

    ``gamma``: another camera's gamma (``camera_gamma``), drawn log-uniformly in
    [1/(1+gamma), 1+gamma]."""
    image = tf.image.random_flip_left_right(image)
    image = tf.image.random_flip_up_down(image)
    image = tf.image.rot90(image, tf.random.uniform([], 0, 4, dtype=tf.int32))
    image = tf.cast(image, tf.float32)
    if gamma > 0:
        image = camera_gamma(
            image, tf.exp(tf.random.uniform([], -math.log1p(gamma), math.log1p(gamma)))
        )
    image = image / 255.0
    if stain > 0:
        image = tf.image.random_hue(image, min(0.5, 0.04 * stain))
        image = tf.image.random_saturation(image, max(0.0, 1 - 0.25 * stain), 1 + 0.3 * stain)
        image = tf.image.random_brightness(image, 0.08 * stain)
        image = tf.image.random_contrast(image, max(0.0, 1 - 0.2 * stain), 1 + 0.2 * stain)
    return tf.clip_by_value(image, 0.0, 1.0) * 255.0, label


def camera_gamma(image: tf.Tensor, g: tf.Tensor | float) -> tf.Tensor:
    """A white-balanced crop (float, 0..255) as it would be had the camera applied gamma
    ``g`` to the whole field: whatever the field's own background level ``b``, gamma then
    balance map ``x`` to ``L * ((x b / L) / 255) ** g / (b / 255) ** g = L * (x / L) ** g``
    with ``L = BACKGROUND_LEVEL``. The background stays; the cell's tones darken (g > 1) or
    lighten (g < 1)."""
    return tf.minimum(BACKGROUND_LEVEL * tf.pow(image / BACKGROUND_LEVEL, g), 255.0)


def scale_shift(images: tf.Tensor, labels: tf.Tensor, jitter: float) -> tuple[tf.Tensor, tf.Tensor]:
    """Random zoom in or out (cell size differs between microscopes and labs) and a small
    shift (the localiser's box is not exact), on a batch; outside the image is black, as in
    the rotated TRAIN views."""
    n = tf.shape(images)[0]
    side = tf.random.uniform([n], 1.0 - jitter, 1.0 + jitter)
    centre = 0.5 + tf.random.uniform([n, 2], -jitter / 2, jitter / 2)
    boxes = tf.stack(
        [
            centre[:, 0] - side / 2,
            centre[:, 1] - side / 2,
            centre[:, 0] + side / 2,
            centre[:, 1] + side / 2,
        ],
        axis=1,
    )
    out = tf.image.crop_and_resize(
        images, boxes, tf.range(n), [IMAGE_SIZE, IMAGE_SIZE], extrapolation_value=0.0
    )
    return out, labels


def sensor_noise(
    images: tf.Tensor, labels: tf.Tensor, sigma_max: float
) -> tuple[tf.Tensor, tf.Tensor]:
    """Camera noise of a random strength, standard deviation up to ``sigma_max`` (0..255
    scale, in the crop), on a batch. Made at half resolution and enlarged: a crop is an
    enlarged piece of the camera's image (about 2x for these cells), so its noise is coarser
    than a pixel. (Gaussian noise of 8 on a whole Kaggle image comes out at about 5.4 in its
    crop, after white balance and resizing: one-off measurement.)"""
    n = tf.shape(images)[0]
    sigma = tf.random.uniform([n, 1, 1, 1], 0.0, sigma_max)
    half = IMAGE_SIZE // 2
    noise = tf.image.resize(tf.random.normal([n, half, half, 3]), [IMAGE_SIZE, IMAGE_SIZE])
    noise = noise / tf.math.reduce_std(noise)  # enlarging smooths it: back to 1 per pixel
    return tf.clip_by_value(images + sigma * noise, 0.0, 255.0), labels


def cutout(images: tf.Tensor, labels: tf.Tensor, side_max: float) -> tuple[tf.Tensor, tf.Tensor]:
    """Cutout (DeVries and Taylor 2017) on a batch: one square of each crop, side drawn
    uniformly up to ``side_max`` x the crop's side and centred anywhere in it (so it may
    hang over the edge), painted the slide-background grey. The network cannot lean on
    one part of the cell (one nucleus lobe, one patch of granules) and must use all."""
    n = tf.shape(images)[0]
    half = tf.random.uniform([n, 1, 1], 0.0, side_max * IMAGE_SIZE / 2)
    centre = tf.random.uniform([n, 2, 1, 1], 0.0, float(IMAGE_SIZE))
    grid = tf.range(IMAGE_SIZE, dtype=tf.float32) + 0.5
    inside_y = tf.abs(grid[None, :, None] - centre[:, 0]) < half
    inside_x = tf.abs(grid[None, None, :] - centre[:, 1]) < half
    erased = tf.logical_and(inside_y, inside_x)[..., None]
    return tf.where(erased, BACKGROUND_LEVEL, images), labels


def mixup(images: tf.Tensor, labels: tf.Tensor, alpha: float) -> tuple[tf.Tensor, tf.Tensor]:
    """Mixup (Zhang et al. 2018) on a batch: each image and its label become
    ``lam * own + (1 - lam) * another's`` from the same batch, ``lam ~ Beta(alpha, alpha)``
    per image (small ``alpha``: mostly near 0 or 1, i.e. mostly one cell). Trains the network
    to move smoothly between classes instead of memorising the few source cells."""
    n = tf.shape(images)[0]
    a = tf.random.gamma([n], alpha)
    b = tf.random.gamma([n], alpha)
    lam = a / tf.maximum(a + b, 1e-12)
    lam = tf.maximum(lam, 1.0 - lam)  # the image keeps its own label as the larger share
    other = tf.random.shuffle(tf.range(n))
    mixed = lam[:, None, None, None] * images + (1.0 - lam[:, None, None, None]) * tf.gather(
        images, other
    )
    mixed_labels = lam[:, None] * labels + (1.0 - lam[:, None]) * tf.gather(labels, other)
    return mixed, mixed_labels


def make_dataset(
    ds: Dataset, batch: int, training: bool, seed: int, aug: Augmentation = Augmentation()
) -> tf.data.Dataset:
    onehot = tf.one_hot(ds.y, len(CLASSES))
    data = tf.data.Dataset.from_tensor_slices((ds.x, onehot))
    if training:
        data = data.shuffle(len(ds.y), seed=seed, reshuffle_each_iteration=True)
        data = data.map(
            lambda x, y: augment(x, y, aug.stain, aug.gamma), num_parallel_calls=tf.data.AUTOTUNE
        ).batch(batch)
        if aug.scale > 0:
            data = data.map(
                lambda x, y: scale_shift(x, y, aug.scale), num_parallel_calls=tf.data.AUTOTUNE
            )
        if aug.noise > 0:
            data = data.map(
                lambda x, y: sensor_noise(x, y, aug.noise), num_parallel_calls=tf.data.AUTOTUNE
            )
        if aug.cutout > 0:
            data = data.map(
                lambda x, y: cutout(x, y, aug.cutout), num_parallel_calls=tf.data.AUTOTUNE
            )
        if aug.mixup > 0:
            data = data.map(
                lambda x, y: mixup(x, y, aug.mixup), num_parallel_calls=tf.data.AUTOTUNE
            )
        return data.prefetch(tf.data.AUTOTUNE)
    else:
        data = data.map(lambda x, y: (tf.cast(x, tf.float32), y))
    return data.batch(batch).prefetch(tf.data.AUTOTUNE)


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
) -> list[keras.callbacks.Callback]:
    """The paper's recipe for ``paper`` (Adam, ReduceLROnPlateau on val accuracy, patience 3,
    factor 0.3; up to ``epochs``, stopping after ``PAPER_PATIENCE`` epochs without progress);
    cosine decay and label smoothing for the others. Both keep the best validation epoch.
    ``weight_decay`` > 0 (not for ``paper``): AdamW's decoupled decay of the convolution and
    dense kernels (not of biases and batch normalisation). ``robust_loss`` > 0 (not for
    ``paper``): ``GeneralizedCrossEntropy`` with that q instead of cross-entropy.
    ``label_smoothing``: of the cross-entropy's targets (it caps the confidence a network
    learns, at 0.925 for 0.1: too low for a site the network gets nearly all right)."""
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
            WBC_LR, decay_steps=steps, warmup_target=None
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
        "input": {
            "size": [IMAGE_SIZE, IMAGE_SIZE, 3],
            "dtype": "float32",
            "range": [0, 255],
            "color": "RGB",
            "resize_method": RESIZE_METHOD,
            "white_balance": True,
            "stain_balance": balance == "stain",
            "crop_context": localise.CROP_CONTEXT,
        },
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


class Calibration(NamedTuple):
    temperature: float
    review_threshold: float
    fitted_on: str


def calibration_of(validated: dict[str, Any]) -> Calibration:
    """A validated run's temperature and review threshold (from its metadata), for a refit
    of its recipe, which has no validation cells left to fit its own on."""
    return Calibration(
        validated["temperature"],
        validated["review_threshold"],
        f"validation of the validated run `{validated.get('command')}`",
    )


def refit_calibration(metadata: dict[str, Any], source: Path) -> tuple[Calibration, dict[str, Any]]:
    """The calibration a refit model (its ``metadata``, or the recipe part of it) takes from
    ``source``, and where from (for its metadata's ``refit.calibration_from``): a validated
    run of its recipe (its temperature and review threshold), or a cross-validation report
    of its recipe, checked to be the same (fitted here on the out-of-fold probabilities:
    every TRAIN view classified by a model that never saw its cell)."""
    oof = Path(source) / "out_of_fold.npz"
    if oof.exists():
        cv = json.loads((Path(source) / "metrics.json").read_text())
        recipe = ("arch", "epochs", *Augmentation().metadata(every=True))
        differ = [k for k in recipe if cv.get(k, 0.0) != metadata.get(k, 0.0)]
        if cv.get("members", 1) != metadata.get("members", 1):
            differ.append("members")
        if cv.get("crop_context", localise.LEGACY_CROP_CONTEXT) != crop_context_of(metadata):
            differ.append("crop_context")
        if cv.get("balance", "white") != balance_of(metadata):
            differ.append("balance")
        if cv.get("excluded_cells", []) != metadata.get("excluded_cells", []):
            differ.append("excluded_cells")
        if differ:
            raise ValueError(f"{source} cross-validated another recipe ({', '.join(differ)})")
        with np.load(oof) as z:
            probs, y = z["probs"], z["y"]
        temperature = metrics.fit_temperature(probs, y)
        threshold = metrics.choose_review_threshold(
            metrics.apply_temperature(probs, temperature), y
        )
        calibration = Calibration(
            temperature,
            threshold,
            f"out-of-fold predictions of the cross-validation `{cv.get('command')}`",
        )
        made = {"path": str(source), "command": cv.get("command")}
    else:
        validated = json.loads((Path(source) / "metadata.json").read_text())
        if "refit" in validated or validated.get("protocol") != "official":
            raise ValueError(f"{source} is not a validated run of the official protocol")
        calibration = calibration_of(validated)
        made = {
            "path": str(source),
            "command": validated.get("command"),
            "created": validated.get("created"),
        }
    return calibration, made


def report_with_cells(ds: Dataset, probs: np.ndarray) -> dict[str, Any]:
    """Table I and the per-source-cell breakdown of one data set."""
    return metrics.classification_report(ds.y, probs) | {
        "cells": metrics.cell_breakdown(ds.y, ds.groups, probs)
    }


def postfit(
    version_dir: Path,
    train_ds: Dataset,
    val_ds: Dataset,
    tests: dict[str, Dataset],
    kept: Calibration | None = None,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    """On the exported model itself: temperature and review threshold fitted on validation
    (or ``kept``: a refit model has no validation of its own), the not-a-cell check from
    training crops, test metrics; all written to metadata.json. Returns the test reports,
    the calibration and the validation report (None with ``kept``); each set runs once."""
    runner = SavedModelRunner(version_dir)
    metadata = runner.metadata
    validation = None
    if kept:
        temperature, threshold, fitted_on = kept
    else:
        val_probs = runner(val_ds.x)
        validation = report_with_cells(val_ds, val_probs)
        temperature = metrics.fit_temperature(val_probs, val_ds.y)
        threshold = metrics.choose_review_threshold(
            metrics.apply_temperature(val_probs, temperature), val_ds.y
        )
        fitted_on = "validation"
    probs = {name: runner(ds.x) for name, ds in tests.items()}
    test_reports = {name: report_with_cells(ds, probs[name]) for name, ds in tests.items()}
    first = next(iter(tests))
    test_probs = probs[first]
    calibrated = metrics.apply_temperature(test_probs, temperature)
    calibration = {
        "fitted_on": fitted_on,
        "reported_on": first,
        "temperature": temperature,
        "ece_before": metrics.expected_calibration_error(test_probs, tests[first].y),
        "ece_after": metrics.expected_calibration_error(calibrated, tests[first].y),
        "review": metrics.review_stats(calibrated, tests[first].y, threshold),
    }
    metadata.update(
        {
            "temperature": temperature,
            "review_threshold": threshold,
            "calibration": calibration,
            "test_metrics": {
                name: {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"], "n": r["n"]}
                for name, r in test_reports.items()
            },
        }
    )
    add_cell_check(metadata, train_ds, tests)
    add_ood_guard(
        metadata,
        version_dir,
        runner,
        [train_ds],
        [val_ds] if not kept and len(val_ds.y) else [train_ds],
    )
    (version_dir / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    return test_reports, calibration, validation


def add_ood_guard(
    metadata: dict[str, Any],
    version_dir: Path,
    runner: SavedModelRunner,
    train_sets: list[Dataset],
    val_sets: list[Dataset],
) -> ood.OodStats | None:
    """Fit the out-of-distribution guard (``ood``) on the training crops' features, its
    threshold on each of ``val_sets`` (one per site), write ``ood.npz`` and record it in
    ``metadata``. None (and nothing written) for a model that exports no features."""
    if not runner.has_features:
        return None
    features = np.concatenate([runner.run(ds.x)[1] for ds in train_sets])
    labels = np.concatenate([ds.y for ds in train_sets])
    stats = ood.fit(features, labels, len(CLASSES))
    stats = ood.with_threshold(stats, [stats.score(runner.run(ds.x)[1]) for ds in val_sets])
    metadata["ood"] = {
        "file": ood.FILENAME,
        "sha256": stats.save(version_dir),
        "threshold": stats.threshold,
        "method": "Mahalanobis distance of the penultimate features to the nearest class "
        "mean, one covariance shared by the classes",
        "fitted_on": "the training crops",
        "threshold_from": f"the {ood.VAL_QUANTILE:g} quantile of each validation set's "
        "distances, the largest",
    }
    return stats


def stain_variants(
    x: np.ndarray,
    stain: float,
    copies: int = 2,
    seed: int = 0,
    sample: int = 3000,
    gamma: float = 0.0,
) -> np.ndarray:
    """A sample of training crops, each also as ``copies`` stain- (and gamma-) jittered
    versions: the colours the network was trained to classify."""
    picked = x[:: max(1, len(x) // sample)]
    tf.random.set_seed(seed)  # before map: its random ops take their seeds when traced
    data = tf.data.Dataset.from_tensor_slices(picked).repeat(copies)
    data = data.map(lambda im: augment(im, 0, stain, gamma)[0]).batch(256)
    jittered = np.concatenate([np.round(b.numpy()).astype(np.uint8) for b in data])
    return np.concatenate([picked, jittered])


def add_cell_check(metadata: dict[str, Any], train_ds: Dataset, tests: dict[str, Dataset]) -> None:
    """Fit the not-a-cell gamut on the training crops and their stain-jittered versions, so
    that a cell the network was trained to classify under another stain is not turned away;
    record false rejections on tests."""
    stain = float(metadata.get("stain_jitter", 1.0))
    gamma = float(metadata.get("gamma_jitter", 0.0))
    params = cellcheck.fit(stain_variants(train_ds.x, stain, gamma=gamma), originals=train_ds.x)
    check = cellcheck.CellCheck(params)
    # every Kaggle/BCCD field is localised (reports/localisation), so the gamut decides here
    params["false_rejection"] = {
        name: float(np.mean([not check.is_cell(x, True) for x in ds.x]))
        for name, ds in tests.items()
    }
    metadata["cell_check"] = params
