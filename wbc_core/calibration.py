"""Temperature scaling of a model's probabilities (the temperature is fitted at training
time and stored in the model's metadata.json)."""

from __future__ import annotations

import numpy as np


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / T) computed from probabilities: p^(1/T), renormalised."""
    logp = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    logp -= logp.max(axis=-1, keepdims=True)
    scaled = np.exp(logp)
    return scaled / scaled.sum(axis=-1, keepdims=True)
