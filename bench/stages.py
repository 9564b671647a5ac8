"""Where the time of one request goes: each stage of the request path timed on real images."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from PIL import Image


def profile(images: list[bytes], version_dir: Path, repeats: int = 3) -> dict[str, float]:
    """Median milliseconds per image of each stage, one thread."""
    from app.predictor import Predictor
    from wbc_core.localise import square_crop
    from wbc_core.preprocessing import (
        IMAGE_SIZE,
        apply_balance,
        balance_of,
        decode,
        locate,
        preprocess_bytes,
    )

    predictor = Predictor(version_dir)
    predictor.load()
    balance = balance_of(predictor.metadata)
    stages: dict[str, list[float]] = {
        k: [] for k in ("decode", "balance_localise", "crop_resize", "inference_b1", "json")
    }
    for _ in range(repeats):
        for data in images:
            t0 = time.perf_counter()
            image = decode(data)  # then wbc_core.preprocessing.prepare, stage by stage
            t1 = time.perf_counter()
            box, table = locate(image, balance)
            t2 = time.perf_counter()
            resized = image.resize(
                (IMAGE_SIZE, IMAGE_SIZE),
                Image.Resampling.BILINEAR,
                box=square_crop(box, *image.size),
            )
            crop = np.asarray(resized)
            crop = crop if table is None else apply_balance(crop, table)
            t3 = time.perf_counter()
            probs = predictor.predict(crop[None])[0]
            t4 = time.perf_counter()
            json.dumps(
                {
                    "label": "x",
                    "probabilities": {str(i): float(p) for i, p in enumerate(probs)},
                    "cell_box": box.as_list(),
                }
            )
            t5 = time.perf_counter()
            for key, a, b in (
                ("decode", t0, t1),
                ("balance_localise", t1, t2),
                ("crop_resize", t2, t3),
                ("inference_b1", t3, t4),
                ("json", t4, t5),
            ):
                stages[key].append((b - a) * 1000)
        # the stages above must stay the service's preprocessing, or their times mean nothing
        assert np.array_equal(crop, preprocess_bytes(data, balance=balance).array)
    out = {k: float(np.median(v)) for k, v in stages.items()}
    out["sum"] = sum(out.values())
    return out
