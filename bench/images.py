"""The real images the benchmarks send: every seventh of Kaggle's TEST (``WBC_DATA_DIR``)."""

from __future__ import annotations

import os
from pathlib import Path

from bench.server import PROJECT

DATA = Path(os.environ.get("WBC_DATA_DIR", PROJECT.parent / "shared/data/kaggle-blood-cells"))


def real_image_paths(limit: int = 200) -> list[Path]:
    files = sorted((DATA / "TEST").glob("*/*"))[::7][:limit]
    if not files:
        raise SystemExit(f"no images under {DATA / 'TEST'} (set WBC_DATA_DIR)")
    return files


def real_images(limit: int = 200) -> list[bytes]:
    return [f.read_bytes() for f in real_image_paths(limit)]
