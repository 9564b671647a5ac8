"""This experiment's rule: the localiser before (``wbc_core/localise.py`` of the commit
before the change, from a worktree) and after, on the same white-balanced working copies.

    git worktree add --detach /tmp/wbc-before-box-fill 5b6c0eb
    python reports/experiments/straight-edged-nucleus/check.py /tmp/wbc-before-box-fill
"""

import importlib.util
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from fastapi.testclient import TestClient  # noqa: E402

from app.config import Settings  # noqa: E402
from app.main import create_app  # noqa: E402
from model_training.robustness import site_looks, site_split  # noqa: E402
from model_training.sites import parse_sites  # noqa: E402
from tests.app.conftest import encode  # noqa: E402
from tests.app.test_lab import more_not_cells, not_cells  # noqa: E402
from wbc_core import localise  # noqa: E402
from wbc_core.preprocessing import apply_balance, balance_table  # noqa: E402

DATA = Path("../shared/data")


def old_localiser(tree: Path):  # noqa: ANN201 - a module
    spec = importlib.util.spec_from_file_location("old_localise", tree / "wbc_core/localise.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_localise"] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


def boxes(module, image: Image.Image) -> list[list[int]]:  # noqa: ANN001
    """``find_cells`` as ``preprocessing.measure`` calls it (white-balanced working copy)."""
    small, scale = localise.working_copy(image)
    pixels = np.asarray(small)
    pixels = apply_balance(pixels, balance_table(pixels))
    return [[*b.as_list(), b.localised] for b in module.find_cells(image, (pixels, scale))]


def main() -> None:
    old = old_localiser(Path(sys.argv[1]))
    sets = {
        "kaggle": sorted((DATA / "kaggle-blood-cells").glob("*/*/*.jpeg")),
        "pbc": sorted((DATA / "pbc").glob("*/*.jpg")),
        "bccd": sorted((DATA / "bccd").glob("**/*.jpg")),
    }
    for name, paths in sets.items():
        moved = [
            p
            for p in paths
            if boxes(old, im := Image.open(p).convert("RGB")) != boxes(localise, im)
        ]
        shown = [str(p) for p in moved[:5]]
        print(f"{name}: {len(paths)} images, boxes moved on {len(moved)}: {shown}")
    cells = site_split(parse_sites(["pbc=../shared/data/pbc"])[0], "val")
    images = [Image.open(p).convert("RGB") for p in cells.paths]
    for look, perturb in site_looks().items():
        if look == "none":
            continue
        moved = sum(boxes(old, im) != boxes(localise, im) for im in map(perturb, images))
        print(f"pbc validation, {look}: {len(images)} cells, boxes moved on {moved}")
    with TestClient(create_app(Settings())) as client:
        for name, image in {**not_cells(), **more_not_cells()}.items():
            body = client.post(
                "/predict", files={"file": (f"{name}.png", encode(image, "PNG"), "image/png")}
            ).json()
            before, after = boxes(old, image)[0][4], boxes(localise, image)[0][4]
            print(
                f"  non-cell {name}: localised before {before}, after {after}; shipped model "
                f"now: {body['label']}, review {body['needs_review']} {body['review_reasons']}"
            )


if __name__ == "__main__":
    main()
