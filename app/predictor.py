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

from wbc_core.ood import OodStats
from wbc_core.preprocessing import crop_mismatch

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
    versions = sorted(
        (p for p in model_dir.iterdir() if p.name.isdigit() and p.is_dir()),
        key=lambda p: int(p.name),
    )
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
        self.ood: OodStats | None = None  # the out-of-distribution guard's statistics

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
        try:
            self.ood = OodStats.load(version_dir)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"cannot read the OOD statistics of {version_dir}: {exc}") from exc
        size = metadata["input"]["size"]
        self.predict(np.zeros((1, *size), dtype=np.uint8))  # warm-up
        self.load_seconds = time.perf_counter() - start
        self.ready = True
        log.info(
            "model loaded",
            extra={
                "version": metadata.get("version"),
                "runtime": runtime,
                "gpu": use_gpu,
                "seconds": round(self.load_seconds, 2),
            },
        )

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
            outputs = interp.get_output_details()
            n_classes = len(self.metadata.get("classes", [])) or 4
            # probabilities: the output with one value per class; features: the other, if any
            probs = [o for o in outputs if int(o["shape"][-1]) == n_classes]
            rest = [o for o in outputs if o not in probs[:1]]
            self._local.output = probs[0]["index"]
            self._local.features = rest[0]["index"] if rest else None
        return interp

    def _tflite(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        interp = self._interpreter()
        local = self._local
        if local.batch != len(batch):
            interp.resize_tensor_input(local.input, batch.shape)
            interp.allocate_tensors()
            local.batch = len(batch)
        interp.set_tensor(local.input, batch)
        interp.invoke()
        features = None if local.features is None else np.array(interp.get_tensor(local.features))
        return np.array(interp.get_tensor(local.output)), features

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """uint8 or float [N, H, W, 3] in 0..255 -> float32 [N, 4] probabilities, and the
        penultimate features [N, D] where the model exports them (else None). An empty
        batch gives empty answers and never reaches the runtime (an interpreter resized
        to zero images was left broken for every later call)."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if len(batch) == 0:
            return np.zeros((0, len(self.classes) or 4), np.float32), None
        if self.runtime == "tflite":
            return self._tflite(batch)
        import tensorflow as tf

        result = self._tf_fn(image=tf.constant(batch))
        features = result.get("features")
        return (result["probabilities"].numpy(), None if features is None else features.numpy())

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """uint8 or float [N, H, W, 3] in 0..255 -> float32 [N, 4] probabilities."""
        return self.infer(batch)[0]

    @property
    def classes(self) -> list[str]:
        return list(self.metadata.get("classes", []))
