"""The model runtime: loads a SavedModel version, warms it up, predicts batches.

Routes never import TensorFlow; they talk to ``Predictor`` (load / ready / predict).
On the CPU the SavedModel is converted at load time into a TFLite interpreter with
XNNPACK (one per thread), several times faster than TensorFlow's graph executor for
this small network; ``WBC_RUNTIME=tensorflow`` keeps TensorFlow. A GPU always runs
TensorFlow.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from model_training.preprocessing import crop_mismatch

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """The model folder is missing, incomplete or unreadable."""


def resolve_version_dir(model_dir: Path) -> Path:
    """``model_dir`` itself if it is one version, else its highest numbered version."""
    model_dir = Path(model_dir)
    if (model_dir / "saved_model.pb").exists():
        return model_dir
    if not model_dir.is_dir():
        raise ModelLoadError(f"model folder {model_dir} does not exist")
    versions = sorted((p for p in model_dir.iterdir() if p.name.isdigit() and p.is_dir()),
                      key=lambda p: int(p.name))
    if not versions:
        raise ModelLoadError(f"no numbered model version in {model_dir}")
    return versions[-1]


class Predictor:
    def __init__(self, model_dir: Path, device: str = "auto", runtime: str = "auto") -> None:
        self.model_dir = Path(model_dir)
        self.device = device
        self.requested_runtime = runtime
        self.runtime = "none"
        self.metadata: dict[str, Any] = {}
        self.version_dir: Path | None = None
        self.ready = False
        self.load_seconds = 0.0
        self.error: str | None = None
        self._tf_fn: Any = None
        self._tflite_model: bytes | None = None
        self._local = threading.local()

    # ---- loading -------------------------------------------------------------------
    def load(self) -> None:
        """Load the newest version, warm it up, then mark ready. Raises ModelLoadError."""
        start = time.perf_counter()
        version_dir = resolve_version_dir(self.model_dir)
        try:
            metadata = json.loads((version_dir / "metadata.json").read_text())
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot read {version_dir / 'metadata.json'}: {exc}") from exc
        if problem := crop_mismatch(metadata):
            raise ModelLoadError(f"{version_dir}: {problem}")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if self.device == "gpu" and not gpus:
            raise ModelLoadError("WBC_DEVICE=gpu but TensorFlow sees no GPU")
        use_gpu = bool(gpus) and self.device in ("auto", "gpu")
        if not use_gpu and gpus:
            tf.config.set_visible_devices([], "GPU")
        runtime = self.requested_runtime
        if runtime == "auto":
            runtime = "tensorflow" if use_gpu else "tflite"
        try:
            loaded = tf.saved_model.load(str(version_dir))
            fn = loaded.signatures["serving_default"]
            tflite_model = None
            if runtime == "tflite":
                converter = tf.lite.TFLiteConverter.from_saved_model(str(version_dir))
                tflite_model = converter.convert()
        except Exception as exc:  # noqa: BLE001 - any failure here means "not loadable"
            raise ModelLoadError(f"cannot load SavedModel from {version_dir}: {exc}") from exc
        self._loaded = loaded
        self._tf_fn = fn
        self._tflite_model = tflite_model
        self._local = threading.local()
        self.runtime = runtime
        self.metadata = metadata
        self.version_dir = version_dir
        size = metadata["input"]["size"]
        self.predict(np.zeros((1, *size), dtype=np.uint8))  # warm-up
        self.load_seconds = time.perf_counter() - start
        self.ready = True
        log.info("model loaded", extra={"version": metadata.get("version"),
                                        "runtime": runtime, "gpu": use_gpu,
                                        "seconds": round(self.load_seconds, 2)})

    # ---- inference -----------------------------------------------------------------
    def _interpreter(self) -> Any:
        """One TFLite interpreter per thread: interpreters are not thread-safe."""
        interp = getattr(self._local, "interpreter", None)
        if interp is None:
            import tensorflow as tf

            interp = tf.lite.Interpreter(model_content=self._tflite_model, num_threads=1)
            interp.allocate_tensors()
            self._local.interpreter = interp
            self._local.batch = 1
            self._local.input = interp.get_input_details()[0]["index"]
            self._local.output = interp.get_output_details()[0]["index"]
        return interp

    def _tflite(self, batch: np.ndarray) -> np.ndarray:
        interp = self._interpreter()
        local = self._local
        if local.batch != len(batch):
            interp.resize_tensor_input(local.input, batch.shape)
            interp.allocate_tensors()
            local.batch = len(batch)
        interp.set_tensor(local.input, batch)
        interp.invoke()
        return np.array(interp.get_tensor(local.output))

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """uint8 or float [N, H, W, 3] in 0..255 -> float32 [N, 4] probabilities."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.runtime == "tflite":
            return self._tflite(batch)
        import tensorflow as tf

        result = self._tf_fn(image=tf.constant(batch))
        return result["probabilities"].numpy()

    @property
    def classes(self) -> list[str]:
        return list(self.metadata.get("classes", []))
