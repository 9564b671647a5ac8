"""Synthetic smear images for tests: pale background, pink red cells, one violet nucleus."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

BACKGROUND = (232, 222, 226)
RED_CELL = (222, 160, 170)
NUCLEUS = (95, 60, 170)
CYTOPLASM = (205, 185, 225)
CLASS_FOLDERS = ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL")


def field(
    size: tuple[int, int] = (320, 240),
    cells: list[tuple[int, int, int]] | None = None,
    seed: int = 0,
    lobes: int = 1,
) -> Image.Image:
    """A field with red cells and white cells at (cx, cy, radius) drawn as violet nuclei."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(image)
    w, h = size
    for _ in range(12):
        x, y, r = rng.integers(0, w), rng.integers(0, h), rng.integers(14, 22)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=RED_CELL)
    for cx, cy, r in cells or []:
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=CYTOPLASM)
        nr = int(r * 0.7)
        for k in range(lobes):
            dx = int((k - (lobes - 1) / 2) * nr * 0.6)
            draw.ellipse(
                (cx + dx - nr // lobes - 4, cy - nr, cx + dx + nr // lobes + 4, cy + nr),
                fill=NUCLEUS,
            )
    noise = rng.normal(0, 3, (h, w, 3))
    return Image.fromarray(np.clip(np.asarray(image) + noise, 0, 255).astype(np.uint8))


def class_image(label: int, seed: int) -> Image.Image:
    """A field whose nucleus shape depends on the class, at a random place."""
    rng = np.random.default_rng(seed)
    cx, cy = int(rng.integers(60, 260)), int(rng.integers(60, 180))
    return field(cells=[(cx, cy, 28 + 6 * (label % 2))], seed=seed, lobes=label + 1)


def write_class_tree(
    root: Path,
    per_class: int = 6,
    groups: int = 3,
    seed: int = 0,
    names: tuple[str, ...] = CLASS_FOLDERS,
) -> Path:
    """``root/<CLASS>/_<k>_<n>.jpeg`` files: ``groups`` source cells per class."""
    for label, name in enumerate(names):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            k = i % groups
            class_image(label, seed * 1000 + label * 100 + i).save(
                folder / f"_{k}_{seed * 1000 + i}.jpeg", quality=92
            )
    return root


def write_kaggle_like(root: Path) -> Path:
    """TRAIN / TEST / TEST_SIMPLE trees like the Kaggle data set, small."""
    write_class_tree(root / "TRAIN", per_class=12, groups=6, seed=1)
    write_class_tree(root / "TEST", per_class=4, groups=2, seed=2)
    write_class_tree(root / "TEST_SIMPLE", per_class=2, groups=2, seed=3)
    return root
