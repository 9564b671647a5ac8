"""Runs an exported ``model.tflite`` with the standalone LiteRT runtime (``ai-edge-litert``):
the CPU serving path, with no TensorFlow in the process.

One ``LiteRTModel`` is one interpreter with XNNPACK and is not thread-safe: a caller that
serves several threads keeps one per thread. Outputs are read by their signature names
(``probabilities``, ``features``, ``feature_map_<j>``).
"""

from __future__ import annotations

import numpy as np
from ai_edge_litert.interpreter import Interpreter

SIGNATURE = "serving_default"


class LiteRTModel:
    def __init__(self, model_content: bytes, num_threads: int = 1) -> None:
        self._interp = Interpreter(model_content=model_content, num_threads=num_threads)
        runner = self._interp.get_signature_runner(SIGNATURE)
        self._input = runner.get_input_details()["image"]["index"]
        self.outputs = {name: d["index"] for name, d in runner.get_output_details().items()}
        self._batch = -1

    def run(self, batch: np.ndarray, names: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """float32 [N, H, W, 3] in 0..255 (N >= 1) -> {output name: array [N, ...]} for
        ``names`` (default: every output). Arrays are copies: the interpreter's buffers are
        reused by the next call."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if len(batch) == 0:
            raise ValueError("an empty batch never reaches the interpreter")
        if self._batch != len(batch):
            self._interp.resize_tensor_input(self._input, batch.shape)
            self._interp.allocate_tensors()
            self._batch = len(batch)
        self._interp.set_tensor(self._input, batch)
        self._interp.invoke()
        wanted = self.outputs if names is None else {n: self.outputs[n] for n in names}
        return {name: np.array(self._interp.get_tensor(i)) for name, i in wanted.items()}
