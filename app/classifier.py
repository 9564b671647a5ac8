"""From upload bytes to a classification: shared preprocessing, predictor, calibration."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from app.errors import BadImage, ModelNotReady, PayloadTooLarge, UnsupportedMediaType
from app.observability import (
    CELLS_SEEN,
    CLASSIFIED,
    OUT_OF_DISTRIBUTION_CELLS,
    SEVERAL_CELLS,
)
from app.predictor import Predictor
from wbc_core.calibration import apply_temperature
from wbc_core.cellcheck import CellCheck
from wbc_core.preprocessing import (
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
# Why a cell needs review (``review_reasons``); ``needs_review`` is true whenever any applies.
LOW_CONFIDENCE = "low_confidence"  # calibrated confidence below the review threshold
OUT_OF_DISTRIBUTION = "out_of_distribution"  # unlike every cell the model was trained on
NOT_A_CELL = "not_a_cell"  # not a stained white cell: the label is "unknown"
CELL_NOT_FOUND = "cell_not_found"  # no white cell located: the whole image was classified
REVIEW_REASONS = (LOW_CONFIDENCE, OUT_OF_DISTRIBUTION, NOT_A_CELL, CELL_NOT_FOUND)


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
        return {
            "name": str(meta.get("name", "wbc-classifier")),
            "version": str(meta.get("version", "?")),
        }

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
        chunks = [  # in chunks: a 500-image differential stays a bounded batch
            self.predictor.infer(np.stack([p.array for p in prepared[i : i + CHUNK]]))
            for i in range(0, len(prepared), CHUNK)
        ]
        probs = apply_temperature(np.concatenate([c[0] for c in chunks]), self.temperature)
        scores = self.ood_scores(chunks)
        classes = self.predictor.classes
        check = self.cell_check
        version = self.model_info()["version"]
        results = []
        for p, row, score in zip(prepared, probs, scores, strict=True):
            best = int(np.argmax(row))
            is_cell = check.is_cell(p.array, p.box.localised)
            label = classes[best] if is_cell else UNKNOWN
            reasons = self.review_reasons(float(row[best]), score, is_cell, p.box.localised)
            CLASSIFIED.labels(label).inc()
            CELLS_SEEN.labels(version).inc()
            if OUT_OF_DISTRIBUTION in reasons:
                OUT_OF_DISTRIBUTION_CELLS.labels(version).inc()
            results.append(
                {
                    "label": label,
                    "confidence": round(float(row[best]), 6) if is_cell else 0.0,
                    "probabilities": {
                        c: round(float(v), 6) for c, v in zip(classes, row, strict=True)
                    },
                    "needs_review": bool(reasons),
                    "review_reasons": reasons,
                    "ood_score": None if score is None else round(float(score), 4),
                    "is_cell": is_cell,
                    "localised": p.box.localised,
                    "cell_box": p.box.as_list(),
                    "other_cells": [b.as_list() for b in p.others],
                    "model": self.model_info(),
                }
            )
        return results

    @property
    def ood_threshold(self) -> float | None:
        """The guard's distance threshold, or None when this model version has no guard."""
        ood = self.predictor.ood
        return None if ood is None else ood.threshold

    def ood_scores(self, chunks: list[tuple[np.ndarray, np.ndarray | None]]) -> list[float | None]:
        """Each crop's distance to the training data (``infer``'s chunks); None for every
        crop when this model version has no guard."""
        n = sum(len(probs) for probs, _ in chunks)
        ood = self.predictor.ood
        if ood is None or n == 0 or any(f is None for _, f in chunks):
            return [None] * n
        return [float(v) for v in ood.score(np.concatenate([f for _, f in chunks]))]

    def review_reasons(
        self, confidence: float, score: float | None, is_cell: bool, localised: bool
    ) -> list[str]:
        """Why a cell needs review (empty: it may be released), in ``REVIEW_REASONS`` order."""
        reasons = []
        if is_cell and confidence < self.threshold:
            reasons.append(LOW_CONFIDENCE)
        if score is not None and self.ood_threshold is not None and score > self.ood_threshold:
            reasons.append(OUT_OF_DISTRIBUTION)
        if not is_cell:
            reasons.append(NOT_A_CELL)
        if not localised:
            reasons.append(CELL_NOT_FOUND)
        return reasons

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
