"""Layers laid out the way "Deep Learning from Scratch" lays them out: weights as attributes
(``self.W``, ``self.b``), gradients as ``self.dW``, ``self.db``; no params/grads dicts, no base
class, no registration.

    nn-parity check --module examples/book_layers.py

A class named like a built-in layer (Affine, Relu, Sigmoid, Tanh, SoftmaxWithLoss,
Convolution, Pooling) is checked against that built-in's PyTorch twin, its parameters read
from its attributes (harness/book_layers.py). Dropout and BatchNormalization are not matched
by name (their twins use switches of the scratch classes): subclass scratch's instead.
"""

from __future__ import annotations

import numpy as np


class Affine:
    def __init__(self, W, b):
        self.W = W
        self.b = b
        self.x = None
        self.x_shape = None
        self.dW = None
        self.db = None

    def forward(self, x):
        self.x_shape = x.shape
        self.x = x.reshape(x.shape[0], -1)
        return self.x @ self.W + self.b

    def backward(self, dout):
        self.dW = self.x.T @ dout
        self.db = dout.sum(axis=0)
        return (dout @ self.W.T).reshape(self.x_shape)


class Relu:
    def __init__(self):
        self.mask = None

    def forward(self, x):
        self.mask = x <= 0
        out = x.copy()
        out[self.mask] = 0
        return out

    def backward(self, dout):
        dx = dout.copy()  # writing into dout itself (as the book does) is flagged
        dx[self.mask] = 0
        return dx


class Sigmoid:
    def __init__(self):
        self.out = None

    def forward(self, x):
        self.out = 1 / (1 + np.exp(-x))
        return self.out

    def backward(self, dout):
        return dout * (1.0 - self.out) * self.out


class SoftmaxWithLoss:
    def __init__(self):
        self.y = None
        self.t = None

    def forward(self, x, t):
        shifted = x - x.max(axis=1, keepdims=True)
        self.y = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
        self.t = t if t.ndim == 1 else t.argmax(axis=1)
        n = x.shape[0]
        return -np.log(self.y[np.arange(n), self.t] + 1e-7).sum() / n

    def backward(self, dout=1):
        n = self.y.shape[0]
        dx = self.y.copy()
        dx[np.arange(n), self.t] -= 1
        return dx / n
