"""User layers with no built-in counterpart: registered with their PyTorch twins.

    nn-parity check --module examples/user_registered.py

``register(cls, torch_factory, weight_map, **options)`` (or the ``@register.twin(...)``
decorator) pairs a scratch class with a function that builds the torch module for a given
layer. ``weight_map`` maps each scratch parameter to the torch parameter it is copied into
(with a layout conversion when needed); options give the default ``input_shape(layer, batch)``
and an ``example(rng, dtype)`` instance for ``nn-parity check``. Without ``example`` the class
is built with its zero-argument constructor; without ``input_shape`` pass ``--input-shape``.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from reference import WeightSpec, register, transpose


class LeakyRelu:
    def __init__(self, alpha=0.01):
        self.alpha = alpha
        self.mask = None

    def forward(self, x):
        self.mask = x <= 0
        return np.where(self.mask, x * x.dtype.type(self.alpha), x)

    def backward(self, dout):
        return np.where(self.mask, dout * dout.dtype.type(self.alpha), dout)


register(LeakyRelu, lambda layer: nn.LeakyReLU(layer.alpha),
         input_shape=lambda layer, batch: (batch, 9))


def _dense_example(rng, dtype):
    return Dense((rng.standard_normal((6, 4)) / np.sqrt(6)).astype(dtype),
                 (0.1 * rng.standard_normal(4)).astype(dtype))


@register.twin(lambda layer: nn.Linear(*layer.params["W"].shape),
               {"W": WeightSpec("weight", transpose, transpose), "b": "bias"},
               input_shape=lambda layer, batch: (batch, layer.params["W"].shape[0]),
               example=_dense_example)
class Dense:
    """``x @ W + b`` with ``W`` of shape (in, out); nn.Linear keeps (out, in): transposed."""

    def __init__(self, W, b):
        self.params = {"W": W, "b": b}
        self.grads = {"W": np.zeros_like(W), "b": np.zeros_like(b)}
        self.x = None

    def forward(self, x):
        self.x = x
        return x @ self.params["W"] + self.params["b"]

    def backward(self, dout):
        self.grads["W"] = self.x.T @ dout
        self.grads["b"] = dout.sum(axis=0)
        return dout @ self.params["W"].T
