"""Training throughput (images/s) of each architecture, synthetic batches, this machine.

    python -m bench.train_speed [--steps 12]

Separates the network's cost from the input pipeline: batches are in memory.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def speed(arch: str, size: int, steps: int, batch: int = 32) -> dict[str, float]:
    import keras
    import numpy as np

    from model_training.network import make_model

    model = make_model(arch, size)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch * steps, size, size, 3)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 4, batch * steps), 4)
    model.fit(x[: batch * 2], y[: batch * 2], batch_size=batch, epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
    train = len(x) / (time.perf_counter() - start)
    start = time.perf_counter()
    model.predict(x, batch_size=batch, verbose=0)
    infer = len(x) / (time.perf_counter() - start)
    return {"arch": arch, "size": size, "params": model.count_params(),
            "train_img_s": round(train, 1), "predict_img_s": round(infer, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    for arch, size in (("paper", 150), ("paper", 128), ("wbc", 150)):
        print(json.dumps(speed(arch, size, args.steps)), flush=True)


if __name__ == "__main__":
    main()
