"""Which part of the not-a-cell check turns away a held-out site's test cells, and by how
much: ``python reports/experiments/cross-site-randconv08-seed43/gamut_margin.py
--site pbc=../shared/data/pbc MODEL_VERSION_DIR ...`` (from the repository root) prints,
for each model's fitted gamut, the share of the site's test crops below the in-gamut floor
and below the stained-share floor, and the quantiles of their in-gamut share; then the same
shares of the generated non-cell images of ``tests/test_shipped_model.py`` that the
localiser finds a cell in (those it does not are answered `unknown` before the gamut). Beside
each, the network's out-of-distribution score (``wbc_core.ood``: distance of its features
from the training classes) against its threshold and the test cells' quantiles."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository: tests/
from model_training.export import SavedModelRunner
from model_training.sites import load_site, parse_site
from tests.app.conftest import encode
from tests.app.test_lab import more_not_cells, not_cells
from wbc_core import cellcheck
from wbc_core.ood import OodStats
from wbc_core.preprocessing import balance_of, preprocess_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--site", required=True, help="name=folder of the held-out site")
    parser.add_argument("--cache", type=Path, default=Path(".cache/arrays"))
    parser.add_argument("models", nargs="+", type=Path, help="exported model version folders")
    args = parser.parse_args()
    crops = load_site(parse_site(args.site), args.cache).tests["test"].x
    non_cells = {
        name: encode(image, "PNG") for name, image in {**not_cells(), **more_not_cells()}.items()
    }
    for model in args.models:
        runner, ood = SavedModelRunner(model), OodStats.load(model)
        check = cellcheck.CellCheck(runner.metadata["cell_check"])
        shares = np.array([check.fractions(crop) for crop in crops])
        below_gamut = shares[:, 0] < check.min_fraction
        below_stained = shares[:, 1] < check.min_stained
        q05, q25, q50, q75 = np.quantile(shares[:, 0], [0.05, 0.25, 0.5, 0.75])
        print(
            f"{model}: in-gamut floor {check.min_fraction:.3f}, stained floor "
            f"{check.min_stained:.3f}; of {len(crops)} test crops below the in-gamut floor "
            f"{below_gamut.mean():.1%}, below the stained floor {below_stained.mean():.1%}, "
            f"either {(below_gamut | below_stained).mean():.1%}; in-gamut share quantiles "
            f"0.05 {q05:.3f}, 0.25 {q25:.3f}, median {q50:.3f}, 0.75 {q75:.3f}"
        )
        scores = ood.score(runner.run(crops)[1])
        q50, q95, q99 = np.quantile(scores, [0.5, 0.95, 0.99])
        print(
            f"  out-of-distribution threshold {ood.threshold:.1f}; test cells above it "
            f"{np.mean(scores > ood.threshold):.1%}; their scores: median {q50:.1f}, "
            f"0.95 {q95:.1f}, 0.99 {q99:.1f}"
        )
        balance = balance_of(runner.metadata)
        for name, data in non_cells.items():
            crop = preprocess_bytes(data, balance=balance)
            if not crop.box.localised:
                continue
            gamut, stained = check.fractions(crop.array)
            verdict = "passes" if check.is_cell(crop.array, True) else "turned away"
            score = ood.score(runner.run(crop.array[None])[1])[0]
            print(
                f"  non-cell {name}: in-gamut {gamut:.3f}, stained {stained:.3f}: {verdict}; "
                f"out-of-distribution score {score:.1f}"
            )


if __name__ == "__main__":
    main()
