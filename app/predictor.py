"""The model runtime: loads a model version, warms it up, predicts batches.

Routes never import a runtime; they talk to ``Predictor`` (load / ready / predict). On the
CPU the version's ``model.tflite`` runs in the standalone LiteRT runtime (one XNNPACK
interpreter per thread): no TensorFlow in the process. TensorFlow is imported only when
its runtime is asked for (``WBC_RUNTIME=tensorflow``, ``WBC_DEVICE=gpu``, or ``auto`` on
a host with an NVIDIA device and TensorFlow installed); it runs the SavedModel. Grad-CAM
always reads the last feature maps from LiteRT and takes the gradient in NumPy
(``wbc_core.gradcam``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from wbc_core import gradcam
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


def gpu_host() -> bool:
    """An NVIDIA device is present and TensorFlow is installed (checked without importing
    it: importing TensorFlow costs about 700 MiB and several seconds)."""
    return Path("/dev/nvidiactl").exists() and importlib.util.find_spec("tensorflow") is not None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Predictor:
    def __init__(self, model_dir: Path, device: str = "auto", runtime: str = "auto") -> None:
        self.model_dir = Path(model_dir)
        self.device = device
        self.requested_runtime = "litert" if runtime == "tflite" else runtime
        self.runtime = "none"
        self.metadata: dict[str, Any] = {}
        self.version_dir: Path | None = None
        self.ready = False
        self.load_seconds = 0.0
        self.error: str | None = None
        self._tf_fn: Any = None
        self._tflite_model: bytes | None = None
        self._heads: list[tuple[np.ndarray, np.ndarray]] = []
        self._local = threading.local()
        self.ood: OodStats | None = None  # the out-of-distribution guard's statistics

    # ---- loading -------------------------------------------------------------------
    def choose_runtime(self) -> str:
        if self.requested_runtime != "auto":
            return self.requested_runtime
        if self.device == "gpu" or (self.device == "auto" and gpu_host()):
            return "tensorflow"
        return "litert"

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
        runtime = self.choose_runtime()
        tflite_model, heads = self._read_serving_artefacts(version_dir, metadata)
        tf_fn, use_gpu = (
            self._load_tensorflow(version_dir) if runtime == "tensorflow" else (None, False)
        )
        self._tf_fn = tf_fn
        self._tflite_model = tflite_model
        self._heads = heads
        self._local = threading.local()
        self.runtime = runtime
        self.metadata = metadata
        self.version_dir = version_dir
        try:
            self.ood = OodStats.load(version_dir)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"cannot read the OOD statistics of {version_dir}: {exc}") from exc
        size = metadata["input"]["size"]
        try:
            self.predict(np.zeros((1, *size), dtype=np.uint8))  # warm-up
        except Exception as exc:  # noqa: BLE001 - a model that cannot run is not loadable
            raise ModelLoadError(f"{version_dir}: the model does not run: {exc}") from exc
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

    @staticmethod
    def _read_serving_artefacts(
        version_dir: Path, metadata: dict[str, Any]
    ) -> tuple[bytes, list[tuple[np.ndarray, np.ndarray]]]:
        """model.tflite and gradcam.npz, each checked against its sha256 in metadata.json."""
        serving = metadata.get("serving")
        if not serving:
            raise ModelLoadError(
                f"{version_dir} has no serving artefacts (model.tflite, gradcam.npz): write "
                "them with `python -m model_training serving-export --model` on that folder"
            )
        for record in (serving["tflite"], serving["gradcam"]):
            path = version_dir / record["file"]
            try:
                digest = _sha256(path)
            except OSError as exc:
                raise ModelLoadError(f"cannot read {path}: {exc}") from exc
            if digest != record["sha256"]:
                raise ModelLoadError(f"{path} does not match its sha256 in metadata.json")
        try:
            heads = gradcam.load_heads(version_dir)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"cannot read the Grad-CAM heads of {version_dir}: {exc}") from exc
        return (version_dir / serving["tflite"]["file"]).read_bytes(), heads

    def _load_tensorflow(self, version_dir: Path) -> tuple[Any, bool]:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            import tensorflow as tf
        except ImportError as exc:
            raise ModelLoadError(
                "the TensorFlow runtime was asked for but TensorFlow is not installed "
                "(the `gpu` image or `pip install .[gpu]` has it)"
            ) from exc
        gpus = tf.config.list_physical_devices("GPU")
        if self.device == "gpu" and not gpus:
            raise ModelLoadError("WBC_DEVICE=gpu but TensorFlow sees no GPU")
        use_gpu = bool(gpus) and self.device in ("auto", "gpu")
        if not use_gpu and gpus:
            tf.config.set_visible_devices([], "GPU")
        try:
            loaded = tf.saved_model.load(str(version_dir))
        except Exception as exc:  # noqa: BLE001 - any failure here means "not loadable"
            raise ModelLoadError(f"cannot load SavedModel from {version_dir}: {exc}") from exc
        self._loaded = loaded
        return loaded.signatures["serving_default"], use_gpu

    # ---- inference -----------------------------------------------------------------
    def _interpreter(self) -> Any:
        """One LiteRT interpreter per thread: interpreters are not thread-safe."""
        lite = getattr(self._local, "lite", None)
        if lite is None:
            from wbc_core.litert import LiteRTModel

            lite = LiteRTModel(self._tflite_model, num_threads=1)
            self._local.lite = lite
        return lite

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """uint8 or float [N, H, W, 3] in 0..255 -> float32 [N, 4] probabilities, and the
        penultimate features [N, D] where the model exports them (else None). An empty
        batch gives empty answers and never reaches the runtime (an interpreter resized
        to zero images was left broken for every later call)."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if len(batch) == 0:
            return np.zeros((0, len(self.classes) or 4), np.float32), None
        if self.runtime == "litert":
            lite = self._interpreter()
            names = tuple(n for n in ("probabilities", "features") if n in lite.outputs)
            out = lite.run(batch, names)
            return out["probabilities"], out.get("features")
        import tensorflow as tf

        result = self._tf_fn(image=tf.constant(batch))
        features = result.get("features")
        return (result["probabilities"].numpy(), None if features is None else features.numpy())

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """uint8 or float [N, H, W, 3] in 0..255 -> float32 [N, 4] probabilities."""
        return self.infer(batch)[0]

    def gradcam(self, image: np.ndarray) -> tuple[np.ndarray, int]:
        """Grad-CAM of the predicted class for one [H, W, 3] image: the map in [0, 1] and
        the class index (LiteRT's last feature maps, the gradient in NumPy)."""
        lite = self._interpreter()
        maps = sorted(n for n in lite.outputs if n.startswith("feature_map_"))
        out = lite.run(np.asarray(image, np.float32)[None], tuple(maps))
        return gradcam.heatmap([out[n][0] for n in maps], self._heads)

    @property
    def classes(self) -> list[str]:
        return list(self.metadata.get("classes", []))
