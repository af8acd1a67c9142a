"""Layers whose input is integer indices (token ids, class labels), registered with their twins.

    nn-parity check --module examples/user_embedding.py

The harness passes an integer input to the scratch layer as it is and to the torch twin as
``torch.long``; the parameters are cast to the check's dtype as usual. Indices have no
gradient, so the output and ``dW`` are compared and ``dx`` is not (the report says so):
``backward`` may return None. ``make_input=index_input(...)`` makes the default inputs
integer indices in range, with a repeated index, so a backward that writes
``grads["W"][idx] += dout`` (which keeps only one of a repeated index's gradients) fails
where ``np.add.at`` passes. From Python: ``check_layer(Embedding(W), x=np.array([[1, 2, 1]]))``.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from reference import index_input, register


def _rows(layer):
    return layer.params["W"].shape[0]


def _example(cls):
    return lambda rng, dtype: cls((rng.standard_normal((10, 4))).astype(dtype))


class Embedding:
    """``W[idx]``: one row of ``W`` (num_embeddings, dim) per index."""

    def __init__(self, W):
        self.params = {"W": W}
        self.grads = {"W": np.zeros_like(W)}
        self.idx = None

    def forward(self, idx):
        self.idx = idx
        return self.params["W"][idx]

    def backward(self, dout):
        self.grads["W"] = np.zeros_like(self.params["W"])
        np.add.at(self.grads["W"], self.idx, dout)  # repeated indices add up
        return None


class EmbeddingBag(Embedding):
    """The sum of each row's bag of embeddings: (batch, bag) indices -> (batch, dim)."""

    def forward(self, idx):
        self.idx = idx
        return self.params["W"][idx].sum(axis=1)

    def backward(self, dout):
        self.grads["W"] = np.zeros_like(self.params["W"])
        np.add.at(self.grads["W"], self.idx, dout[:, None, :])
        return None


register(Embedding, lambda layer: nn.Embedding(*layer.params["W"].shape), {"W": "weight"},
         input_shape=lambda layer, batch: (batch, 5),       # 5 indices per sample
         make_input=index_input(_rows), example=_example(Embedding))

register(EmbeddingBag, lambda layer: nn.EmbeddingBag(*layer.params["W"].shape, mode="sum"),
         {"W": "weight"}, input_shape=lambda layer, batch: (batch, 5),
         make_input=index_input(_rows), example=_example(EmbeddingBag))
