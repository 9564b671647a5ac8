"""Why PBC validation cells in other laboratories' looks are answered `unknown` by a model
version: not localised, or below its not-a-cell gamut's in-gamut floor, or below its
stained-share floor (``wbc_core.cellcheck``), and where the in-gamut shares lie.

    python reports/experiments/ood-filled/unknown_looks.py models/wbc-classifier/7
"""

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from model_training.robustness import site_looks, site_split  # noqa: E402
from model_training.sites import parse_sites  # noqa: E402
from wbc_core.cellcheck import CellCheck  # noqa: E402
from wbc_core.preprocessing import balance_of, prepare  # noqa: E402

LOOKS = (
    "brown-red stain (dyes swapped)",
    "cell fills a 120x120 frame, stain hue +0.15",
    "cell fills a 120x120 frame, brown-red stain (dyes swapped)",
)


def main() -> None:
    model = Path(sys.argv[1])
    metadata = json.loads((model / "metadata.json").read_text())
    check = CellCheck(metadata["cell_check"])
    print(f"{model}: in-gamut floor {check.min_fraction}, stained floor {check.min_stained}")
    cells = site_split(parse_sites(["pbc=../shared/data/pbc"])[0], "val")
    looks = site_looks()
    for name in LOOKS:
        lost = below_gamut = below_stained = 0
        shares = []
        for path in cells.paths:
            crop = prepare(looks[name](Image.open(path).convert("RGB")), balance_of(metadata))
            if not crop.box.localised:
                lost += 1
                continue
            gamut, stained = check.fractions(crop.array)
            shares.append(gamut)
            below_gamut += gamut < check.min_fraction
            below_stained += stained < check.min_stained
        q05, median = np.quantile(shares, [0.05, 0.5])
        print(
            f"  {name}: {len(cells.paths)} cells; not localised {lost}, below the in-gamut "
            f"floor {below_gamut}, below the stained floor {below_stained}; in-gamut share "
            f"0.05 quantile {q05:.3f}, median {median:.3f}"
        )


if __name__ == "__main__":
    main()
