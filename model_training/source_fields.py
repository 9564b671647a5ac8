"""Which BCCD photograph each Kaggle image was made from: the true source-cell groups.

The Kaggle folder's README says that files sharing split, class and ``k`` (``_<k>_<n>.jpeg``)
are views of one cell. They are not: the views filed under one ``k`` show many different
cells, and each cell's views are spread over every ``k`` of its class (see
``reports/experiments/source-fields``). A split grouped by ``k`` therefore leaks views of one cell
across it, as a random split does. The Kaggle images were made from the BCCD photographs
(640x480, in ``../shared/data/bccd``) by resizing to 320x240 and a random flip, rotation and
shift; this module finds, for each Kaggle image, the photograph it was made from.

Matching: around the white cell (found by the service's own localiser) a 180x180 window of
the image's band-pass grey (difference of Gaussians: red-cell edges and the like, not overall
brightness) with the cell itself masked out, so that the neighbourhood, which is unique to a
photograph, decides. Each photograph is tried under both flips and rotations of -24..24
degrees; each Kaggle image at small shifts of its centre (the localiser's box moves a few
pixels when the field turns). The photograph with the highest normalised correlation wins;
its score and its margin over the runner-up are kept, so that doubtful matches are seen.

The photographs only name groups here; nothing is trained on them (their README forbids it).
``python -m model_training.source_fields --data ../shared/data/kaggle-blood-cells
--bccd ../shared/data/bccd --out model_training/source_fields.csv.gz --report
reports/experiments/source-fields`` writes the table that ``data.group_of`` reads.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from model_training.bccd import TABLE
from model_training.data import list_samples
from wbc_core.preprocessing import decode, locate

SIZE = (320, 240)  # Kaggle's image size: BCCD's 640x480 halved
HALF = 90.0  # half side of the compared window, pixels at 320x240
GRID = 45  # samples per side of that window (4 px apart)
INNER = 20.0  # radius around the cell's centre left out (the cell itself)
DOG = (1.5, 6.0)  # band-pass: Gaussian sigmas subtracted
THETAS = np.deg2rad(np.arange(-24, 25, 4))  # the augmentation turned up to 20 degrees
SHEARS = (-0.2, -0.1, 0.0, 0.1, 0.2)  # ... and sheared up to 0.2 (Keras: radians)
SHIFTS = [(dx, dy) for dx in (-4, 0, 4) for dy in (-4, 0, 4)]
SPLITS = ("TRAIN", "TEST", "TEST_SIMPLE")
CONFIDENT = 0.05  # a match this much better than the runner-up is taken as sure
MIN_VIEWS = 5  # sure matches a photograph needs to be a source of a split's class
FILL = 20  # pixels darker than this in every channel are the augmentation's black fill

_g = (np.arange(GRID) + 0.5) / GRID * 2 - 1
GX, GY = np.meshgrid(_g * HALF, _g * HALF)
RING = ((np.hypot(GX, GY) >= INNER) & (np.hypot(GX, GY) <= HALF)).ravel()


def prepare(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """Band-pass grey, valid-pixel mask and the white cell's centre, at 320x240."""
    image = decode(path.read_bytes())
    if image.size != SIZE:
        image = image.resize(SIZE, Image.Resampling.BILINEAR)
    box, _ = locate(image)
    rgb = np.asarray(image)
    grey = rgb.astype(np.float32).mean(axis=2)
    band = ndimage.gaussian_filter(grey, DOG[0]) - ndimage.gaussian_filter(grey, DOG[1])
    valid = (rgb.max(axis=2) > FILL).astype(np.float32)
    return band, valid, ((box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2)


def window(
    band: np.ndarray,
    valid: np.ndarray,
    centre: tuple[float, float],
    theta: float = 0.0,
    flip: bool = False,
    shear: float = 0.0,
) -> np.ndarray:
    """The unit-norm descriptor: the window around ``centre``, sampled through a shear by
    ``shear`` then a turn by ``theta`` (Keras's order), mirrored first with ``flip``."""
    gx = -GX if flip else GX
    sx = gx - np.sin(shear) * GY  # Keras's shear matrix [[1, -sin s], [0, cos s]]
    sy = np.cos(shear) * GY
    cos, sin = np.cos(theta), np.sin(theta)
    xs = centre[0] + cos * sx - sin * sy
    ys = centre[1] + sin * sx + cos * sy
    values = ndimage.map_coordinates(band, [ys, xs], order=1, mode="constant").ravel()
    inside = ndimage.map_coordinates(valid, [ys, xs], order=0, mode="constant").ravel()
    d = values * inside * RING
    return (d / (np.linalg.norm(d) + 1e-9)).astype(np.float32)


def photograph_windows(path: Path) -> np.ndarray:
    """A photograph's descriptors under both flips (a vertical flip is a horizontal one
    turned by 180 degrees), rotations and shears: [4 * len(THETAS) * len(SHEARS), GRID ** 2]."""
    band, valid, centre = prepare(path)
    return np.stack(
        [
            window(band, valid, centre, base + t, flip, shear)
            for flip in (False, True)
            for base in (0.0, np.pi)
            for t in THETAS
            for shear in SHEARS
        ]
    )


def view_windows(path: Path) -> np.ndarray:
    """A Kaggle image's descriptors at each of ``SHIFTS``: [len(SHIFTS), GRID * GRID]."""
    band, valid, (cx, cy) = prepare(path)
    return np.stack([window(band, valid, (cx + dx, cy + dy)) for dx, dy in SHIFTS])


def _stack(fn, paths: Sequence[Path], workers: int) -> np.ndarray:
    with ProcessPoolExecutor(workers) as pool:
        return np.stack(list(pool.map(fn, paths, chunksize=32)))


def scores(views: np.ndarray, photographs: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Normalised correlation of each view [V, shifts, D] with each photograph
    [P, variants, D], at the best shift and variant: [V, P]."""
    n_photo, n_var, dim = photographs.shape
    flat = photographs.reshape(n_photo * n_var, dim).T
    out = np.empty((len(views), n_photo), np.float32)
    for start in range(0, len(views), chunk):
        v = views[start : start + chunk]
        out[start : start + chunk] = (
            (v.reshape(-1, dim) @ flat).reshape(len(v), -1, n_photo, n_var).max(axis=(1, 3))
        )
    return out


def best_two(s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: the best column, its score and its margin over the second best."""
    top2 = np.sort(s, axis=1)[:, -2:]
    return s.argmax(axis=1), top2[:, 1], top2[:, 1] - top2[:, 0]


def match(views: np.ndarray, photographs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each view the photograph it matches best: (index, score, margin)."""
    return best_two(scores(views, photographs))


def assign(s: np.ndarray, sets: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each view's photograph, chosen among its own set's photographs only.

    ``s``: scores [V, P]; ``sets``: each view's split and class. A photograph shows one cell
    of one class in one split, so it belongs to the set whose views match it surely
    (margin >= ``CONFIDENT``) most often, if at least ``MIN_VIEWS`` do (each source cell has
    13 views or more). A view whose neighbourhood is out of frame or unclear then still goes
    to a photograph of its own class and split: never to another class's or split's cell."""
    best, _, margin = best_two(s)
    confident = margin >= CONFIDENT
    keys = sorted(set(sets))
    index = np.array([keys.index(k) for k in sets])
    votes = np.zeros((len(keys), s.shape[1]), np.int64)
    np.add.at(votes, (index[confident], best[confident]), 1)
    owned = votes.max(axis=0) >= MIN_VIEWS
    allowed = (votes.argmax(axis=0)[None, :] == index[:, None]) & owned[None, :]
    return best_two(np.where(allowed, s, -np.inf))


def build(data: Path, bccd: Path, workers: int = 2) -> list[dict]:
    """Every Kaggle image with the BCCD photograph it was made from (``assign``)."""
    photos = sorted((bccd / "JPEGImages").glob("*.jpg"))
    photo_windows = _stack(photograph_windows, photos, workers)
    files = [s.path for split in SPLITS for s in list_samples(data / split)]
    s = scores(_stack(view_windows, files, workers), photo_windows)
    # TEST_SIMPLE holds TEST's own photographs, unaugmented: one set with TEST
    best, score, margin = assign(
        s,
        [
            f"{f.parent.parent.name.replace('TEST_SIMPLE', 'TEST')}/{f.parent.name.lower()}"
            for f in files
        ],
    )
    return [
        {
            "split": f.parent.parent.name,
            "class": f.parent.name.lower(),
            "file": f.name,
            "bytes": f.stat().st_size,
            "field": photos[b].stem,
            "score": round(float(sc), 4),
            "margin": round(float(m), 4),
        }
        for f, b, sc, m in zip(files, best, score, margin, strict=True)
    ]


def write_table(rows: list[dict], out: Path) -> None:
    with gzip.open(out, "wt", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def checks(rows: list[dict]) -> dict:
    """What the table must satisfy if the matching is right, and how the README's ``k``
    compares with it."""

    def by(split: str) -> list[dict]:
        return [r for r in rows if r["split"] == split]

    simple = by("TEST_SIMPLE")
    simple_fields = {r["field"] for r in simple}
    train_fields = {r["field"] for r in by("TRAIN")}
    test = by("TEST")
    out: dict = {
        "TEST_SIMPLE images on distinct photographs": f"{len(simple_fields)} of {len(simple)}",
        "TEST images on a TEST_SIMPLE photograph of their class": sum(
            (r["class"], r["field"]) in {(s["class"], s["field"]) for s in simple} for r in test
        ),
        "TEST images": len(test),
        "TRAIN images on a TEST photograph": sum(r["field"] in simple_fields for r in by("TRAIN")),
        "TRAIN photographs": len(train_fields),
        "TRAIN photographs shared by two classes": len(
            {
                f
                for f in train_fields
                if len({r["class"] for r in by("TRAIN") if r["field"] == f}) > 1
            }
        ),
    }
    for split in ("TRAIN", "TEST"):
        ks: dict[tuple[str, str], set[str]] = {}
        for r in by(split):
            k = r["file"].split("_")[1]
            ks.setdefault((r["class"], k), set()).add(r["field"])
        sizes = [len(v) for v in ks.values()]
        out[f"{split}: photographs per README 'k' group (median, max)"] = (
            int(np.median(sizes)),
            max(sizes),
        )
        fields: dict[str, int] = {}
        for r in by(split):
            fields[r["field"]] = fields.get(r["field"], 0) + 1
        out[f"{split}: images per photograph (min, median, max)"] = (
            min(fields.values()),
            int(np.median(list(fields.values()))),
            max(fields.values()),
        )
        out[f"{split}: photographs per class"] = {
            c: len({r["field"] for r in by(split) if r["class"] == c})
            for c in sorted({r["class"] for r in by(split)})
        }
    scores = np.array([r["score"] for r in rows if r["split"] != "TEST_SIMPLE"])
    margins = np.array([r["margin"] for r in rows if r["split"] != "TEST_SIMPLE"])
    out["augmented images: score median"] = round(float(np.median(scores)), 3)
    out["augmented images: margin below 0.05"] = int((margins < 0.05).sum())
    return out


def plot_k_group(
    rows: list[dict],
    data: Path,
    out: Path,
    split: str = "TRAIN",
    cls: str = "monocyte",
    k: str = "0",
    count: int = 12,
) -> None:
    """The first ``count`` images filed under one README ``k``, each titled with the
    photograph it was made from: a person sees at a glance that ``k`` is not one cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    group = [
        r
        for r in rows
        if r["split"] == split and r["class"] == cls and r["file"].split("_")[1] == k
    ]
    picked = group[:count]
    cols = 6
    fig, axes = plt.subplots(
        -(-len(picked) // cols), cols, figsize=(2.4 * cols, 2.2 * 2), squeeze=False
    )
    for ax in axes.ravel():
        ax.axis("off")
    for ax, r in zip(axes.ravel(), picked, strict=False):
        ax.imshow(Image.open(data / split / cls.upper() / r["file"]))
        ax.set_title(f"{r['file']}\nfrom {r['field']}", fontsize=7)
    fig.suptitle(
        f"{split}/{cls.upper()}: the {len(group)} files named _{k}_<n> come from "
        f"{len({r['field'] for r in group})} photographs",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--bccd", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=TABLE)
    parser.add_argument("--report", type=Path, default=None)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    start = time.time()
    rows = build(args.data, args.bccd, args.workers)
    write_table(rows, args.out)
    result = checks(rows)
    result["minutes"] = round((time.time() - start) / 60, 1)
    print(json.dumps(result, indent=1))
    if args.report:
        args.report.mkdir(parents=True, exist_ok=True)
        (args.report / "checks.json").write_text(json.dumps(result, indent=1) + "\n")
        plot_k_group(rows, args.data, args.report / "k_group.png")


if __name__ == "__main__":
    main()
