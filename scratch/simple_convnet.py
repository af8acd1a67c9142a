"""The classic small convolutional net::

    Conv1 (30 filters 5x5) -> Relu1 -> Pool1 (max 2x2, stride 2) -> Affine1 (100) -> Relu2
    -> Affine2 (10) -> SoftmaxWithLoss
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from scratch.convolution import Convolution, Pooling, conv_output_size
from scratch.functions import labels_to_indices
from scratch.gradient import numerical_gradient
from scratch.layers import Affine, Relu, SoftmaxWithLoss
from scratch.multi_layer_net import init_std

DEFAULT_CONV_PARAM = {"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1}


class SimpleConvNet:
    """``params``: W1 (FN, C, FS, FS), b1 (FN,), W2 (FN*PH*PW, hidden), b2, W3 (hidden, out), b3.

    ``input_dim`` is (C, H, W); ``conv_param`` has filter_num, filter_size, pad, stride (missing
    keys take the defaults 30, 5, 0, 1). The pooled size is ``conv_output_size // 2`` per side
    (2x2 windows, stride 2, no padding; an odd row or column is dropped, as in torch).
    ``weight_init_std`` is a number (the book's 0.01) or a name understood by
    :func:`scratch.multi_layer_net.init_std` (fan-in = C*FS*FS for the convolution).
    Weights come from ``np.random.default_rng(seed)`` in float64 and are cast to ``dtype``.
    """

    def __init__(
        self,
        input_dim: tuple[int, int, int] = (1, 28, 28),
        conv_param: dict[str, int] | None = None,
        hidden_size: int = 100,
        output_size: int = 10,
        weight_init_std: str | float = 0.01,
        *,
        dtype: np.dtype | type = np.float64,
        seed: int | None = 0,
    ) -> None:
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"SimpleConvNet dtype must be float32 or float64, got {self.dtype}")
        cp = {**DEFAULT_CONV_PARAM, **(conv_param or {})}
        filter_num, filter_size = cp["filter_num"], cp["filter_size"]
        pad, stride = cp["pad"], cp["stride"]
        C, H, W = input_dim
        conv_h = conv_output_size(H, filter_size, stride, pad)
        conv_w = conv_output_size(W, filter_size, stride, pad)
        pool_output_size = filter_num * (conv_h // 2) * (conv_w // 2)
        self.input_dim, self.conv_param, self.output_size = tuple(input_dim), cp, output_size
        rng = np.random.default_rng(seed)

        def weights(shape: tuple[int, ...], n_in: int, n_out: int) -> np.ndarray:
            std = init_std(weight_init_std, n_in, n_out)
            return (std * rng.standard_normal(shape)).astype(self.dtype)

        fan_in = C * filter_size * filter_size
        self.params: dict[str, np.ndarray] = {
            "W1": weights((filter_num, C, filter_size, filter_size), fan_in, filter_num),
            "b1": np.zeros(filter_num, dtype=self.dtype),
            "W2": weights((pool_output_size, hidden_size), pool_output_size, hidden_size),
            "b2": np.zeros(hidden_size, dtype=self.dtype),
            "W3": weights((hidden_size, output_size), hidden_size, output_size),
            "b3": np.zeros(output_size, dtype=self.dtype),
        }
        # The layers share the arrays in self.params: updating params in place updates them.
        self.layers: OrderedDict[str, object] = OrderedDict()
        self.layers["Conv1"] = Convolution(self.params["W1"], self.params["b1"], stride, pad)
        self.layers["Relu1"] = Relu()
        self.layers["Pool1"] = Pooling(pool_h=2, pool_w=2, stride=2)
        self.layers["Affine1"] = Affine(self.params["W2"], self.params["b2"])
        self.layers["Relu2"] = Relu()
        self.layers["Affine2"] = Affine(self.params["W3"], self.params["b3"])
        self.last_layer = SoftmaxWithLoss()

    def _as_input(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x).astype(self.dtype, copy=False)

    def predict(self, x: np.ndarray, train_flg: bool = False) -> np.ndarray:
        """Scores (N, output_size); ``train_flg`` is accepted for a uniform net interface."""
        x = self._as_input(x)
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x: np.ndarray, t: np.ndarray, train_flg: bool = False) -> np.ndarray:
        return self.last_layer.forward(self.predict(x, train_flg), t)

    def accuracy(self, x: np.ndarray, t: np.ndarray, batch_size: int = 100) -> float:
        idx = labels_to_indices(t, self.output_size)
        correct = 0
        for i in range(0, x.shape[0], batch_size):
            y = np.argmax(self.predict(x[i : i + batch_size]), axis=1)
            correct += int(np.sum(y == idx[i : i + batch_size]))
        return correct / float(x.shape[0])

    def gradient(self, x: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
        self.loss(x, t, train_flg=True)
        dout = self.last_layer.backward(1.0)
        for layer in reversed(self.layers.values()):
            dout = layer.backward(dout)
        conv, a1, a2 = self.layers["Conv1"], self.layers["Affine1"], self.layers["Affine2"]
        return {"W1": conv.grads["W"], "b1": conv.grads["b"], "W2": a1.grads["W"],
                "b2": a1.grads["b"], "W3": a2.grads["W"], "b3": a2.grads["b"]}

    def numerical_gradient(self, x: np.ndarray, t: np.ndarray, h: float = 1e-4) -> dict:
        def loss_w(_: np.ndarray) -> float:
            return float(self.loss(x, t, train_flg=True))

        return {k: numerical_gradient(loss_w, v, h) for k, v in self.params.items()}
