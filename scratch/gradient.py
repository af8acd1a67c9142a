"""Numerical gradient by central differences, the reference every backprop is checked against."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def numerical_gradient(f: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-4) -> np.ndarray:
    """``(f(x + h) - f(x - h)) / 2h`` for every element of ``x``.

    ``x`` is perturbed in place and restored exactly after each element (so ``f`` may read ``x``
    through a closure, as the classic code does); the result has ``x``'s shape and dtype.

    The difference is divided by the step actually taken, ``(x + h) - (x - h)`` as stored in
    ``x``'s dtype, not by ``2h``: in float32 ``x + h`` is rounded (for ``|x|`` near 1000 the
    step is 22% off ``2h``), and where ``h`` is below half a unit in the last place of ``x``
    the element moves to its neighbouring values instead of not at all.
    """
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=[["readwrite"]])
    while not it.finished:
        idx = it.multi_index
        saved = x[idx].copy()
        plus, minus = x.dtype.type(saved + h), x.dtype.type(saved - h)
        if plus == saved:
            plus = np.nextafter(saved, np.inf, dtype=x.dtype)
        if minus == saved:
            minus = np.nextafter(saved, -np.inf, dtype=x.dtype)
        x[idx] = plus
        f_plus = float(f(x))
        x[idx] = minus
        f_minus = float(f(x))
        x[idx] = saved
        grad[idx] = (f_plus - f_minus) / (float(plus) - float(minus))
        it.iternext()
    return grad
