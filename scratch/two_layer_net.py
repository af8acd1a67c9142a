"""The classic two-layer net: Affine -> Relu -> Affine -> SoftmaxWithLoss (784-50-10)."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from scratch.functions import labels_to_indices
from scratch.gradient import numerical_gradient
from scratch.layers import Affine, Relu, SoftmaxWithLoss


class TwoLayerNet:
    """``params`` holds W1 (in, hidden), b1, W2 (hidden, out), b2, all of one explicit dtype.

    Weights are ``weight_init_std * standard normal`` drawn from ``np.random.default_rng(seed)``
    in float64 and then cast, so float32 and float64 nets with the same seed start from the
    same values (up to float32 rounding). Biases start at zero.
    """

    def __init__(
        self,
        input_size: int = 784,
        hidden_size: int = 50,
        output_size: int = 10,
        weight_init_std: float = 0.01,
        *,
        dtype: np.dtype | type = np.float64,
        seed: int | None = 0,
    ) -> None:
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"TwoLayerNet dtype must be float32 or float64, got {self.dtype}")
        rng = np.random.default_rng(seed)
        std = weight_init_std
        self.params: dict[str, np.ndarray] = {
            "W1": (std * rng.standard_normal((input_size, hidden_size))).astype(self.dtype),
            "b1": np.zeros(hidden_size, dtype=self.dtype),
            "W2": (std * rng.standard_normal((hidden_size, output_size))).astype(self.dtype),
            "b2": np.zeros(output_size, dtype=self.dtype),
        }
        self._build_layers()

    def _build_layers(self) -> None:
        # The layers share the arrays in self.params: updating params in place updates them.
        # The first layer's input is the data: its gradient is never used, so it is not
        # computed (need_dx=False; set layers["Affine1"].need_dx = True to get it back).
        self.layers: OrderedDict[str, object] = OrderedDict()
        self.layers["Affine1"] = Affine(self.params["W1"], self.params["b1"], need_dx=False)
        self.layers["Relu1"] = Relu()
        self.layers["Affine2"] = Affine(self.params["W2"], self.params["b2"])
        self.last_layer = SoftmaxWithLoss()

    def _as_input(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x).astype(self.dtype, copy=False)

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = self._as_input(x)
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        return self.last_layer.forward(self.predict(x), t)

    def accuracy(self, x: np.ndarray, t: np.ndarray) -> float:
        y = np.argmax(self.predict(x), axis=1)
        idx = labels_to_indices(t, self.params["b2"].shape[0])
        return float(np.sum(y == idx)) / float(x.shape[0])

    def numerical_gradient(self, x: np.ndarray, t: np.ndarray, h: float = 1e-4) -> dict:
        def loss_w(_: np.ndarray) -> float:
            return float(self.loss(x, t))

        return {k: numerical_gradient(loss_w, v, h) for k, v in self.params.items()}

    def gradient(self, x: np.ndarray, t: np.ndarray) -> dict:
        self.loss(x, t)
        dout = self.last_layer.backward(1.0)
        for layer in reversed(self.layers.values()):
            dout = layer.backward(dout)
        a1, a2 = self.layers["Affine1"], self.layers["Affine2"]
        return {"W1": a1.grads["W"], "b1": a1.grads["b"], "W2": a2.grads["W"], "b2": a2.grads["b"]}
