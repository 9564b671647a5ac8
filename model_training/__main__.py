"""Command line: ``python -m model_training {train,evaluate,calibrate,robustness,tta,cv,
cv-compare,recipe} ...``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from pathlib import Path

from model_training.recipe import Augmentation

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# wbc_core.network.ARCHS, spelt out so that --help needs no keras import (a test checks)
ARCH_CHOICES = ("wbc", "wbc-fine", "wbc-robust", "paper", "tiny")


def add_recipe(parser: argparse.ArgumentParser) -> None:
    """The training recipe's options, shared by ``train`` and ``cv``."""
    parser.add_argument("--arch", choices=ARCH_CHOICES, default="wbc")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--cache", type=Path, default=Path(".cache/arrays"))
    parser.add_argument(
        "--scale-jitter",
        type=float,
        default=0.0,
        help="random zoom/shift amplitude in training, e.g. 0.15 (0: off)",
    )
    parser.add_argument(
        "--stain-jitter",
        type=float,
        default=1.0,
        help="scale of the hue/saturation/brightness/contrast jitter (0: off)",
    )
    parser.add_argument(
        "--noise-jitter",
        type=float,
        default=0.0,
        help="camera noise in training, standard deviation up to this on the "
        "0-255 scale, e.g. 8 (0: off)",
    )
    parser.add_argument(
        "--mixup",
        type=float,
        default=0.0,
        metavar="ALPHA",
        help="mixup of training images and labels within a batch, share drawn "
        "from Beta(ALPHA, ALPHA), e.g. 0.2 (0: off)",
    )
    parser.add_argument(
        "--gamma-jitter",
        type=float,
        default=0.0,
        help="another camera's gamma in training, drawn in [1/(1+G), 1+G] "
        "with the slide background kept, e.g. 0.5 (0: off)",
    )
    parser.add_argument(
        "--cutout",
        type=float,
        default=0.0,
        metavar="SIDE",
        help="cutout in training: one background-grey square per crop, side "
        "up to SIDE x the crop's (0: off)",
    )
    parser.add_argument(
        "--weight-decay",
        type=float,
        default=0.0,
        help="AdamW's decoupled weight decay of the kernels (0: Adam)",
    )
    parser.add_argument(
        "--robust-loss",
        type=float,
        default=0.0,
        metavar="Q",
        help="generalized cross-entropy (1 - p^Q) / Q, which pulls less on "
        "labels the network confidently disputes, e.g. 0.5 (0: "
        "cross-entropy)",
    )
    parser.add_argument(
        "--crop-context",
        type=float,
        default=None,
        help="crop side / cell box side for this run (an experiment: the "
        "service serves models made at localise.CROP_CONTEXT only)",
    )
    parser.add_argument(
        "--exclude-cells",
        type=Path,
        default=None,
        metavar="FILE",
        help="source cells (one per line, e.g. neutrophil/BloodImage_00016) "
        "left out of training; cv still scores them in their own fold",
    )
    parser.add_argument(
        "--stain-balance",
        action="store_true",
        help="stain balance in the preprocessing: the red cells around each "
        "white cell take the reference stain's colour (recorded in the "
        "model's metadata; the service does as the model was trained)",
    )


def augmentation(args: argparse.Namespace) -> Augmentation:
    return Augmentation(
        scale=args.scale_jitter,
        stain=args.stain_jitter,
        noise=args.noise_jitter,
        mixup=args.mixup,
        gamma=args.gamma_jitter,
        cutout=args.cutout,
        weight_decay=args.weight_decay,
        robust_loss=args.robust_loss,
    )


def balance(args: argparse.Namespace) -> str:
    """The preprocessing's balance (``preprocessing.BALANCES``) the options ask for."""
    return "stain" if args.stain_balance else "white"


