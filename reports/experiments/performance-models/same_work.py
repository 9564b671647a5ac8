"""Two model folders in one process, a worker's ``POST /predict`` work (header, decode,
balance, localise, crop, network, guards, JSON) on the benchmarks' 200 TEST images
(``bench.images``), the folders taking
turns round by round (CPU time per image, medians of the rounds): whether two versions cost
the same per request, free of the HTTP benchmark's minute-to-minute drift.

    python reports/experiments/performance-models/same_work.py VERSION_DIR VERSION_DIR
"""

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from app.classifier import Classifier  # noqa: E402
from app.config import Settings  # noqa: E402
from app.predictor import Predictor  # noqa: E402
from bench.images import real_images  # noqa: E402

ROUNDS = 6


def main() -> None:
    images = real_images()
    classifiers = {}
    for folder in sys.argv[1:]:
        predictor = Predictor(Path(folder))
        predictor.load()
        classifiers[folder] = Classifier(predictor, Settings().max_pixels)
    times: dict[str, list[float]] = {name: [] for name in classifiers}
    for r in range(ROUNDS):
        order = list(classifiers) if r % 2 == 0 else list(reversed(classifiers))
        for name in order:
            classifier = classifiers[name]
            start = time.thread_time()
            for data in images:
                json.dumps(classifier.classify_one(classifier.open(data)))
            times[name].append((time.thread_time() - start) * 1000 / len(images))
    for name, values in times.items():
        print(
            f"{name}: {len(images)} images, CPU ms per image, median of {ROUNDS} rounds "
            f"{statistics.median(values):.3f} (rounds {', '.join(f'{v:.3f}' for v in values)})"
        )


if __name__ == "__main__":
    main()
