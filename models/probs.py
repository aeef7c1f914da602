"""Small numpy helpers on class probabilities: softmax and temperature scaling."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Return the row-wise softmax of ``logits`` as float32."""
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return (z / z.sum(axis=1, keepdims=True)).astype(np.float32)


def tempered(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Return ``softmax(log(probs) / T)``: the probabilities of logits divided by ``temperature``."""
    return softmax(np.log(np.clip(probs, 1e-30, None)) / temperature)
