"""The in-process ceiling: what the service's own request work can do with no HTTP.

One process per core, each running what a worker does for ``POST /predict`` (read the
header, decode, balance, localise, crop, the network, the review guards, the JSON
answer) back to back on real images, all at once for a fixed time. Their summed rate is
the most any server on this machine could answer; the HTTP figures are read against it.
Measured rather than extrapolated from one thread: cores that run together share caches
and memory bandwidth, and do not each run as fast as one alone.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from pathlib import Path


def _run(version_dir: Path, images: list[bytes], seconds: float, barrier, results) -> None:  # noqa: ANN001
    from app.classifier import Classifier
    from app.config import Settings
    from app.predictor import Predictor

    predictor = Predictor(version_dir)
    predictor.load()
    classifier = Classifier(predictor, Settings().max_pixels)

    def answer(data: bytes) -> None:
        json.dumps(classifier.classify_one(classifier.open(data)))

    for data in images[:20]:  # warm-up
        answer(data)
    barrier.wait()
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        answer(images[count % len(images)])
        count += 1
    results.put(count / elapsed)


def measure(
    images: list[bytes], version_dir: Path, processes: int, seconds: float = 4.0
) -> dict[str, float]:
    """Images per second of ``processes`` processes at once (``all``), and of one alone
    (``one``, run first, the same way)."""
    ctx = mp.get_context("spawn")  # a clean interpreter, as a server worker starts
    out = {}
    for name, n in (("one", 1), ("all", processes)):
        barrier, results = ctx.Barrier(n), ctx.Queue()
        procs = [
            ctx.Process(target=_run, args=(version_dir, images, seconds, barrier, results))
            for _ in range(n)
        ]
        for p in procs:
            p.start()
        out[name] = sum(results.get(timeout=120 + seconds) for _ in procs)
        for p in procs:
            p.join()
    return out
