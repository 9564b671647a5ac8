"""Finding the photograph a Kaggle-style view was made from (model_training.source_fields)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model_training import bccd, source_fields
from tests.synthetic import field


def kaggle_view(image: Image.Image, degrees: float, shift: tuple[int, int]) -> Image.Image:
    """What the Kaggle augmentation did: mirror, turn about the centre, shift; black fill."""
    turned = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).rotate(
        degrees, resample=Image.Resampling.BILINEAR, translate=shift, fillcolor=(0, 0, 0)
    )
    return turned


@pytest.fixture(scope="module")
def photographs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Five 640x480 'BCCD' fields, one white cell each, different red-cell neighbourhoods."""
    folder = tmp_path_factory.mktemp("bccd")
    paths = []
    for i in range(5):
        path = folder / f"BloodImage_{i:05d}.jpg"
        field((640, 480), cells=[(300 + 20 * i, 240, 50)], seed=100 + i).save(path, quality=95)
        paths.append(path)
    return paths


def test_each_view_is_matched_to_the_photograph_it_was_made_from(
    photographs: list[Path], tmp_path: Path
) -> None:
    windows = np.stack([source_fields.photograph_windows(p) for p in photographs])
    views, truth = [], []
    for i, (degrees, shift) in enumerate([(15, (10, -8)), (-18, (-20, 12)), (5, (0, 0))]):
        source = 2 * i % 5  # photographs 0, 2, 4
        small = Image.open(photographs[source]).convert("RGB").resize(source_fields.SIZE)
        path = tmp_path / f"_0_{i}.jpeg"
        kaggle_view(small, degrees, shift).save(path, quality=90)
        views.append(source_fields.view_windows(path))
        truth.append(source)
    best, score, margin = source_fields.match(np.stack(views), windows)
    assert best.tolist() == truth
    assert (margin > 0.05).all(), margin  # the runner-up is clearly worse


def test_the_table_round_trips_and_names_the_groups(tmp_path: Path) -> None:
    rows = [
        {
            "split": "TRAIN",
            "class": "monocyte",
            "file": "_0_1.jpeg",
            "bytes": 123,
            "field": "BloodImage_00007",
            "score": 0.6,
            "margin": 0.3,
        }
    ]
    source_fields.write_table(rows, tmp_path / "t.csv.gz")
    assert bccd.read_table(tmp_path / "t.csv.gz") == {
        ("TRAIN", "monocyte", "_0_1.jpeg", 123): "BloodImage_00007"
    }
    assert bccd.read_table(tmp_path / "absent.csv.gz") == {}
