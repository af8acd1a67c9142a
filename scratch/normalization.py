"""Batch normalization and dropout, one class each, ``forward`` and ``backward`` side by side.

Both layers behave differently in training and at test time, so their ``forward`` takes
``train_flg`` (True by default, as in the book). Both keep the classic semantics by default and
offer a switch for every place where PyTorch does something else (docs/conventions.md):

* :class:`BatchNormalization`: ``momentum`` is the classic *keep* factor (0.9 = torch's
  ``momentum=0.1``), ``eps=1e-6``, running variance starting at 0 and *biased*, and on 4-D input
  ``mode="classic"`` normalises every activation (C*H*W features, like ``BatchNorm1d`` on the
  flattened input) while ``mode="per_channel"`` normalises each channel (like ``BatchNorm2d``).
* :class:`Dropout`: ``scale="classic"`` multiplies by ``1 - p`` at test time, ``scale="inverted"``
  divides by ``1 - p`` in training (``nn.Dropout``). A mask can be injected with ``set_mask`` so
  two implementations (or a numerical gradient) can see the same one.
"""

from __future__ import annotations

import numpy as np

from scratch.layers import Layer

CLASSIC_BN_EPS = 1e-6
"""The classic code writes ``np.sqrt(var + 10e-7)``: ``10e-7`` is ``1e-6`` (torch's default is
``1e-5``)."""

BN_MODES = ("classic", "per_channel")


