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
    from wbc_core.calibration import apply_temperature
    from wbc_core.cellcheck import CellCheck
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
    check = CellCheck(predictor.metadata.get("cell_check"))
    temperature = float(predictor.metadata.get("temperature", 1.0))
    balance = balance_of(predictor.metadata)
    stages: dict[str, list[float]] = {
        k: []
        for k in ("decode", "balance_localise", "crop_resize", "inference_b1", "guards", "json")
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
            raw, features = predictor.infer(crop[None])
            t4 = time.perf_counter()
            probs = apply_temperature(raw, temperature)[0]  # then the review guards
            if predictor.ood is not None and features is not None:
                predictor.ood.score(features)
            check.is_cell(crop, box.localised)
            t4b = time.perf_counter()
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
                ("guards", t4, t4b),
                ("json", t4b, t5),
            ):
                stages[key].append((b - a) * 1000)
        # the stages above must stay the service's preprocessing, or their times mean nothing
        assert np.array_equal(crop, preprocess_bytes(data, balance=balance).array)
    out = {k: float(np.median(v)) for k, v in stages.items()}
    out["sum"] = sum(out.values())
    return out


def main() -> None:
    """``python -m bench.stages``: the stage table alone, on ``bench.run``'s images."""
    import argparse

    from app.predictor import resolve_version_dir
    from bench.images import real_images
    from bench.server import PROJECT

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--model",
        type=Path,
        default=PROJECT / "models" / "wbc-classifier",
        help="model folder (default: the shipped one, its newest version)",
    )
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    stages = profile(real_images(args.images), resolve_version_dir(args.model), args.repeats)
    print(json.dumps({k: round(v, 3) for k, v in stages.items()}))


if __name__ == "__main__":
    main()
