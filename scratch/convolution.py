"""Convolution through ``im2col``, max pooling over strided windows, and ``Flatten``.

``im2col`` turns every filter-sized window of the (padded) input into one row of a matrix, so
a convolution becomes one matrix product. It is built from a strided *view* of the input
(:func:`windows`, ``numpy.lib.stride_tricks.sliding_window_view``: no Python loop over output
positions) and one copy into the row layout.

``col2im`` is its adjoint: it adds every row back onto the window it came from. Like the book,
it loops over the FH x FW kernel offsets (25 strided additions for a 5x5 filter) rather than
over output positions, and never uses the slow ``np.add.at``.

Max pooling needs no copy at all: it walks the same window view one kernel offset at a time
(4 offsets for 2x2 windows), keeping the running maximum and where it was; its backward adds
``dout`` back at each offset where the maximum was. Each step is one vectorised operation over
all windows, instead of ``np.argmax`` over rows of 4 elements, which loops per row.

Layouts are PyTorch's: input (N, C, H, W), filters (FN, C, FH, FW), output (N, FN, OH, OW),
and the operation is a cross-correlation (the filter is not flipped), like ``nn.Conv2d``.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from scratch.layers import Layer


def conv_output_size(size: int, filter_size: int, stride: int = 1, pad: int = 0) -> int:
    """``(size + 2*pad - filter_size) // stride + 1``: the number of window positions."""
    out = (size + 2 * pad - filter_size) // stride + 1
    if out < 1:
        raise ValueError(f"a {filter_size}-wide window with stride {stride} and pad {pad} does not "
                         f"fit an input of size {size}")
    return out


def im2col(input_data: np.ndarray, filter_h: int, filter_w: int, stride: int = 1, pad: int = 0,
           pad_value: float = 0.0) -> np.ndarray:
    """(N, C, H, W) -> (N*OH*OW, C*FH*FW): one row per output position, in (n, oh, ow) order;
    within a row (c, fh, fw) order, matching ``W.reshape(FN, -1)``.

    ``pad_value`` fills the border: 0 for convolution, ``-inf`` for max pooling.
    """
    N, C, _, _ = input_data.shape
    win = windows(input_data, filter_h, filter_w, stride, pad, pad_value)
    out_h, out_w = win.shape[2:4]
    # (N, C, OH, OW, FH, FW) -> (N, OH, OW, C, FH, FW) -> rows; the reshape is the one copy
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(N * out_h * out_w, C * filter_h * filter_w)


def windows(input_data: np.ndarray, filter_h: int, filter_w: int, stride: int = 1, pad: int = 0,
            pad_value: float = 0.0) -> np.ndarray:
    """(N, C, H, W) -> the (N, C, OH, OW, FH, FW) *view* with
    ``win[n, c, i, j, y, x] = padded[n, c, i*stride + y, j*stride + x]``: nothing is copied
    (except the padded input when ``pad > 0``, filled with ``pad_value``)."""
    _, _, H, W = input_data.shape
    out_h = conv_output_size(H, filter_h, stride, pad)
    out_w = conv_output_size(W, filter_w, stride, pad)
    img = input_data
    if pad:
        img = np.pad(input_data, [(0, 0), (0, 0), (pad, pad), (pad, pad)], mode="constant",
                     constant_values=pad_value)
    win = sliding_window_view(img, (filter_h, filter_w), axis=(2, 3))
    return win[:, :, : (out_h - 1) * stride + 1 : stride, : (out_w - 1) * stride + 1 : stride]


def col2im(col: np.ndarray, input_shape: tuple[int, ...], filter_h: int, filter_w: int,
           stride: int = 1, pad: int = 0) -> np.ndarray:
    """The adjoint of :func:`im2col`: sum every row back onto its window, drop the padding.

    One strided addition per kernel offset (y, x): all output positions at once.
    """
    N, C, H, W = input_shape
    out_h = conv_output_size(H, filter_h, stride, pad)
    out_w = conv_output_size(W, filter_w, stride, pad)
    cols = col.reshape(N, out_h, out_w, C, filter_h, filter_w).transpose(0, 3, 4, 5, 1, 2)
    img = np.zeros((N, C, H + 2 * pad + stride - 1, W + 2 * pad + stride - 1), dtype=col.dtype)
    for y in range(filter_h):
        y_max = y + stride * out_h
        for x in range(filter_w):
            x_max = x + stride * out_w
            img[:, :, y:y_max:stride, x:x_max:stride] += cols[:, :, y, x, :, :]
    return img[:, :, pad : H + pad, pad : W + pad]