class BatchNormalization(Layer):
    """``out = gamma * (x - mean) / sqrt(var + eps) + beta`` with batch statistics in training.

    Training (``train_flg=True``): ``mean`` and ``var`` are the batch's (biased, divide by N);
    the running statistics move towards them::

        running_mean = momentum * running_mean + (1 - momentum) * mean
        running_var  = momentum * running_var  + (1 - momentum) * var

    Test time (``train_flg=False``): the running statistics replace the batch ones.

    Switches (classic default first; see docs/conventions.md for the torch equivalents):

    * ``momentum=0.9``: the fraction of the old running value *kept*. torch's ``momentum`` is
      the fraction *replaced*: classic 0.9 = torch 0.1.
    * ``eps=1e-6`` (the book's ``10e-7``); torch uses 1e-5.
    * ``running_var_init=0.0``: torch starts ``running_var`` at 1.
    * ``unbiased_running_var=False``: torch feeds the unbiased variance (times N/(N-1)) into
      ``running_var`` while normalising with the biased one.
    * ``mode="classic"``: 4-D input (N, C, H, W) is flattened to (N, C*H*W) and every activation
      has its own statistics, ``gamma`` and ``beta`` (C*H*W of each). ``mode="per_channel"``
      shares them over N, H, W per channel (C of each), like ``nn.BatchNorm2d``. On 2-D input
      the two modes are the same.

    ``BatchNormalization.torch_defaults(gamma, beta)`` sets every switch to torch's behaviour.
    With batch size 1 (one value per feature) the output is ``beta`` and every gradient but
    ``dbeta`` is exactly 0: a gradient check on such a batch proves nothing.
    """

    def __init__(
        self,
        gamma: np.ndarray,
        beta: np.ndarray,
        momentum: float = 0.9,
        running_mean: np.ndarray | None = None,
        running_var: np.ndarray | None = None,
        *,
        eps: float = CLASSIC_BN_EPS,
        mode: str = "classic",
        running_var_init: float = 0.0,
        unbiased_running_var: bool = False,
    ) -> None:
        super().__init__()
        if mode not in BN_MODES:
            raise ValueError(f"BatchNormalization mode must be one of {BN_MODES}, got {mode!r}")
        if np.shape(gamma) != np.shape(beta) or np.ndim(gamma) != 1:
            raise ValueError(f"gamma and beta must be 1-D of one shape, got {np.shape(gamma)} "
                             f"and {np.shape(beta)}")
        self.params = {"gamma": gamma, "beta": beta}
        self.grads = {"gamma": np.zeros_like(gamma), "beta": np.zeros_like(beta)}
        self.momentum = float(momentum)
        self.eps = float(eps)
        self.mode = mode
        self.running_var_init = float(running_var_init)
        self.unbiased_running_var = bool(unbiased_running_var)
        self.running_mean = np.zeros_like(gamma) if running_mean is None else running_mean
        self.running_var = (np.full_like(gamma, self.running_var_init) if running_var is None
                            else running_var)
        # saved by forward for backward
        self.input_shape: tuple[int, ...] | None = None
        self.train_flg = True
        self.batch_size = 0
        self.xc: np.ndarray | None = None
        self.xn: np.ndarray | None = None
        self.std: np.ndarray | None = None

    @classmethod
    def torch_defaults(cls, gamma: np.ndarray, beta: np.ndarray,
                       mode: str = "per_channel") -> BatchNormalization:
        """Every switch set to ``nn.BatchNorm1d/2d()``'s defaults (momentum 0.1, eps 1e-5,
        running_var starting at 1 and updated with the unbiased variance)."""
        return cls(gamma, beta, momentum=0.9, eps=1e-5, mode=mode, running_var_init=1.0,
                   unbiased_running_var=True)

    @property
    def gamma(self) -> np.ndarray:
        return self.params["gamma"]

    @property
    def beta(self) -> np.ndarray:
        return self.params["beta"]

    # The book keeps the gradients as attributes (its backward sets self.dgamma, its
    # MultiLayerNetExtend.gradient reads layers['BatchNorm1'].dgamma): here they are
    # grads["gamma"] and grads["beta"] under those names, both ways.
    @property
    def dgamma(self) -> np.ndarray:
        return self.grads["gamma"]

    @dgamma.setter
    def dgamma(self, value: np.ndarray) -> None:
        self.grads["gamma"] = value

    @property
    def dbeta(self) -> np.ndarray:
        return self.grads["beta"]

    @dbeta.setter
    def dbeta(self, value: np.ndarray) -> None:
        self.grads["beta"] = value

    # -- shapes: every mode reduces to the 2-D case (rows = samples, columns = features) ----

    def _to_2d(self, x: np.ndarray) -> np.ndarray:
        if x.ndim == 2:
            return x
        if self.mode == "classic":  # (N, C, H, W) -> (N, C*H*W): per activation
            return x.reshape(x.shape[0], -1)
        return np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])  # (N*H*W, C): per channel

    def _from_2d(self, y: np.ndarray) -> np.ndarray:
        shape = self.input_shape
        if len(shape) == 2:
            return y
        if self.mode == "classic":
            return y.reshape(shape)
        return np.moveaxis(y.reshape((shape[0], *shape[2:], shape[1])), -1, 1)

    # -- forward / backward ------------------------------------------------------------------

    def forward(self, x: np.ndarray, train_flg: bool = True) -> np.ndarray:
        if x.ndim < 2:
            raise ValueError(f"BatchNormalization expects (N, D) or (N, C, ...) input, got {x.shape}")
        self.input_shape = x.shape
        x2 = self._to_2d(x)
        if x2.shape[1] != self.gamma.size:
            hint = (" (mode='classic' normalises each of the C*H*W activations; "
                    "use mode='per_channel' for one gamma per channel)" if x.ndim > 2 else "")
            raise ValueError(f"BatchNormalization: input {x.shape} has {x2.shape[1]} features, "
                             f"gamma has {self.gamma.size}{hint}")
        dt = self.gamma.dtype.type
        # running statistics live in the parameters' dtype (like a torch module's buffers)
        self.running_mean = np.asarray(self.running_mean).astype(self.gamma.dtype, copy=False)
        self.running_var = np.asarray(self.running_var).astype(self.gamma.dtype, copy=False)
        self.train_flg = bool(train_flg)
        if train_flg:
            n = x2.shape[0]
            mu = x2.mean(axis=0)
            xc = x2 - mu
            var = np.mean(xc ** 2, axis=0)
            std = np.sqrt(var + dt(self.eps))
            xn = xc / std
            self.batch_size, self.xc, self.xn, self.std = n, xc, xn, std
            if self.unbiased_running_var:
                if n < 2:
                    raise ValueError("unbiased_running_var needs more than one value per feature "
                                     f"(got input {x.shape}); torch refuses this batch too")
                var = var * dt(n / (n - 1))
            m = self.momentum
            self.running_mean = m * self.running_mean + (1 - m) * mu
            self.running_var = m * self.running_var + (1 - m) * var
        else:
            xc = x2 - self.running_mean
            std = np.sqrt(self.running_var + dt(self.eps))
            xn = xc / std
            self.batch_size, self.xc, self.xn, self.std = x2.shape[0], xc, xn, std
        out = self.gamma * xn + self.beta
        return self._from_2d(out)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        d2 = self._to_2d(dout)
        self.grads["beta"] = d2.sum(axis=0)
        self.grads["gamma"] = np.sum(self.xn * d2, axis=0)
        dxn = self.gamma * d2
        if not self.train_flg:  # a fixed affine map at test time
            return self._from_2d(dxn / self.std)
        # the book's step-by-step backward through xc -> var -> std -> xn
        dxc = dxn / self.std
        dstd = -np.sum((dxn * self.xc) / (self.std * self.std), axis=0)
        dvar = 0.5 * dstd / self.std
        dxc = dxc + (2.0 / self.batch_size) * self.xc * dvar
        dmu = np.sum(dxc, axis=0)
        dx = dxc - dmu / self.batch_size
        return self._from_2d(dx)

    def __repr__(self) -> str:
        return (f"BatchNormalization(features={self.gamma.size}, momentum={self.momentum}, "
                f"eps={self.eps}, mode={self.mode!r}, running_var_init={self.running_var_init}, "
                f"unbiased_running_var={self.unbiased_running_var})")


