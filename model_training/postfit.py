"""After export, on the exported model itself: calibration (temperature, review threshold),
the not-a-cell check, the out-of-distribution guard, test metrics, all written into the
version's metadata.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf

from model_training import metrics
from model_training.augment import augment
from model_training.data import CLASSES, DataError, Dataset
from model_training.export import SavedModelRunner
from model_training.recipe import Augmentation
from model_training.sites import load_site, pooled
from wbc_core import cellcheck, localise, ood
from wbc_core.preprocessing import balance_of, crop_context_of


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


# Hue turns (shares of the colour circle) of another stain, for the not-a-cell gamut of a
# network trained on random convolutions of its crops (random colour mappings): it is
# trained to classify cells of any hue. Every 0.05 (turns 0.1 apart left the colours between
# them out) up to 0.3, a brown-red stain: PBC validation cells turned by 0.15 and filling
# their frame were answered `unknown` for 44-47% with turns of 0.1 and 0.2, 0.1-2.2% with
# these; turned by 0.3, 98-100% with turns up to 0.2, 0.2-0.4% with these; the whole circle
# let generated noise pass as a cell (reports/experiments/cell-check-filled).
OTHER_STAIN_HUES = tuple(round(k * 0.05, 2) for k in range(-6, 7) if k)


def _batched(fn: Any, x: np.ndarray, size: int = 256) -> np.ndarray:
    """``fn`` (0..255 floats out) over ``x`` in batches of ``size``, rounded to uint8."""
    return np.concatenate(
        [
            np.round(fn(x[i : i + size])).clip(0, 255).astype(np.uint8)
            for i in range(0, len(x), size)
        ]
    )


def filled(x: np.ndarray) -> np.ndarray:
    """The centre of each crop enlarged by ``CROP_CONTEXT`` to the crop's size: the cell box
    filling the crop, as in an analyser's or another lab's single-cell image."""
    side = x.shape[1]
    inner = round(side / localise.CROP_CONTEXT)
    start = (side - inner) // 2
    centre = x[:, start : start + inner, start : start + inner]
    return _batched(lambda b: tf.image.resize(b, (side, side)).numpy(), centre)


def stain_variants(
    x: np.ndarray,
    stain: float,
    copies: int = 2,
    seed: int = 0,
    sample: int = 3000,
    gamma: float = 0.0,
    hues: tuple[float, ...] = (),
    fill: bool = False,
) -> list[np.ndarray]:
    """A sample of training crops (with ``fill``, also their ``filled`` centres) with
    ``copies`` stain- (and gamma-) jittered versions of each, then the sample turned by each
    of ``hues``, a group each: the looks the network was trained to classify."""
    picked = x[:: max(1, len(x) // sample)]
    if fill:
        picked = np.concatenate([picked, filled(picked)])
    tf.random.set_seed(seed)  # before map: its random ops take their seeds when traced
    data = tf.data.Dataset.from_tensor_slices(picked).repeat(copies)
    data = data.map(lambda im: augment(im, 0, stain, gamma)[0]).batch(256)
    jittered = np.concatenate([np.round(b.numpy()).astype(np.uint8) for b in data])
    turned = [
        _batched(lambda b, h=h: tf.image.adjust_hue(b / 255.0, h).numpy() * 255, picked)
        for h in hues
    ]
    return [np.concatenate([picked, jittered]), *turned]


def trained_on_filled(metadata: dict[str, Any]) -> bool:
    """Whether the network's zoom augmentation reaches crops the cell box fills (an
    analyser's or another lab's single-cell image): such crops are then a look it was
    trained to classify, for the not-a-cell gamut and the out-of-distribution guard."""
    zoom = (metadata.get("augmentation") or {}).get("zoom") or (1.0, 1.0)
    return max(zoom) >= localise.CROP_CONTEXT


def add_cell_check(metadata: dict[str, Any], train_ds: Dataset, tests: dict[str, Dataset]) -> None:
    """Fit the not-a-cell gamut on the training crops and their stain-jittered versions, so
    that a cell the network was trained to classify under another stain is not turned away
    (and their hue turns, for a network trained on random convolutions; and the crops'
    centres the cell fills, for a network whose zoom augmentation reaches that far:
    reports/experiments/cell-check-filled); record false rejections on tests."""
    stain = float(metadata.get("stain_jitter", 1.0))
    gamma = float(metadata.get("gamma_jitter", 0.0))
    randconv = float((metadata.get("augmentation") or {}).get("randconv", 0.0))
    hues = OTHER_STAIN_HUES if randconv > 0 else ()
    fill = trained_on_filled(metadata)
    params = cellcheck.fit(
        stain_variants(train_ds.x, stain, gamma=gamma, hues=hues, fill=fill),
        originals=train_ds.x,
    )
    params["hues"] = list(hues)
    params["filled"] = fill
    check = cellcheck.CellCheck(params)
    # the gamut alone, as on a localised cell: what it turns away of each test set
    params["false_rejection"] = {
        name: float(np.mean([not check.is_cell(x, True) for x in ds.x]))
        for name, ds in tests.items()
    }
    metadata["cell_check"] = params


def trained_sites(model: Path, sites: list[Any], cache: Path | None) -> tuple[dict, list]:
    """A version folder's metadata and the data of the sites it was trained on, loaded as
    it was trained (its seed and balance); an error unless ``sites`` are exactly those."""
    metadata = json.loads((Path(model) / "metadata.json").read_text())
    trained = sorted(metadata.get("sites", {}))
    if sorted(s.name for s in sites) != trained:
        raise DataError(f"{model} was trained on sites {trained}: give exactly those")
    seed = int(metadata.get("seed", 42))
    return metadata, [load_site(s, cache, seed, balance_of(metadata)) for s in sites]


def refit_cell_check(model: Path, sites: list[Any], cache: Path | None, command: str) -> dict:
    """The model's not-a-cell gamut fitted again by ``add_cell_check`` on the training crops
    of the sites it was trained on (the same sites, or an error), written to its
    ``metadata.json``; returns the gamut's record without its bins."""
    metadata, data = trained_sites(model, sites, cache)
    tests = {f"{d.site.name}/{n}": t for d in data for n, t in d.tests.items()}
    add_cell_check(metadata, pooled([d.train for d in data]), tests)
    metadata["cell_check"]["command"] = command
    (Path(model) / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    return {k: v for k, v in metadata["cell_check"].items() if k != "allowed"}


def add_ood_guard(
    metadata: dict[str, Any],
    version_dir: Path,
    runner: SavedModelRunner,
    train_sets: list[Dataset],
    val_sets: list[Dataset],
) -> ood.OodStats | None:
    """Fit the out-of-distribution guard (``ood``) on the training crops' features (and on
    their centres the cell fills, ``filled``, for a network trained on such crops:
    ``trained_on_filled``), its threshold on each of ``val_sets`` (one per site, as they
    are), write ``ood.npz`` and record it in ``metadata``. None (and nothing written) for a
    model that exports no features."""
    if not runner.has_features:
        return None
    fill = trained_on_filled(metadata)
    crops = [ds.x for ds in train_sets] + ([filled(ds.x) for ds in train_sets] if fill else [])
    features = np.concatenate([runner.run(x)[1] for x in crops])
    labels = np.concatenate([ds.y for ds in train_sets] * (2 if fill else 1))
    stats = ood.fit(features, labels, len(CLASSES))
    stats = ood.with_threshold(stats, [stats.score(runner.run(ds.x)[1]) for ds in val_sets])
    metadata["ood"] = {
        "file": ood.FILENAME,
        "sha256": stats.save(version_dir),
        "threshold": stats.threshold,
        "method": "Mahalanobis distance of the penultimate features to the nearest class "
        "mean, one covariance shared by the classes",
        "fitted_on": "the training crops"
        + (" and their centres the cell fills (enlarged to the crop)" if fill else ""),
        "threshold_from": f"the {ood.VAL_QUANTILE:g} quantile of each validation set's "
        "distances, the largest",
    }
    return stats


def refit_ood_guard(model: Path, sites: list[Any], cache: Path | None, command: str) -> dict:
    """The model's out-of-distribution guard fitted again by ``add_ood_guard`` on the
    training crops of the sites it was trained on (the same sites, or an error): its
    ``ood.npz`` and ``metadata.json`` rewritten; returns the guard's record."""
    metadata, data = trained_sites(model, sites, cache)
    runner = SavedModelRunner(Path(model))
    train, val = [d.train for d in data], [d.val for d in data]
    if add_ood_guard(metadata, Path(model), runner, train, val) is None:
        raise DataError(f"{model} exports no features: it has no guard to fit")
    metadata["ood"]["command"] = command
    (Path(model) / "metadata.json").write_text(json.dumps(metadata, indent=2, default=float) + "\n")
    return metadata["ood"]
