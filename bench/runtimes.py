"""Raw model throughput of the same weights in TensorFlow, TFLite/XNNPACK and ONNX Runtime."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _throughput(fn: Callable[[np.ndarray], object], batch: np.ndarray, seconds: float) -> float:
    fn(batch)
    fn(batch)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn(batch)
        done += len(batch)
    return done / (time.perf_counter() - start)


def measure(version_dir: Path, images: np.ndarray, seconds: float = 3.0) -> dict[str, dict]:
    """Images per second at batch 1 and 32 for each runtime that can be built here."""
    import tensorflow as tf

    results: dict[str, dict] = {}
    b1 = images[:1].astype(np.float32)
    b32 = np.resize(images, (32, *images.shape[1:])).astype(np.float32)
    fn = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    results["tensorflow"] = {
        f"batch{len(b)}": _throughput(lambda x: fn(image=tf.constant(x)), b, seconds)
        for b in (b1, b32)
    }

    tflite = tf.lite.TFLiteConverter.from_saved_model(str(version_dir)).convert()
    tfl: dict[str, float] = {}
    for b in (b1, b32):
        interp = tf.lite.Interpreter(model_content=tflite, num_threads=os.cpu_count())
        interp.resize_tensor_input(interp.get_input_details()[0]["index"], b.shape)
        interp.allocate_tensors()
        inp = interp.get_input_details()[0]["index"]

        def run(x: np.ndarray, interp: tf.lite.Interpreter = interp, inp: int = inp) -> None:
            interp.set_tensor(inp, x)
            interp.invoke()

        tfl[f"batch{len(b)}"] = _throughput(run, b, seconds)
    results["tflite_xnnpack"] = tfl

    try:
        import onnxruntime as ort
        import tf2onnx  # noqa: F401

        with tempfile.TemporaryDirectory() as tmp:
            onnx_path = Path(tmp) / "model.onnx"
            import subprocess
            import sys

            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "tf2onnx.convert",
                    "--saved-model",
                    str(version_dir),
                    "--output",
                    str(onnx_path),
                    "--opset",
                    "17",
                ],
                check=True,
                capture_output=True,
                timeout=600,
            )
            sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
            name = sess.get_inputs()[0].name
            results["onnxruntime"] = {
                f"batch{len(b)}": _throughput(lambda x: sess.run(None, {name: x}), b, seconds)
                for b in (b1, b32)
            }
    except Exception as exc:  # noqa: BLE001 - report why, keep the other figures
        results["onnxruntime"] = {"error": f"{type(exc).__name__}: {str(exc)[-300:]}"}
    return results