DROPOUT_SCALES = ("classic", "inverted")


class Dropout(Layer):
    """Zero each input with probability ``dropout_ratio`` in training.

    ``scale="classic"`` (the book): training ``out = x * mask``, test time
    ``out = x * (1 - p)``. ``scale="inverted"`` (``nn.Dropout``): training
    ``out = x * mask / (1 - p)``, test time ``out = x``. Both have the same expected output;
    they differ by the factor ``1 - p`` everywhere.

    The mask (True = keep, ``rand > p`` as in the book) is drawn from this layer's own
    ``np.random.Generator`` on every training forward, unless one was installed with
    :meth:`set_mask`: then that mask is used until :meth:`clear_mask`. A numerical gradient
    needs this: with a fresh mask on every call the loss is not a function of the input and
    the difference quotient is meaningless (wrong by orders of magnitude).

    Unlike the book, ``backward`` after a test-time forward is the test-time derivative
    (``dout * (1 - p)`` or ``dout``), not the last training mask.
    """

    def __init__(self, dropout_ratio: float = 0.5, scale: str = "classic", *,
                 rng: np.random.Generator | int | None = None) -> None:
        super().__init__()
        if not 0.0 <= dropout_ratio < 1.0:
            raise ValueError(f"dropout_ratio must be in [0, 1), got {dropout_ratio}")
        if scale not in DROPOUT_SCALES:
            raise ValueError(f"Dropout scale must be one of {DROPOUT_SCALES}, got {scale!r}")
        self.dropout_ratio = float(dropout_ratio)
        self.scale = scale
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self.fixed_mask: np.ndarray | None = None
        self.mask: np.ndarray | None = None
        self.train_flg = True

    def draw_mask(self, shape: tuple[int, ...]) -> np.ndarray:
        """A fresh keep-mask from this layer's generator: ``rand(shape) > dropout_ratio``."""
        return self.rng.random(shape) > self.dropout_ratio

    def set_mask(self, mask: np.ndarray) -> None:
        """Use ``mask`` (bool, True = keep) for every training forward until ``clear_mask``."""
        self.fixed_mask = np.asarray(mask, dtype=bool).copy()

    def clear_mask(self) -> None:
        self.fixed_mask = None

    def _train_scale(self, dtype: np.dtype) -> np.generic:
        return np.dtype(dtype).type(1.0 / (1.0 - self.dropout_ratio))

    def _test_scale(self, dtype: np.dtype) -> np.generic:
        return np.dtype(dtype).type(1.0 - self.dropout_ratio)

    def forward(self, x: np.ndarray, train_flg: bool = True) -> np.ndarray:
        self.train_flg = bool(train_flg)
        if not train_flg:
            return x * self._test_scale(x.dtype) if self.scale == "classic" else x.copy()
        if self.fixed_mask is not None:
            if self.fixed_mask.shape != x.shape:
                raise ValueError(f"Dropout: the fixed mask has shape {self.fixed_mask.shape}, "
                                 f"the input {x.shape}")
            self.mask = self.fixed_mask
        else:
            self.mask = self.draw_mask(x.shape)
        out = x * self.mask
        if self.scale == "inverted":
            out *= self._train_scale(x.dtype)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        if not self.train_flg:
            return dout * self._test_scale(dout.dtype) if self.scale == "classic" else dout.copy()
        dx = dout * self.mask
        if self.scale == "inverted":
            dx *= self._train_scale(dout.dtype)
        return dx

    def __repr__(self) -> str:
        fixed = ", fixed mask" if self.fixed_mask is not None else ""
        return f"Dropout({self.dropout_ratio}, scale={self.scale!r}{fixed})"
