"""Command line: ``python -m model_training {train,evaluate} ...``."""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m model_training")
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train, evaluate and export a SavedModel")
    tr.add_argument("--protocol", choices=("official", "paper"), default="official")
    tr.add_argument("--data", type=Path, default=Path("../shared/data/kaggle-blood-cells"))
    tr.add_argument("--out", type=Path, default=Path("models/wbc-classifier"))
    tr.add_argument("--arch", choices=("wbc", "paper", "tiny"), default="wbc")
    tr.add_argument("--epochs", type=int, default=12)
    tr.add_argument("--batch-size", type=int, default=32)
    tr.add_argument("--seed", type=int, default=42)
    tr.add_argument("--version", type=int, default=1)
    tr.add_argument("--cache", type=Path, default=Path(".cache/arrays"))
    tr.add_argument("--report", type=Path, default=None,
                    help="report folder (default reports/<protocol>)")
    tr.add_argument("--max-train", type=int, default=None, help="cap training images (smoke)")
    ev = sub.add_parser("evaluate", help="evaluate a SavedModel on a class-folder tree")
    ev.add_argument("--model", type=Path, required=True)
    ev.add_argument("--data", type=Path, required=True)
    ev.add_argument("--cache", type=Path, default=None)
    cc = sub.add_parser("cellcheck", help="(re)fit the not-a-cell check of an exported model")
    cc.add_argument("--model", type=Path, required=True)
    cc.add_argument("--data", type=Path, default=Path("../shared/data/kaggle-blood-cells"))
    cc.add_argument("--cache", type=Path, default=Path(".cache/arrays"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    if args.command == "train":
        from model_training.train import train

        summary = train(args.protocol, args.data, args.out, arch=args.arch, epochs=args.epochs,
                        batch_size=args.batch_size, seed=args.seed, version=args.version,
                        cache_dir=args.cache, max_train=args.max_train,
                        report_dir=args.report or Path("reports") / args.protocol)
        print(json.dumps({k: summary[k] for k in ("protocol", "arch", "train_seconds",
                                                    "model_dir")} |
                         {"test": {n: {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"]}
                                   for n, r in summary["test"].items()}}))
    elif args.command == "cellcheck":
        from model_training.train import add_cell_check, official_splits, paper_splits

        meta_path = args.model / "metadata.json"
        metadata = json.loads(meta_path.read_text())
        splitter = official_splits if metadata["protocol"] == "official" else paper_splits
        train_ds, _, tests = splitter(args.data, args.cache, metadata.get("seed", 42))
        add_cell_check(metadata, train_ds, tests)
        meta_path.write_text(json.dumps(metadata, indent=2) + "\n")
        print(json.dumps(metadata["cell_check"]["false_rejection"]))
    else:
        from model_training.evaluate import evaluate

        evaluate(args.model, args.data, args.cache)


if __name__ == "__main__":
    main()
