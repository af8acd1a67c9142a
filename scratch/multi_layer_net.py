"""The classic fully connected net of any depth, with optional BatchNorm, Dropout and L2 weight
decay (the book's ``MultiLayerNet`` and ``MultiLayerNetExtend`` in one class).

Layers, in forward order, for every hidden layer ``i``::

    Affine{i} -> [BatchNorm{i}] -> Activation_function{i} -> [Dropout{i}]

then ``Affine{L}`` and ``last_layer = SoftmaxWithLoss()``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from scratch.functions import labels_to_indices
from scratch.gradient import numerical_gradient
from scratch.layers import Affine, Relu, Sigmoid, SoftmaxWithLoss, Tanh
from scratch.normalization import BatchNormalization, Dropout

ACTIVATIONS = {"relu": Relu, "sigmoid": Sigmoid, "tanh": Tanh}


def init_std(name: str | float, n_in: int, n_out: int) -> float:
    """The standard deviation of a weight matrix's initial normal values, by name.

    * ``'he'`` or ``'relu'``: ``sqrt(2 / n_in)`` (He et al. 2015, for ReLU).
    * ``'xavier'`` or ``'sigmoid'``: ``sqrt(1 / n_in)``. This is what the book calls "Xavier";
      it is LeCun's initialisation. Also available as ``'lecun'``.
    * ``'glorot'``: ``sqrt(2 / (n_in + n_out))``, Glorot & Bengio's (2010) normal init, the
      one ``torch.nn.init.xavier_normal_`` uses.
    * a number: that standard deviation for every layer (the book's 0.01).
    """
    if isinstance(name, str):
        key = name.lower()
        if key in ("he", "relu"):
            return math.sqrt(2.0 / n_in)
        if key in ("xavier", "sigmoid", "lecun"):
            return math.sqrt(1.0 / n_in)
        if key == "glorot":
            return math.sqrt(2.0 / (n_in + n_out))
        raise ValueError(f"unknown weight_init_std {name!r}: use 'he'/'relu', "
                         f"'xavier'/'sigmoid'/'lecun', 'glorot' or a number")
    return float(name)


class MultiLayerNet:
    """A fully connected net: ``params`` W1, b1, (gamma1, beta1,) ..., W{L}, b{L}.

    * ``activation``: 'relu', 'sigmoid' or 'tanh' after every hidden Affine (and BatchNorm).
    * ``weight_init_std``: see :func:`init_std`; weights are ``std * standard normal`` drawn
      from ``np.random.default_rng(seed)`` in float64, then cast to ``dtype``; biases are 0.
    * ``weight_decay_lambda``: L2 weight decay the classic way: ``0.5 * lambda * sum(W**2)``
      over the *weights* is added to the loss and ``lambda * W`` to their gradients; biases,
      gamma and beta are not decayed (``torch.optim.SGD(weight_decay=...)`` decays every
      parameter and leaves the loss alone: docs/conventions.md).
    * ``use_batchnorm``: a :class:`BatchNormalization` (gamma 1, beta 0, classic settings)
      after every hidden Affine; ``use_dropout``: a :class:`Dropout` (``dropout_ratio``,
      classic scaling, its own generator seeded from ``seed``) after every activation.

    The layers share the arrays in ``params``: an optimizer updating ``params`` in place
    updates the layers.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size_list: Sequence[int],
        output_size: int,
        activation: str = "relu",
        weight_init_std: str | float = "relu",
        weight_decay_lambda: float = 0.0,
        use_batchnorm: bool = False,
        use_dropout: bool = False,
        dropout_ratio: float = 0.5,
        *,
        dtype: np.dtype | type = np.float64,
        seed: int | None = 0,
    ) -> None:
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"MultiLayerNet dtype must be float32 or float64, got {self.dtype}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.input_size = input_size
        self.hidden_size_list = list(hidden_size_list)
        self.hidden_layer_num = len(self.hidden_size_list)
        self.output_size = output_size
        self.activation = activation
        self.weight_init_std = weight_init_std
        self.weight_decay_lambda = float(weight_decay_lambda)
        self.use_batchnorm = use_batchnorm
        self.use_dropout = use_dropout
        self.dropout_ratio = dropout_ratio
        rng = np.random.default_rng(seed)
        self.params: dict[str, np.ndarray] = {}
        sizes = [input_size, *self.hidden_size_list, output_size]
        for idx in range(1, len(sizes)):
            n_in, n_out = sizes[idx - 1], sizes[idx]
            std = init_std(weight_init_std, n_in, n_out)
            self.params[f"W{idx}"] = (std * rng.standard_normal((n_in, n_out))).astype(self.dtype)
            self.params[f"b{idx}"] = np.zeros(n_out, dtype=self.dtype)
            if use_batchnorm and idx <= self.hidden_layer_num:
                self.params[f"gamma{idx}"] = np.ones(n_out, dtype=self.dtype)
                self.params[f"beta{idx}"] = np.zeros(n_out, dtype=self.dtype)
        dropout_seeds = rng.integers(0, 2**32, size=max(self.hidden_layer_num, 1))

        # The layers share the arrays in self.params: updating params in place updates them.
        self.layers: OrderedDict[str, object] = OrderedDict()
        for idx in range(1, self.hidden_layer_num + 1):
            self.layers[f"Affine{idx}"] = Affine(self.params[f"W{idx}"], self.params[f"b{idx}"])
            if use_batchnorm:
                self.layers[f"BatchNorm{idx}"] = BatchNormalization(
                    self.params[f"gamma{idx}"], self.params[f"beta{idx}"])
            self.layers[f"Activation_function{idx}"] = ACTIVATIONS[activation]()
            if use_dropout:
                self.layers[f"Dropout{idx}"] = Dropout(dropout_ratio,
                                                       rng=int(dropout_seeds[idx - 1]))
        last = self.hidden_layer_num + 1
        self.layers[f"Affine{last}"] = Affine(self.params[f"W{last}"], self.params[f"b{last}"])
        self.last_layer = SoftmaxWithLoss()

    def _as_input(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x).astype(self.dtype, copy=False)

    def predict(self, x: np.ndarray, train_flg: bool = False) -> np.ndarray:
        x = self._as_input(x)
        for layer in self.layers.values():
            if isinstance(layer, (BatchNormalization, Dropout)):
                x = layer.forward(x, train_flg)
            else:
                x = layer.forward(x)
        return x

    def weight_decay(self) -> np.ndarray:
        """``0.5 * lambda * sum(W**2)`` over the weight matrices (0 without decay)."""
        total = self.dtype.type(0)
        if self.weight_decay_lambda:
            half_lambda = self.dtype.type(0.5 * self.weight_decay_lambda)
            for idx in range(1, self.hidden_layer_num + 2):
                W = self.params[f"W{idx}"]
                total = total + half_lambda * np.sum(W * W)
        return total

    def loss(self, x: np.ndarray, t: np.ndarray, train_flg: bool = False) -> np.ndarray:
        y = self.predict(x, train_flg)
        return self.last_layer.forward(y, t) + self.weight_decay()

    def accuracy(self, x: np.ndarray, t: np.ndarray) -> float:
        y = np.argmax(self.predict(x, train_flg=False), axis=1)
        idx = labels_to_indices(t, self.output_size)
        return float(np.sum(y == idx)) / float(x.shape[0])

    def gradient(self, x: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
        """Backprop in training mode; a dict keyed like ``params``."""
        self.loss(x, t, train_flg=True)
        dout = self.last_layer.backward(1.0)
        for layer in reversed(self.layers.values()):
            dout = layer.backward(dout)
        lam = self.dtype.type(self.weight_decay_lambda)
        grads: dict[str, np.ndarray] = {}
        for idx in range(1, self.hidden_layer_num + 2):
            affine = self.layers[f"Affine{idx}"]
            grads[f"W{idx}"] = affine.grads["W"] + lam * affine.params["W"]
            grads[f"b{idx}"] = affine.grads["b"]
            if self.use_batchnorm and idx <= self.hidden_layer_num:
                bn = self.layers[f"BatchNorm{idx}"]
                grads[f"gamma{idx}"] = bn.grads["gamma"]
                grads[f"beta{idx}"] = bn.grads["beta"]
        return grads

    def numerical_gradient(self, x: np.ndarray, t: np.ndarray, h: float = 1e-4) -> dict:
        """Central differences of ``loss(x, t, train_flg=True)`` for every parameter.

        Every Dropout layer is frozen on the mask of the last training forward (drawn now if
        there was none), so that the loss is a function of the parameters and this matches
        :meth:`gradient` called just before; BatchNorm running statistics are restored after.
        """
        dropouts = [layer for layer in self.layers.values() if isinstance(layer, Dropout)]
        bns = [layer for layer in self.layers.values() if isinstance(layer, BatchNormalization)]
        saved_masks = [d.fixed_mask for d in dropouts]
        saved_stats = [(b.running_mean.copy(), b.running_var.copy()) for b in bns]
        if dropouts:
            if any(d.mask is None for d in dropouts):
                self.predict(x, train_flg=True)
            for d in dropouts:
                d.set_mask(d.mask)

        def loss_w(_: np.ndarray) -> float:
            return float(self.loss(x, t, train_flg=True))

        try:
            return {k: numerical_gradient(loss_w, v, h) for k, v in self.params.items()}
        finally:
            for d, mask in zip(dropouts, saved_masks, strict=True):
                d.fixed_mask = mask
            for b, (rm, rv) in zip(bns, saved_stats, strict=True):
                b.running_mean, b.running_var = rm, rv
