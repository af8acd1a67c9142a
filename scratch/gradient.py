"""Numerical gradient by central differences, the reference every backprop is checked against."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def numerical_gradient(f: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-4) -> np.ndarray:
    """``(f(x + h) - f(x - h)) / 2h`` for every element of ``x``.

    ``x`` is perturbed in place and restored exactly after each element (so ``f`` may read ``x``
    through a closure, as the classic code does); the result has ``x``'s shape and dtype.
    """
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=[["readwrite"]])
    while not it.finished:
        idx = it.multi_index
        saved = x[idx].copy()
        x[idx] = saved + h
        f_plus = float(f(x))
        x[idx] = saved - h
        f_minus = float(f(x))
        x[idx] = saved
        grad[idx] = (f_plus - f_minus) / (2 * h)
        it.iternext()
    return grad