class Convolution(Layer):
    """``out[n, f] = sum_c W[f, c] (cross-correlated with) x[n, c] + b[f]``, zero padding.

    ``W`` is (FN, C, FH, FW), ``b`` is (FN,): the layout of ``nn.Conv2d.weight`` and ``.bias``.
    Forward: ``im2col(x) @ W.reshape(FN, -1).T + b``. Backward: ``dW = dout^T @ col``,
    ``db = sum(dout)``, ``dx = col2im(dout @ W.reshape(FN, -1))``.
    """

    def __init__(self, W: np.ndarray, b: np.ndarray, stride: int = 1, pad: int = 0) -> None:
        super().__init__()
        if np.ndim(W) != 4 or np.shape(b) != (np.shape(W)[0],):
            raise ValueError(f"Convolution needs W (FN, C, FH, FW) and b (FN,), got "
                             f"{np.shape(W)} and {np.shape(b)}")
        self.params = {"W": W, "b": b}
        self.grads = {"W": np.zeros_like(W), "b": np.zeros_like(b)}
        self.stride = int(stride)
        self.pad = int(pad)
        self.x_shape: tuple[int, ...] | None = None
        self.col: np.ndarray | None = None
        self.col_W: np.ndarray | None = None

    @property
    def W(self) -> np.ndarray:
        return self.params["W"]

    @property
    def b(self) -> np.ndarray:
        return self.params["b"]

    def forward(self, x: np.ndarray) -> np.ndarray:
        FN, C, FH, FW = self.W.shape
        if x.ndim != 4 or x.shape[1] != C:
            raise ValueError(f"Convolution with W {self.W.shape} expects (N, {C}, H, W) input, "
                             f"got {x.shape}")
        N, _, H, W = x.shape
        out_h = conv_output_size(H, FH, self.stride, self.pad)
        out_w = conv_output_size(W, FW, self.stride, self.pad)
        self.x_shape = x.shape
        self.col = im2col(x, FH, FW, self.stride, self.pad)
        self.col_W = self.W.reshape(FN, -1).T
        out = self.col @ self.col_W
        out += self.b
        # rows are (n, oh, ow): one copy into the (N, FN, OH, OW) layout, so that the layers
        # after this one (and their backward passes) work on contiguous arrays
        return np.ascontiguousarray(out.reshape(N, out_h, out_w, FN).transpose(0, 3, 1, 2))

    def backward(self, dout: np.ndarray) -> np.ndarray:
        FN, C, FH, FW = self.W.shape
        self.grads["b"] = np.sum(dout, axis=(0, 2, 3))
        dout = dout.transpose(0, 2, 3, 1).reshape(-1, FN)
        self.grads["W"] = (self.col.T @ dout).T.reshape(FN, C, FH, FW)
        dcol = dout @ self.col_W.T
        return col2im(dcol, self.x_shape, FH, FW, self.stride, self.pad)


class Pooling(Layer):
    """Max pooling over ``pool_h`` x ``pool_w`` windows, like ``nn.MaxPool2d``.

    Padding is done right: the border is filled with ``-inf`` (it never wins the max) and
    ``OH = (H + 2*pad - pool_h) // stride + 1``. The classic code pads with zeros and computes
    ``OH`` without ``pad``, so ``pad > 0`` breaks it. As in torch, ``pad`` may be at most half
    the window, so that every window holds at least one real input.

    ``arg_max`` (N, C, OH, OW) holds, for every window, the row-major index of its maximum
    within the window (the first one if several are equal: torch's choice too). Backward sends
    each ``dout`` element there.
    """

    def __init__(self, pool_h: int, pool_w: int, stride: int = 2, pad: int = 0) -> None:
        super().__init__()
        if pad < 0 or 2 * pad > min(pool_h, pool_w):
            raise ValueError(f"Pooling pad must be between 0 and half the window "
                             f"({pool_h}x{pool_w}), got {pad}")
        self.pool_h, self.pool_w = int(pool_h), int(pool_w)
        self.stride, self.pad = int(stride), int(pad)
        self.x_shape: tuple[int, ...] | None = None
        self.arg_max: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        win = windows(x, self.pool_h, self.pool_w, self.stride, self.pad, pad_value=-np.inf)
        self.x_shape = x.shape
        # The running maximum over the window offsets k = 0, 1, ... (row-major): offset k takes
        # over where it is strictly larger, so the first maximum wins. As k only grows,
        # "arg_max = k where larger" is arg_max = max(arg_max, k * larger).
        out = win[..., 0, 0].copy()
        self.arg_max = np.zeros(out.shape, dtype=np.intp)
        for k in range(1, self.pool_h * self.pool_w):
            value = win[..., k // self.pool_w, k % self.pool_w]
            np.maximum(self.arg_max, k * (value > out), out=self.arg_max)
            np.maximum(out, value, out=out)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        N, C, H, W = self.x_shape
        s, p = self.stride, self.pad
        out_h, out_w = self.arg_max.shape[2:]
        dx = np.zeros((N, C, H + 2 * p, W + 2 * p), dtype=dout.dtype)
        for k in range(self.pool_h * self.pool_w):  # every offset gets dout where it won
            y, x = divmod(k, self.pool_w)
            dx[:, :, y : y + s * out_h : s, x : x + s * out_w : s] += dout * (self.arg_max == k)
        return dx[:, :, p : H + p, p : W + p]

    def __repr__(self) -> str:
        return f"Pooling({self.pool_h}x{self.pool_w}, stride={self.stride}, pad={self.pad})"


class Flatten(Layer):
    """(N, ...) -> (N, prod(...)); backward restores the shape. Twin: ``nn.Flatten()``."""

    def __init__(self) -> None:
        super().__init__()
        self.x_shape: tuple[int, ...] | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x_shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout.reshape(self.x_shape)