def recipe_flags(metadata: dict) -> list[str]:
    """The ``train``/``cv`` options that trained the model whose metadata.json this is: the
    one record of a shipped recipe (``make train`` reads it from the shipped model)."""
    flags = [f"--{k}={metadata[k]}" for k in ("arch", "epochs", "seed")]
    flags.append(f"--members={metadata.get('members', 1)}")
    flags += [
        f"--{k.replace('_', '-')}={metadata.get(k, v):g}"
        for k, v in Augmentation().metadata(every=True).items()
    ]
    crop = metadata.get("input", {}).get("crop_context")
    stain = metadata.get("input", {}).get("stain_balance", False)
    excluded = metadata.get("excluded_cells_file")
    return (
        flags
        + ([f"--crop-context={crop:g}"] if crop else [])
        + (["--stain-balance"] if stain else [])
        + ([f"--exclude-cells={excluded}"] if excluded else [])
    )


SITE_COMMANDS = (
    "split",
    "train-sites",
    "cross-site",
    "evaluate-sites",
    "refit-cell-check",
    "refit-ood",
    "blend-sites",
)
SITE_HELP = "a site, NAME=PATH (repeat for several)"


def add_site_commands(sub: argparse._SubParsersAction) -> None:
    """The multi-site commands (``model_training.sites``, ``multisite``, ``site_eval``)."""
    sp = sub.add_parser("split", help="make a site's fixed train/val/test split file (once)")
    sp.add_argument("--data", required=True, help=SITE_HELP)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--splits-dir", type=Path, default=None)
    for name, text in (
        ("train-sites", "train one model on several sites, export it and report each site"),
        ("cross-site", "leave one lab out: train on the other sites, test on each site in turn"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--data", action="append", required=True, help=SITE_HELP)
        p.add_argument("--arch", choices=ARCH_CHOICES, default="wbc")
        p.add_argument("--epochs", type=int, default=14)
        p.add_argument(
            "--steps-per-epoch",
            type=int,
            default=None,
            help="default: the training images of all sites / batch size",
        )
        p.add_argument("--batch-size", type=int, default=32)
        p.add_argument("--seed", type=int, default=42)
        p.add_argument("--cache", type=Path, default=Path(".cache/arrays"))
        p.add_argument("--max-minutes", type=float, default=None)
        p.add_argument(
            "--grey",
            type=float,
            default=None,
            help="share of crops made grey (default 0.1; 0: none)",
        )
        p.add_argument(
            "--lowres",
            type=float,
            default=None,
            help="crops shrunk by up to this factor and enlarged back, half the time "
            "(default 1: off)",
        )
        p.add_argument(
            "--crop-context",
            type=float,
            default=None,
            help="crop side / cell box side for this run (an experiment: the "
            "service serves models made at localise.CROP_CONTEXT only)",
        )
        p.add_argument(
            "--randconv",
            type=float,
            default=None,
            help="share of crops through a random convolution (RandConv; default 0)",
        )
        p.add_argument(
            "--learning-rate",
            type=float,
            default=None,
            help="where the cosine decay of the learning rate starts (default 2e-3)",
        )
        p.add_argument(
            "--hue-turn",
            type=float,
            default=None,
            help="share of crops whose hue is turned anywhere on the colour circle (default 0)",
        )
        p.add_argument(
            "--label-smoothing",
            type=float,
            default=0.0,
            help="of the cross-entropy's targets; it caps what confidence the network learns",
        )
        p.add_argument(
            "--stain-balance",
            action="store_true",
            help="stain balance in the preprocessing (see train --stain-balance)",
        )
        if name == "train-sites":
            p.add_argument("--out", type=Path, default=Path("models/wbc-classifier"))
            p.add_argument("--version", type=int, default=3)
            p.add_argument("--report", type=Path, default=Path("reports/model"))
            p.add_argument(
                "--init",
                type=Path,
                default=None,
                help="a version folder whose network to go on training (default: random weights)",
            )
            p.add_argument(
                "--held-out",
                action="append",
                default=[],
                help=SITE_HELP + ": test sets read, nothing trained on",
            )
        else:
            p.add_argument("--out", type=Path, default=Path("reports/cross-site"))
    ev = sub.add_parser("evaluate-sites", help="report an exported model on each site")
    ev.add_argument("--model", type=Path, required=True)
    ev.add_argument("--data", action="append", required=True, help=SITE_HELP)
    ev.add_argument("--cache", type=Path, default=Path(".cache/arrays"))
    ev.add_argument("--out", type=Path, required=True)
    for name, what, files in (
        ("refit-cell-check", "not-a-cell gamut", "metadata.json"),
        ("refit-ood", "out-of-distribution guard", "ood.npz and metadata.json"),
    ):
        rc = sub.add_parser(
            name,
            help=f"fit an exported model's {what} again on its sites' training crops, with "
            f"the current recipe (model_training/postfit.py), in its {files}",
        )
        rc.add_argument("--model", type=Path, required=True, help="a version folder")
        rc.add_argument("--data", action="append", required=True, help=SITE_HELP)
        rc.add_argument("--cache", type=Path, default=Path(".cache/arrays"))
    bl = sub.add_parser(
        "blend-sites",
        help="a network between a trained version and the one it was trained on from "
        "(each weight (1 - alpha) x --start + alpha x --end), exported and reported as "
        "train-sites exports and reports a trained one",
    )
    bl.add_argument("--data", action="append", required=True, help=SITE_HELP)
    bl.add_argument("--start", type=Path, required=True, help="the version trained on from")
    bl.add_argument("--end", type=Path, required=True, help="the version trained from it")
    bl.add_argument("--alpha", type=float, required=True, help="0: --start, 1: --end")
    bl.add_argument("--cache", type=Path, default=Path(".cache/arrays"))
    bl.add_argument("--out", type=Path, default=Path("models/wbc-classifier"))
    bl.add_argument("--version", type=int, required=True)
    bl.add_argument("--report", type=Path, default=Path("reports/model"))


def run_site_command(args: argparse.Namespace, argv: list[str] | None) -> None:
    from model_training.sites import make_split, parse_site, parse_sites, split_path, write_split

    command = "python -m model_training " + shlex.join(argv or sys.argv[1:])
    if args.command == "split":
        site = parse_site(args.data)
        path = split_path(site.name, args.splits_dir)
        rows = make_split(site.root, args.seed)
        write_split(rows, path, args.seed)
        print(json.dumps({"file": str(path), "images": len(rows)}))
        return
    if args.command == "refit-cell-check":
        from model_training.postfit import refit_cell_check

        print(json.dumps(refit_cell_check(args.model, parse_sites(args.data), args.cache, command)))
        return
    if args.command == "refit-ood":
        from model_training.postfit import refit_ood_guard

        record = refit_ood_guard(args.model, parse_sites(args.data), args.cache, command)
        print(json.dumps(record, default=float))
        return
    if args.command == "evaluate-sites":
        from model_training.site_eval import evaluate_model

        print(
            json.dumps(
                evaluate_model(args.model, parse_sites(args.data), args.cache, args.out, command),
                default=float,
            )
        )
        return
    from dataclasses import replace

    from model_training import multisite

    if args.command == "blend-sites":
        summary = multisite.blend_sites(
            parse_sites(args.data),
            args.out,
            args.start,
            args.end,
            args.alpha,
            version=args.version,
            cache=args.cache,
            report_dir=args.report,
            command=command,
        )
        print(json.dumps(summary, default=float)[:4000])
        return
    from model_training.augment import SiteAugmentation

    aug = SiteAugmentation()
    if args.grey is not None:
        aug = replace(aug, grey=args.grey)
    if args.lowres is not None:
        aug = replace(aug, lowres=args.lowres)
    if args.randconv is not None:
        aug = replace(aug, randconv=args.randconv)
    if args.hue_turn is not None:
        aug = replace(aug, hue_turn=args.hue_turn)
    common = {
        "arch": args.arch,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "cache": args.cache,
        "aug": aug,
        "steps_per_epoch": args.steps_per_epoch,
        "label_smoothing": args.label_smoothing,
        "max_minutes": args.max_minutes,
        "command": command,
        "balance": balance(args),
    }
    if args.learning_rate is not None:
        common["learning_rate"] = args.learning_rate
    if args.command == "train-sites":
        summary = multisite.train_sites(
            parse_sites(args.data),
            args.out,
            version=args.version,
            report_dir=args.report,
            held_out=parse_sites(args.held_out),
            init=args.init,
            **common,
        )
    else:
        summary = multisite.cross_site(parse_sites(args.data), args.out, **common)
    print(json.dumps(summary, default=float)[:4000])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m model_training")
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train, evaluate and export a SavedModel")
    tr.add_argument("--protocol", choices=("official", "paper"), default="official")
    tr.add_argument("--data", type=Path, default=Path("../shared/data/kaggle-blood-cells"))
    tr.add_argument("--out", type=Path, default=Path("models/wbc-classifier"))
    add_recipe(tr)
    tr.add_argument("--version", type=int, default=1)
    tr.add_argument(
        "--report",
        type=Path,
        default=None,
        help="report folder (default reports/experiments/PROTOCOL)",
    )
    tr.add_argument("--max-train", type=int, default=None, help="cap training images (smoke)")
    tr.add_argument(
        "--refit",
        type=Path,
        default=None,
        metavar="DIR",
        help="train on all of TRAIN (validation cells included) for the fixed "
        "epochs; temperature and review threshold come from DIR: the same "
        "recipe's validated run, or its cross-validation report (cv --out)",
    )
    tr.add_argument(
        "--members",
        type=int,
        default=1,
        help="train this many networks (other seeds) and export one model "
        "averaging their probabilities (default 1)",
    )
    tr.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="stop after the epoch that would let the next end past this budget; "
        "the best validation epoch is kept",
    )
    ev = sub.add_parser("evaluate", help="evaluate a SavedModel on a class-folder tree")
    ev.add_argument("--model", type=Path, required=True)
    ev.add_argument("--data", type=Path, required=True)
    ev.add_argument("--cache", type=Path, default=None)
    ev.add_argument(
        "--errors",
        type=Path,
        default=None,
        metavar="PNG",
        help="also draw the misclassified images (field with the box found, crop "
        "the network saw, label and answer) into this PNG",
    )
    cc = sub.add_parser(
        "calibrate",
        help="(re)fit temperature, review threshold and the "
        "not-a-cell check of an exported model; update its report",
    )
    cc.add_argument("--model", type=Path, required=True)
    cc.add_argument("--data", type=Path, default=Path("../shared/data/kaggle-blood-cells"))
    cc.add_argument("--cache", type=Path, default=Path(".cache/arrays"))
    cc.add_argument("--report", type=Path, default=None, help="default reports/experiments/P")
    cc.add_argument(
        "--calibration-from",
        type=Path,
        default=None,
        metavar="DIR",
        help="a refit model: take temperature and review threshold from a "
        "validated run of its recipe, or fit them on the out-of-fold "
        "predictions of a cross-validation report (cv --out) of its recipe",
    )
    for name, text in (
        (
            "robustness",
            "accuracy under stain, colour-cast, focus, "
            "magnification, noise and JPEG perturbations, on validation cells and "
            "TEST_SIMPLE",
        ),
        (
            "tta",
            "test-time augmentation (flips, quarter turns) against the single "
            "crop, on a validated run's validation cells",
        ),
    ):
        mr = sub.add_parser(name, help=text)
        mr.add_argument("--model", type=Path, required=True)
        mr.add_argument("--data", type=Path, default=Path("../shared/data/kaggle-blood-cells"))
        mr.add_argument("--cache", type=Path, default=Path(".cache/arrays"))
        mr.add_argument(
            "--out",
            type=Path,
            default=None,
            help=f"report folder, e.g. reports/experiments/{name} (default: print only)",
        )
        if name == "robustness":
            mr.add_argument(
                "--bccd",
                type=Path,
                default=None,
                metavar="DIR",
                help="also measure on BCCD's original 640x480 photographs of "
                "TEST's cells (twice the pixels, whole fields)",
            )
            mr.add_argument(
                "--site",
                default=None,
                metavar="NAME=PATH",
                help="also answer a one-tree site's validation and test splits (e.g. "
                "pbc=../shared/data/pbc) under another stain's hue and a small frame the "
                "cell fills",
            )
    cv = sub.add_parser(
        "cv",
        help="cross-validate a recipe over TRAIN's source cells, grouped by cell (TEST not read)",
    )
    cv.add_argument("--data", type=Path, default=Path("../shared/data/kaggle-blood-cells"))
    cv.add_argument("--folds", type=int, default=4)
    add_recipe(cv)
    cv.add_argument(
        "--members",
        type=int,
        default=1,
        help="networks per fold, classifying by their mean probabilities; the "
        "first alone is scored too (default 1)",
    )
    cv.add_argument("--out", type=Path, default=Path("reports/experiments/crossval"))
    cc2 = sub.add_parser(
        "cv-compare",
        help="the source cells each cross-validation report got wrong, side by side (markdown)",
    )
    cc2.add_argument("reports", type=Path, nargs="+", help="cv --out folders")
    cc2.add_argument(
        "--sheet",
        type=Path,
        default=None,
        metavar="PNG",
        help="also draw the cells wrong in every report, one view each",
    )
    cc2.add_argument("--data", type=Path, default=Path("../shared/data/kaggle-blood-cells"))
    cc2.add_argument("--cache", type=Path, default=Path(".cache/arrays"))
    sr = sub.add_parser(
        "stain-reference",
        help="measure the stain balance's reference "
        "(median optical density around the white cells of DATA/TRAIN)",
    )
    sr.add_argument("--data", type=Path, default=Path("../shared/data/kaggle-blood-cells"))
    op = sub.add_parser(
        "operating-points",
        help="review thresholds for target accuracies of "
        "the unflagged answers, chosen out of fold, read on TEST",
    )
    op.add_argument("--model", type=Path, required=True)
    op.add_argument("--data", type=Path, default=Path("../shared/data/kaggle-blood-cells"))
    op.add_argument("--cache", type=Path, default=Path(".cache/arrays"))
    op.add_argument(
        "--from",
        dest="source",
        type=Path,
        default=None,
        metavar="DIR",
        help="cross-validation report (cv --out) whose out-of-fold answers choose "
        "the thresholds (default: the one the model was calibrated on)",
    )
    op.add_argument("--out", type=Path, default=Path("reports/experiments/operating-points"))
    add_site_commands(sub)
    co = sub.add_parser(
        "corrections",
        help="write the reviewed cells of final specimens as a class-folder tree",
    )
    co.add_argument("--database", required=True, help="the service's WBC_DATABASE_URL")
    co.add_argument("--out", type=Path, required=True)
    se = sub.add_parser(
        "serving-export",
        help="write a version's CPU serving artefacts (model.tflite, gradcam.npz), checked",
    )
    se.add_argument("--model", type=Path, required=True, help="a version folder")
    rc = sub.add_parser("recipe", help="print the train/cv options a model was trained with")
    rc.add_argument("--model", type=Path, required=True)
    args = parser.parse_args(argv)
    if getattr(args, "crop_context", None):
        from wbc_core import localise

        localise.CROP_CONTEXT = args.crop_context  # before any crop is made
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    if args.command == "train":
        from model_training.train import train

        summary = train(
            args.protocol,
            args.data,
            args.out,
            arch=args.arch,
            epochs=args.epochs,
            batch_size=args.batch_size,
            seed=args.seed,
            version=args.version,
            cache_dir=args.cache,
            max_train=args.max_train,
            aug=augmentation(args),
            refit=args.refit,
            max_minutes=args.max_minutes,
            members=args.members,
            balance=balance(args),
            exclude=args.exclude_cells,
            report_dir=args.report or Path("reports/experiments") / args.protocol,
        )
        print(
            json.dumps(
                {k: summary[k] for k in ("protocol", "arch", "train_seconds", "model_dir")}
                | {
                    "test": {
                        n: {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"]}
                        for n, r in summary["test"].items()
                    }
                }
            )
        )
    elif args.command == "calibrate":
        from model_training.data import concat
        from model_training.postfit import Calibration, postfit, refit_calibration
        from model_training.report import write_report
        from model_training.train import official_splits, paper_splits
        from wbc_core.preprocessing import balance_of

        metadata = json.loads((args.model / "metadata.json").read_text())
        splitter = official_splits if metadata["protocol"] == "official" else paper_splits
        train_ds, val_ds, tests = splitter(
            args.data, args.cache, metadata.get("seed", 42), balance_of(metadata)
        )
        kept = None
        if "refit" in metadata:  # validation cells are in its training set: keep what it has
            train_ds = concat([train_ds, val_ds])
            kept = Calibration(
                metadata["temperature"],
                metadata["review_threshold"],
                metadata["calibration"]["fitted_on"],
            )
            if args.calibration_from:  # ... or take a (new) validated run's, as a refit does
                kept, made = refit_calibration(metadata, args.calibration_from)
                metadata["refit"]["calibration_from"] = made  # postfit reads and adds to it
                (args.model / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
        test_reports, calibration, _ = postfit(args.model, train_ds, val_ds, tests, kept)
        report_dir = args.report or Path("reports/experiments") / metadata["protocol"]
        if (report_dir / "metrics.json").exists():
            summary = json.loads((report_dir / "metrics.json").read_text())
            summary.update({"test": test_reports, "calibration": calibration})
            if "refit" in summary:  # where its calibration now comes from
                summary["refit"] = json.loads((args.model / "metadata.json").read_text())["refit"]
            summary["calibrate_command"] = "python -m model_training " + shlex.join(
                argv or sys.argv[1:]
            )
            write_report(report_dir, summary, None)
        print(json.dumps(calibration))
    elif args.command == "robustness":
        from model_training.robustness import run
        from model_training.sites import parse_site

        record = run(
            args.model,
            args.data,
            args.cache,
            args.out,
            "python -m model_training " + shlex.join(argv or sys.argv[1:]),
            args.bccd,
            parse_site(args.site) if args.site else None,
        )
        print(json.dumps(record["summary"]))
    elif args.command == "cv":
        from model_training import crossval

        record = crossval.cross_validate(
            args.data,
            args.folds,
            args.arch,
            args.epochs,
            args.batch_size,
            args.seed,
            augmentation(args),
            args.cache,
            args.members,
            balance(args),
            args.exclude_cells,
        )
        crossval.write(
            args.out, record, "python -m model_training " + shlex.join(argv or sys.argv[1:])
        )
        print(
            json.dumps(
                {
                    "views_accuracy": record["views"]["accuracy"],
                    "cells_accuracy": record["cells"]["accuracy"],
                    "cells_wrong": record["cells_wrong"],
                }
            )
        )
    elif args.command == "cv-compare":
        from model_training.crossval import compare, sheet_of_always_wrong

        print(compare(args.reports), end="")
        if args.sheet:
            sheet_of_always_wrong(args.reports, args.data, args.cache, args.sheet)
    elif args.command == "stain-reference":
        from model_training.data import list_samples
        from wbc_core.preprocessing import stain_reference

        reference, counted = stain_reference([s.path for s in list_samples(args.data / "TRAIN")])
        print(
            json.dumps(
                {"stain_reference_od": [round(float(v), 3) for v in reference], "images": counted}
            )
        )
    elif args.command == "operating-points":
        from model_training.operating_points import operating_points

        record = operating_points(
            args.model,
            args.data,
            args.out,
            "python -m model_training " + shlex.join(argv or sys.argv[1:]),
            args.cache,
            args.source,
        )
        print(json.dumps([{k: row[k] for k in ("target", "threshold")} for row in record["rows"]]))
    elif args.command in SITE_COMMANDS:
        run_site_command(args, argv)
    elif args.command == "corrections":
        from model_training.corrections import export_corrections

        print(json.dumps(export_corrections(args.database, args.out)))
    elif args.command == "serving-export":
        from model_training.serving_export import add_serving_artefacts

        print(json.dumps(add_serving_artefacts(args.model)["serving"], indent=2))
    elif args.command == "recipe":
        print(" ".join(recipe_flags(json.loads((args.model / "metadata.json").read_text()))))
    elif args.command == "tta":
        from model_training.tta import run as run_tta

        record = run_tta(
            args.model,
            args.data,
            args.cache,
            args.out,
            "python -m model_training " + shlex.join(argv or sys.argv[1:]),
        )
        print(json.dumps(record["schemes"]))
    else:
        from model_training.evaluate import evaluate

        evaluate(args.model, args.data, args.cache, args.errors)


if __name__ == "__main__":
    main()
