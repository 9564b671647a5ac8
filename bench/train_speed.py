"""Training throughput (images/s) of each architecture, synthetic batches, this machine;
and of the multi-site augmentation stream alone, with the cost of each of its steps.

    python -m bench.train_speed [--steps 12] [--repeats 5] [--stream-seconds 20]

Separates the network's cost from the input pipeline: batches are in memory.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from model_training import machine

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


NETWORKS = (("paper", 150), ("paper", 128), ("wbc", 150), ("wbc-fine", 150))


def speeds(steps: int, repeats: int, batch: int = 32) -> list[dict[str, Any]]:
    """Median training and prediction throughput of each of ``NETWORKS``. The timed passes
    take turns (every network once per round, ``repeats`` rounds): this machine's speed
    drifts by up to 2x within minutes, and the turns spread a slow spell over all of them."""
    import keras
    import numpy as np

    from wbc_core.network import make_model

    rng = np.random.default_rng(0)
    runs = []
    for arch, size in NETWORKS:
        model = make_model(arch, size)
        model.compile(optimizer="adam", loss="categorical_crossentropy")
        x = rng.uniform(0, 255, (batch * steps, size, size, 3)).astype("float32")
        y = keras.utils.to_categorical(rng.integers(0, 4, batch * steps), 4)
        model.fit(x[: batch * 2], y[: batch * 2], batch_size=batch, epochs=1, verbose=0)
        runs.append((model, x, y, [], []))
    for _ in range(repeats):
        for model, x, y, train, infer in runs:
            start = time.perf_counter()
            model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
            train.append(len(x) / (time.perf_counter() - start))
            start = time.perf_counter()
            model.predict(x, batch_size=batch, verbose=0)
            infer.append(len(x) / (time.perf_counter() - start))
    return [
        {
            "arch": arch,
            "size": size,
            "params": model.count_params(),
            "train_img_s": round(float(np.median(train)), 1),
            "train_img_s_range": [round(min(train), 1), round(max(train), 1)],
            "predict_img_s": round(float(np.median(infer)), 1),
        }
        for (arch, size), (model, _, _, train, infer) in zip(NETWORKS, runs, strict=True)
    ]


STREAM_AUG = {"randconv": 0.5, "hue_turn": 0.5}  # the shipped model's training stream


def depthwise_blur(image: Any, sigma: Any) -> Any:
    """The form ``augment.gaussian_blur`` replaced: a 7x7 depthwise convolution."""
    import tensorflow as tf

    r = tf.range(-3.0, 4.0)
    k = tf.exp(-0.5 * tf.square(r / sigma))
    k = k / tf.reduce_sum(k)
    kernel = tf.tile((k[:, None] * k[None, :])[:, :, None, None], [1, 1, 3, 1])
    padded = tf.pad(image[None], [[0, 0], [3, 3], [3, 3], [0, 0]], mode="REFLECT")
    return tf.nn.depthwise_conv2d(padded, kernel, [1, 1, 1, 1], "VALID")[0]


def masked_random_convolution(image: Any) -> Any:
    """The form ``augment.random_convolution`` replaced: always a 7x7 kernel, zeros outside
    its drawn k x k centre (the same random draws, in the same order)."""
    import tensorflow as tf

    k = tf.random.uniform([], 0, 4, dtype=tf.int32) * 2 + 1
    inside = tf.cast(tf.abs(tf.range(-3, 4)) <= (k - 1) // 2, tf.float32)
    mask = (inside[:, None] * inside[None, :])[:, :, None, None]
    kernel = tf.random.normal([7, 7, 3, 3]) * tf.math.rsqrt(tf.cast(3 * k * k, tf.float32))
    padded = tf.pad(image[None], [[0, 0], [3, 3], [3, 3], [0, 0]], mode="REFLECT")
    out = tf.nn.conv2d(padded, kernel * mask, 1, "VALID")[0]
    mean_out, var_out = tf.nn.moments(out, axes=[0, 1])
    mean_in, var_in = tf.nn.moments(image, axes=[0, 1])
    out = (out - mean_out) * tf.sqrt((var_in + 1.0) / (var_out + 1e-6)) + mean_in
    alpha = tf.random.uniform([])
    return tf.clip_by_value(alpha * image + (1.0 - alpha) * out, 0.0, 255.0)


def stream_steps(repeats: int, calls: int = 30) -> list[tuple[str, float]]:
    """Milliseconds of one call of each step of ``augment.augment_image`` on one 150x150
    crop, called alone (the fastest of ``repeats`` passes of ``calls`` calls): what the
    stream spends per crop. A step drawn for half the crops costs half its row on average.
    The last two rows are the forms the blur and the random convolution replaced."""
    import numpy as np
    import tensorflow as tf

    from model_training import augment as a

    image = tf.constant(np.random.default_rng(0).uniform(0, 255, (150, 150, 3)), tf.float32)
    sigma = tf.constant(1.0)

    steps = {
        "orientation, hue, saturation, brightness, contrast, gamma": lambda: a.augment(
            image, 0, 2.0, 0.5
        )[0],
        "stain optical density (HED)": lambda: a.hed_jitter(image, 0.25, 0.03),
        "zoom and shift": lambda: a.zoom_shift(image, (0.67, 2.2), 0.08),
        "hue turn": lambda: a.hue_turn(image),
        "random convolution": lambda: a.random_convolution(image),
        "Gaussian blur": lambda: a.gaussian_blur(image, sigma),
        "lower resolution": lambda: a.low_resolution(image, tf.constant(1.5)),
        "JPEG": lambda: tf.image.random_jpeg_quality(image / 255.0, 30, 95),
        "grey": lambda: tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image)),
        "Gaussian blur as a depthwise convolution (replaced)": lambda: depthwise_blur(image, sigma),
        "random convolution always 7x7, zeros outside k x k (replaced)": lambda: (
            masked_random_convolution(image)
        ),
    }
    out = []
    for name, step in steps.items():
        call = tf.function(step)
        call()
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(calls):
                call()
            best = min(best, (time.perf_counter() - start) / calls * 1000)
        out.append((name, best))
    return out


def stream_speed(seconds: float, batch: int = 32) -> float:
    """Images/s of ``augment.site_balanced`` (two synthetic sites, the shipped model's
    augmentation) on every core, no network: the most a training run can see."""
    import numpy as np

    from model_training.augment import SiteAugmentation, site_balanced
    from model_training.data import Dataset

    rng = np.random.default_rng(0)
    sites = [
        Dataset(
            x=rng.integers(0, 256, (256, 150, 150, 3), dtype=np.uint8),
            y=rng.integers(0, 4, 256),
            groups=np.arange(256),
            paths=[""] * 256,
            skipped=[],
        )
        for _ in range(2)
    ]
    stream = iter(site_balanced(sites, batch, 0, SiteAugmentation(**STREAM_AUG)))
    for _ in range(4):
        next(stream)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        next(stream)
        n += batch
    return n / (time.perf_counter() - start)


def real_runs(reports: Path = Path("reports/experiments")) -> list[dict[str, Any]]:
    """Training throughput of the real runs behind reports/experiments/*/metrics.json:
    images seen per second of training wall time (the epochs' validation passes included)."""
    rows = []
    for path in sorted(reports.glob("*/metrics.json")):
        m = json.loads(path.read_text())
        if not {"train_seconds", "epochs_run", "n_train", "arch"} <= m.keys():
            continue  # cross-validations and robustness records
        rows.append(
            {
                "report": path.parent.name,
                "arch": m["arch"],
                "epochs": m["epochs_run"],
                "n_train": m["n_train"],
                "minutes": m["train_seconds"] / 60,
                "img_s": m["epochs_run"] * m["n_train"] / m["train_seconds"],
                "machine": m.get("machine", "?"),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed passes per network; the median is reported"
    )
    parser.add_argument(
        "--stream-seconds", type=float, default=20.0, help="how long the stream is read"
    )
    parser.add_argument("--out", type=Path, default=Path("reports/experiments/training-speed.md"))
    args = parser.parse_args()
    rows = speeds(args.steps, args.repeats)
    for r in rows:
        print(json.dumps(r), flush=True)
    stream = stream_speed(args.stream_seconds)
    print(json.dumps({"stream_img_s": round(stream, 1)}), flush=True)
    steps = stream_steps(args.repeats)
    command = (
        f"python -m bench.train_speed --steps {args.steps} --repeats {args.repeats} "
        f"--stream-seconds {args.stream_seconds:g}"
    )
    lines = [
        "# Training speed on 2 CPU cores",
        "",
        f"Produced by `{command}` on {machine.describe()} (in-memory batches of 32, so "
        "only the network's cost is measured; median of the timed passes, which take "
        "turns, and their range).",
        "",
        "| arch | input | parameters | train images/s | range | predict images/s | "
        "32 epochs over TRAIN (9,957) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        hours = 32 * 9957 / r["train_img_s"] / 3600
        low, high = r["train_img_s_range"]
        lines.append(
            f"| {r['arch']} | {r['size']} | {r['params']:,} | {r['train_img_s']} | "
            f"{low}-{high} | {r['predict_img_s']} | {hours:.1f} h |"
        )
    paper, wbc = rows[0]["train_img_s"], rows[2]["train_img_s"]
    lines += [
        "",
        f"`wbc` against `paper` at 150: **{wbc / paper:.1f}x** the training images "
        "per second in this run.",
        "",
        "## The multi-site augmentation stream",
        "",
        f"`augment.site_balanced` alone, with the shipped model's augmentation "
        f"({', '.join(f'{k} {v:g}' for k, v in STREAM_AUG.items())}; the rest its defaults), "
        "on every core and no network: "
        f"**{stream:.0f} images/s**. The network alone (`wbc` above) trains at "
        f"{wbc:.0f} images/s; the two share the cores, so a training run sees about "
        f"1 / (1/{stream:.0f} + 1/{wbc:.0f}) = {1 / (1 / stream + 1 / wbc):.0f} images/s, "
        f"{400 * 32 / (1 / (1 / stream + 1 / wbc)):.0f} s an epoch of 400 batches.",
        "",
        "Each step on one crop, called alone (ms per call; a step drawn for half the crops "
        "costs half of it on average):",
        "",
        "| step | ms |",
        "|---|---|",
        *[f"| {name} | {ms:.2f} |" for name, ms in steps],
        "",
        "## The real training runs behind the reports",
        "",
        "Images seen per second of training wall time (epochs x training images / "
        "wall time, the epochs' validation passes included), from each report's "
        "metrics.json, on whatever machine that day had: the synthetic figures above "
        "move with it.",
        "",
        "| report | arch | epochs | training images | wall time | images/s | machine |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in real_runs():
        lines.append(
            f"| [{r['report']}]({r['report']}/report.md) | {r['arch']} | "
            f"{r['epochs']} | {r['n_train']:,} | {r['minutes']:.1f} min | "
            f"{r['img_s']:.0f} | {r['machine']} |"
        )
    lines += ["", ANALYSIS]
    args.out.write_text("\n".join(lines) + "\n")


ANALYSIS = """## Where the time goes

Images are decoded, localised and resized once and cached as uint8 arrays; the first table
feeds the networks in-memory batches, so it measures the network alone. The multi-site
recipe also augments every crop with a dozen steps (the stream's table); the stream and
the network share the cores, and the estimate under the stream's figure is what a training
run can see. The Gaussian blur was the dearest step while it ran as a depthwise
convolution and is now two matrix products; the random convolution ran at 7x7 whatever
kernel size it drew and now runs at that size (the replaced forms are the table's last
rows; both give the same crops within float rounding).

What these figures measure moves with the day's CPU, which the heading names. The base
recipe of the shipped model (30 epochs of 400 batches) trained in 1,648 s on an AVX-512 day
(`train_seconds` in version 5's metadata.json, commit `a0bde97`); 24 epochs of the same
stream took 4,908 s on a day without AVX-512
([hue-turns-scratch](hue-turns-scratch/report/metrics.json)), 187-243 s an epoch, before the
stream's two rewrites; after them, on the same machine on 2026-12-07,
`python -m model_training train-sites --data kaggle=../shared/data/kaggle-blood-cells
--data pbc=../shared/data/pbc --epochs 2 --steps-per-epoch 400 --randconv 0.5 --hue-turn 0.5
--version 1 --out /tmp/speed/m --report /tmp/speed/r` logged 141 and 135 s for its two
epochs (the estimate under the stream's figure: 143 s); 30 epochs would take about 70
minutes there. The `wbc` network averages 2x2 first (the cell crop is upsampled from about 80-100
source pixels to 150, so little is lost), uses a stride-2 stem, and pools at the start of
each residual block so that its separable convolutions run at 38, 19, 10 and 5 pixels, with
a fifth of the paper network's weights: the ratio under the first table."""


if __name__ == "__main__":
    main()
