"""Plain NumPy functions used by the layers: activations, softmax, losses.

Every function works on float32 and float64 alike and never promotes: the result has the
dtype of its floating-point input.
"""

from __future__ import annotations

import numpy as np

CLASSIC_LOG_EPS = 1e-7
"""The classic cross-entropy adds this inside the log: ``-log(y + 1e-7)``."""


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function (no overflow warning for large |x|)."""
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1 / (1 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1 + ex)
    return out


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis; works for 1-D input and for a batch (N, C)."""
    shifted = x - np.max(x, axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / np.sum(e, axis=-1, keepdims=True)


def log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - np.max(x, axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def labels_to_indices(t: np.ndarray, num_classes: int) -> np.ndarray:
    """Integer class indices from integer labels or one-hot rows; validates the range."""
    t = np.asarray(t)
    if t.ndim >= 1 and t.shape[-1] == num_classes and t.ndim == 2:
        return np.argmax(t, axis=-1)
    if not np.issubdtype(t.dtype, np.integer):
        raise TypeError(f"labels must be integers or one-hot rows, got dtype {t.dtype}")
    if t.size and (t.min() < 0 or t.max() >= num_classes):
        raise ValueError(
            f"labels out of range: expected 0..{num_classes - 1}, got min {t.min()} max {t.max()}"
        )
    return t.reshape(-1)


def cross_entropy_error(
    y: np.ndarray, t: np.ndarray, eps: float = CLASSIC_LOG_EPS
) -> np.ndarray:
    """Classic mean cross-entropy of probabilities ``y`` (N, C) or (C,) against labels ``t``.

    ``t`` holds integer labels or one-hot rows. The classic code adds ``eps`` inside the log,
    so the loss saturates at ``-log(1e-7) = 16.118`` instead of growing without bound.
    """
    if y.ndim == 1:
        y = y.reshape(1, -1)
        t = np.asarray(t).reshape(1, -1) if np.asarray(t).size == y.shape[1] else np.asarray(t)
    idx = labels_to_indices(t, y.shape[1])
    n = y.shape[0]
    picked = y[np.arange(n), idx]
    return -np.sum(np.log(picked + y.dtype.type(eps))) / y.dtype.type(n)
