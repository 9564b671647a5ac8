"""From upload bytes to a classification: shared preprocessing, predictor, calibration."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from app.errors import BadImage, ModelNotReady, PayloadTooLarge, UnsupportedMediaType
from app.observability import CLASSIFIED, SEVERAL_CELLS
from app.predictor import Predictor
from model_training.cellcheck import CellCheck
from model_training.metrics import apply_temperature
from model_training.preprocessing import (
    ImageError,
    ImageTooLarge,
    Prepared,
    UnsupportedFormat,
    balance_of,
    open_image,
    preprocess_bytes,
    preprocess_cells,
    preprocess_opened,
)

UNKNOWN = "unknown"
CHUNK = 64  # crops per inference call


@dataclass
class Classifier:
    predictor: Predictor
    max_pixels: int
    review_threshold: float | None = None
    cell_check: CellCheck = field(init=False)
    balance: str = field(init=False)

    def __post_init__(self) -> None:
        self.cell_check = CellCheck(self.predictor.metadata.get("cell_check"))
        self.balance = balance_of(self.predictor.metadata)  # as the model was trained

    @property
    def threshold(self) -> float:
        if self.review_threshold is not None:
            return self.review_threshold
        return float(self.predictor.metadata.get("review_threshold", 0.9))

    @property
    def temperature(self) -> float:
        return float(self.predictor.metadata.get("temperature", 1.0))

    def model_info(self) -> dict[str, str]:
        meta = self.predictor.metadata
        return {"name": str(meta.get("name", "wbc-classifier")),
                "version": str(meta.get("version", "?"))}

    def open(self, data: bytes) -> Image.Image:
        """Read an upload's header only: format and pixel limit checked, nothing decoded
        (what the pixels will cost is known before they are decoded). 4xx on bad input."""
        with _http_errors():
            return open_image(data, self.max_pixels)

    def prepare(self, upload: bytes | Image.Image) -> Prepared:
        """Decode and localise one upload (bytes, or what ``open`` made of them);
        BadImage / PayloadTooLarge / UnsupportedMediaType on bad input."""
        with _http_errors():
            if isinstance(upload, Image.Image):
                prepared = preprocess_opened(upload, self.balance)
            else:
                prepared = preprocess_bytes(upload, self.max_pixels, self.balance)
        if prepared.others:
            SEVERAL_CELLS.inc()
        return prepared

    def prepare_cells(self, upload: bytes | Image.Image) -> list[Prepared]:
        """Like ``prepare``, a crop of every white cell found, the most prominent first."""
        with _http_errors():
            cells = preprocess_cells(upload, self.max_pixels, self.balance)
        if len(cells) > 1:
            SEVERAL_CELLS.inc()
        return cells

    def classify(self, prepared: list[Prepared]) -> list[dict[str, Any]]:
        """Run the network on prepared crops and shape one result per crop."""
        if not self.predictor.ready:
            raise ModelNotReady("model is not loaded yet")
        if not prepared:
            return []
        raw = np.concatenate([  # in chunks: a 500-image differential stays a bounded batch
            self.predictor.predict(np.stack([p.array for p in prepared[i:i + CHUNK]]))
            for i in range(0, len(prepared), CHUNK)])
        probs = apply_temperature(raw, self.temperature)
        classes = self.predictor.classes
        check = self.cell_check
        results = []
        for p, row in zip(prepared, probs, strict=True):
            best = int(np.argmax(row))
            is_cell = check.is_cell(p.array, p.box.localised)
            label = classes[best] if is_cell else UNKNOWN
            CLASSIFIED.labels(label).inc()
            results.append({
                "label": label,
                "confidence": round(float(row[best]), 6) if is_cell else 0.0,
                "probabilities": {c: round(float(v), 6) for c, v in zip(classes, row,
                                                                        strict=True)},
                "needs_review": bool(row[best] < self.threshold) or not is_cell,
                "is_cell": is_cell,
                "localised": p.box.localised,
                "cell_box": p.box.as_list(),
                "other_cells": [b.as_list() for b in p.others],
                "model": self.model_info(),
            })
        return results

    def classify_one(self, upload: bytes | Image.Image) -> dict[str, Any]:
        return self.classify([self.prepare(upload)])[0]


@contextmanager
def _http_errors() -> Iterator[None]:
    """The preprocessing's image errors as the HTTP errors the API documents."""
    try:
        yield
    except ImageTooLarge as exc:
        raise PayloadTooLarge(str(exc)) from exc
    except UnsupportedFormat as exc:
        raise UnsupportedMediaType(str(exc)) from exc
    except ImageError as exc:
        raise BadImage(str(exc)) from exc
