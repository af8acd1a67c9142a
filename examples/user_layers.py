"""A user's own layers, written book-style, checked against PyTorch in one command:

    nn-parity check --module examples/user_layers.py

Each class subclasses the matching scratch layer, so the harness finds its PyTorch twin
through the class hierarchy: no registration, no torch import here. The code is the user's
own (the base classes only supply the ``params``/``grads`` protocol and the twin); it follows
the classic layer-by-layer style: ``forward`` caches what ``backward`` needs.

Protocol: ``forward(x)`` returns the output, ``backward(dout)`` returns ``dx``; a layer with
weights keeps them in ``self.params`` and fills ``self.grads`` (same keys) in ``backward``.
Loss layers: ``forward(x, t)`` returns the loss and ``backward(dout=1)`` returns ``dx``.
"""

from __future__ import annotations

import numpy as np

from scratch.layers import Affine as AffineBase
from scratch.layers import Relu as ReluBase
from scratch.layers import SoftmaxWithLoss as SoftmaxWithLossBase


def softmax(x):
    x = x - np.max(x, axis=-1, keepdims=True)  # no overflow
    e = np.exp(x)
    return e / np.sum(e, axis=-1, keepdims=True)


def cross_entropy_error(y, t):
    if y.ndim == 1:
        t = t.reshape(1, t.size)
        y = y.reshape(1, y.size)
    if t.size == y.size:  # one-hot labels -> class indices
        t = t.argmax(axis=1)
    batch_size = y.shape[0]
    return -np.sum(np.log(y[np.arange(batch_size), t] + 1e-7)) / batch_size


class Relu(ReluBase):
    def __init__(self):
        super().__init__()
        self.mask = None

    def forward(self, x):
        self.mask = x <= 0
        out = x.copy()
        out[self.mask] = 0
        return out

    def backward(self, dout):
        dx = dout.copy()
        dx[self.mask] = 0
        return dx


class Affine(AffineBase):
    def __init__(self, W, b):
        super().__init__(W, b)  # self.params = {"W": W, "b": b}, self.grads likewise
        self.x = None
        self.original_x_shape = None

    def forward(self, x):
        self.original_x_shape = x.shape
        x = x.reshape(x.shape[0], -1)
        self.x = x
        return np.dot(x, self.params["W"]) + self.params["b"]

    def backward(self, dout):
        dx = np.dot(dout, self.params["W"].T)
        self.grads["W"] = np.dot(self.x.T, dout)
        self.grads["b"] = np.sum(dout, axis=0)
        return dx.reshape(*self.original_x_shape)


class SoftmaxWithLoss(SoftmaxWithLossBase):
    def __init__(self):
        super().__init__()
        self.loss = None
        self.y = None  # softmax output
        self.t = None  # labels

    def forward(self, x, t):
        self.t = t
        self.y = softmax(x)
        self.loss = cross_entropy_error(self.y, self.t)
        return self.loss

    def backward(self, dout=1):
        batch_size = self.t.shape[0]
        if self.t.size == self.y.size:  # one-hot labels
            dx = (self.y - self.t) / batch_size
        else:
            dx = self.y.copy()
            dx[np.arange(batch_size), self.t] -= 1
            dx = dx / batch_size
        return dx * dout
