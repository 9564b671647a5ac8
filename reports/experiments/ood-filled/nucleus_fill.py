"""How much of its bounding box the first nucleus the localiser finds fills (the closed
mask's component on the white-balanced working copy, as ``wbc_core.localise`` searches it:
violet first, darkness when no violet nucleus is credible), on every Kaggle, PBC and BCCD
image and on the test suite's generated non-cells. A measurement for a shape check, not
used by the service.

    python reports/experiments/ood-filled/nucleus_fill.py
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from tests.app.test_lab import more_not_cells, not_cells  # noqa: E402
from wbc_core import components  # noqa: E402
from wbc_core.localise import (  # noqa: E402
    DARK_MIN,
    DARK_REL,
    MAX_AREA_FRAC,
    MIN_AREA_FRAC,
    close,
    darkness_score,
    nucleus_threshold,
    percentile,
    violet_score,
    working_copy,
)
from wbc_core.preprocessing import apply_balance, balance_table  # noqa: E402

DATA = Path("../shared/data")
SETS = {
    "kaggle": sorted((DATA / "kaggle-blood-cells").glob("*/*/*.jpeg")),
    "pbc": sorted((DATA / "pbc").glob("*/*.jpg")),
    "bccd": sorted((DATA / "bccd").glob("**/*.jpg")),
}


def first_nucleus_fill(image: Image.Image) -> float | None:
    """Area / box area of the first credible nucleus component; None when none is found."""
    small, _ = working_copy(image.convert("RGB"))
    pixels = np.asarray(small)
    pixels = apply_balance(pixels, balance_table(pixels))
    for score, threshold in (
        (violet_score(pixels), None),
        (darkness_score(pixels), "dark"),
    ):
        if threshold is None:
            threshold = nucleus_threshold(percentile(score, 99.9))
        elif not score.any():
            return None
        else:
            threshold = max(DARK_REL * percentile(score, 99.9), DARK_MIN)
        found = components.find(close(score > threshold))
        if found.count == 0:
            continue
        mass, area = found.sums(np.clip(score, 0, None)), found.areas()
        first = int(np.argmax(mass[1:])) + 1
        if not MIN_AREA_FRAC * score.size <= area[first] <= MAX_AREA_FRAC * score.size:
            continue
        rows, cols = found.objects[first - 1]
        return float(area[first] / ((rows.stop - rows.start) * (cols.stop - cols.start)))
    return None


def main() -> None:
    for name, paths in SETS.items():
        fills = np.array([f for p in paths if (f := first_nucleus_fill(Image.open(p)))])
        print(
            f"{name}: {len(paths)} images, a nucleus in {len(fills)}; its box filled: median "
            f"{np.median(fills):.3f}, 0.999 quantile {np.quantile(fills, 0.999):.3f}, largest "
            f"{fills.max():.3f}"
        )
    for name, image in {**not_cells(), **more_not_cells()}.items():
        fill = first_nucleus_fill(image)
        print(f"  non-cell {name}: " + ("no nucleus" if fill is None else f"{fill:.3f}"))


if __name__ == "__main__":
    main()
