"""Convolution and pooling layers written by users: every classic bug is caught in the settings
``nn-parity check --module`` runs, and a correct layer passes."""

from __future__ import annotations

import numpy as np
import pytest

import scratch
from harness.compare import FAIL, PASS
from harness.report import LayerReport
from harness.user_modules import spec_for_class, variant_specs
from scratch.convolution import conv_output_size, im2col, windows


def every_setting(cls: type, seeds: tuple[int, ...] = (0, 1)) -> list[LayerReport]:
    """``cls`` checked as ``nn-parity check --module`` checks it: its own case and every
    built-in setting its constructor can reach, float32 and float64, batches 1, 3 and 8."""
    ls = spec_for_class(cls)
    assert ls is not None
    return [spec.check(dtype, seed=seed, batch=batch)
            for spec in (ls, *variant_specs(ls))
            for dtype in (np.float32, np.float64) for seed in seeds for batch in (1, 3, 8)]


class UnpaddedPooling(scratch.Pooling):
    """Max pooling that has no padding (the book's has none) and keeps ``pad`` at 0."""

    def __init__(self, pool_h: int, pool_w: int, stride: int = 2, pad: int = 0) -> None:
        super().__init__(pool_h, pool_w, stride, 0)


def test_unpadded_pooling_passes_every_setting_it_can_reach() -> None:
    reports = every_setting(UnpaddedPooling)
    assert reports and all(rep.ok for rep in reports), [str(r) for r in reports if not r.ok]


class ConvWidthFromHeight(scratch.Convolution):
    """The output width sized from the input's height (H and W mixed up)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        FN, _, FH, FW = self.W.shape
        N, _, H, _ = x.shape
        out_h = conv_output_size(H, FH, self.stride, self.pad)
        out_w = conv_output_size(H, FW, self.stride, self.pad)
        self.x_shape = x.shape
        self.col = im2col(x, FH, FW, self.stride, self.pad)
        self.col_W = self.W.reshape(FN, -1).T
        out = self.col @ self.col_W + self.b
        return np.ascontiguousarray(out.reshape(N, out_h, out_w, FN).transpose(0, 3, 1, 2))


class PoolingWidthFromHeight(scratch.Pooling):
    """The book's pooling forward with ``out_w`` computed from ``H``."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        N, C, H, _ = x.shape
        out_h = (H - self.pool_h) // self.stride + 1
        out_w = (H - self.pool_w) // self.stride + 1
        col = im2col(x, self.pool_h, self.pool_w, self.stride).reshape(-1, self.pool_h * self.pool_w)
        self.x_shape = x.shape
        self.arg_max = np.argmax(col, axis=1).reshape(N, out_h, out_w, C).transpose(0, 3, 1, 2)
        return np.max(col, axis=1).reshape(N, out_h, out_w, C).transpose(0, 3, 1, 2)


def conv_layer(fn: int = 4, c: int = 3, fh: int = 3, fw: int = 3, **kw: int) -> scratch.Convolution:
    rng = np.random.default_rng(0)
    return scratch.Convolution(rng.standard_normal((fn, c, fh, fw)) / 5, rng.standard_normal(fn),
                               **kw)


def test_default_inputs_are_not_square_so_a_height_width_mix_up_shows() -> None:
    from harness import check_layer

    rng = np.random.default_rng(0)
    conv = ConvWidthFromHeight(rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4))
    for layer in (conv, PoolingWidthFromHeight(2, 2)):
        report = check_layer(layer, batch=3)  # the registered input shape, as parity(layer) runs
        assert report.status != PASS, str(report)
        h, w = report.input_shape[2:]
        assert h != w


@pytest.mark.parametrize("kw", [{}, {"fh": 5, "fw": 3, "stride": 2, "pad": 1}, {"fh": 9, "fw": 9},
                                {"fh": 1, "fw": 1, "stride": 3}, {"fh": 3, "fw": 5, "stride": 3, "pad": 2}])
def test_the_default_convolution_input_fits_any_kernel_and_gives_a_non_square_output(kw) -> None:
    from harness import check_layer

    report = check_layer(conv_layer(**kw), batch=3, seed=1)
    assert report.ok, str(report)
    out = report["out"].shape
    assert out[2] != out[3] and report.input_shape[1] == 3


@pytest.mark.parametrize("args", [(2, 2), (3, 3, 2, 1), (3, 3, 1), (2, 3, 3), (4, 4, 4, 2)])
def test_the_default_pooling_input_fits_any_window_and_gives_a_non_square_output(args) -> None:
    from harness import check_layer

    report = check_layer(scratch.Pooling(*args), batch=3, seed=1)
    assert report.ok, str(report)
    assert report["out"].shape[2] != report["out"].shape[3]


class BookConvOtherNames:
    """The book's Convolution layout (self.W, self.b, self.dW, self.db) with stride and pad kept
    as self.s and self.p."""

    def __init__(self, W: np.ndarray, b: np.ndarray, stride: int = 1, pad: int = 0) -> None:
        self.W, self.b, self.s, self.p = W, b, stride, pad
        self.dW: np.ndarray | None = None
        self.db: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        raise AssertionError("never reached: the twin cannot be built")

    def backward(self, dout: np.ndarray) -> np.ndarray:
        raise AssertionError("never reached")


BookConvOtherNames.__name__ = BookConvOtherNames.__qualname__ = "Convolution"


def test_a_book_convolution_without_stride_and_pad_attributes_is_told_which_names_to_use() -> None:
    from harness import check_layer
    from harness.check import CheckError

    W = np.ones((2, 3, 3, 3))
    with pytest.raises(CheckError) as info:
        check_layer(BookConvOtherNames(W, np.zeros(2), 2, 1), input_shape=(2, 3, 7, 7))
    text = str(info.value)
    assert "stride, pad" in text and "self.stride, self.pad" in text and "register" in text


class TiesToEveryMaximum(scratch.Pooling):
    """Backward sends ``dout`` to every element equal to the window's maximum."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x_in = x
        return super().forward(x)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        N, C, H, W = self.x_in.shape
        s, p = self.stride, self.pad
        win = windows(self.x_in, self.pool_h, self.pool_w, s, p, pad_value=-np.inf)
        top = win.max(axis=(4, 5))
        oh, ow = top.shape[2:]
        dx = np.zeros((N, C, H + 2 * p, W + 2 * p), dtype=dout.dtype)
        for y in range(self.pool_h):
            for x in range(self.pool_w):
                dx[:, :, y:y + s * oh:s, x:x + s * ow:s] += dout * (win[..., y, x] == top)
        return dx[:, :, p:H + p, p:W + p]


def test_the_ties_setting_says_which_element_torch_routes_a_tie_to() -> None:
    bad = [r for rep in every_setting(TiesToEveryMaximum, seeds=(0,))
           for r in rep.results if r.status == FAIL]
    assert bad and {(r.tensor, "ties" in r.layer) for r in bad} == {("dx", True)}
    for r in bad:
        text = str(r)
        assert "first maximum" in text and "every tied maximum" in text
        assert "at index" in text and "Tolerance" in text


class PlainPooling(scratch.Pooling):
    """The built-in, as a user's subclass: checked in every setting."""


def test_a_correct_pooling_passes_every_setting_with_no_hint() -> None:
    reports = every_setting(PlainPooling, seeds=(0,))
    assert any("ties" in rep.layer for rep in reports)
    assert all(rep.ok for rep in reports)
    assert not any("first maximum" in (r.message or "") for rep in reports for r in rep.results)


# ---------------------------------------------------------------------------------------
# The classic convolution and pooling bugs, each a subclass of the scratch layer: every one
# fails some setting `check --module` runs, on the tensor it breaks.


def _col2im_overwriting(col: np.ndarray, shape: tuple[int, ...], fh: int, fw: int, stride: int,
                        pad: int) -> np.ndarray:
    N, C, H, W = shape
    oh, ow = conv_output_size(H, fh, stride, pad), conv_output_size(W, fw, stride, pad)
    cols = col.reshape(N, oh, ow, C, fh, fw).transpose(0, 3, 4, 5, 1, 2)
    img = np.zeros((N, C, H + 2 * pad + stride - 1, W + 2 * pad + stride - 1), col.dtype)
    for y in range(fh):
        for x in range(fw):
            img[:, :, y:y + stride * oh:stride, x:x + stride * ow:stride] = cols[:, :, y, x]
    return img[:, :, pad:H + pad, pad:W + pad]


class ConvKernelFlipped(scratch.Convolution):
    """A true convolution (the kernel flipped), its backward consistent with it."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        W = self.params["W"]
        self.params["W"] = np.ascontiguousarray(W[:, :, ::-1, ::-1])
        try:
            return super().forward(x)
        finally:
            self.params["W"] = W

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = super().backward(dout)
        self.grads["W"] = self.grads["W"][:, :, ::-1, ::-1]
        return dx


class ConvChannelOrder(scratch.Convolution):
    """im2col rows in (fh, fw, c) order against W.reshape(FN, -1)'s (c, fh, fw)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        FN, C, FH, FW = self.W.shape
        W = self.params["W"]
        self.params["W"] = np.ascontiguousarray(
            W.transpose(0, 2, 3, 1).reshape(FN, FH, FW, C).reshape(FN, C, FH, FW))
        try:
            return super().forward(x)
        finally:
            self.params["W"] = W


class ConvStrideIgnoredInBackward(scratch.Convolution):
    def backward(self, dout: np.ndarray) -> np.ndarray:
        s = self.stride
        self.stride = 1
        try:
            return super().backward(dout)
        finally:
            self.stride = s


class ConvCol2imOverwrites(scratch.Convolution):
    def backward(self, dout: np.ndarray) -> np.ndarray:
        super().backward(dout)
        FN, _, FH, FW = self.W.shape
        dcol = dout.transpose(0, 2, 3, 1).reshape(-1, FN) @ self.col_W.T
        return _col2im_overwriting(dcol, self.x_shape, FH, FW, self.stride, self.pad)


class ConvOneSidedPad(scratch.Convolution):
    """Pads 2 * pad at the top and left only: the same sizes, shifted windows."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        p = self.pad
        if not p:
            return super().forward(x)
        shifted = np.pad(x, [(0, 0), (0, 0), (2 * p, 0), (2 * p, 0)])
        self.pad = 0
        try:
            return super().forward(shifted)
        finally:
            self.pad = p

    def backward(self, dout: np.ndarray) -> np.ndarray:
        p = self.pad
        if not p:
            return super().backward(dout)
        self.pad = 0
        try:
            return super().backward(dout)[:, :, 2 * p:, 2 * p:]
        finally:
            self.pad = p


class ConvDWUntransposed(scratch.Convolution):
    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = super().backward(dout)
        FN = self.W.shape[0]
        self.grads["W"] = (self.col.T @ dout.transpose(0, 2, 3, 1).reshape(-1, FN)).reshape(
            self.W.shape)
        return dx


class ConvDbMean(scratch.Convolution):
    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = super().backward(dout)
        self.grads["b"] = dout.mean(axis=(0, 2, 3))
        return dx


class ConvOutputOneShort(scratch.Convolution):
    """The last output row dropped: ``(H + 2p - FH) // stride`` without the + 1."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        return super().forward(x)[:, :, :-1]


class PoolFirstElement(scratch.Pooling):
    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.arg_max = np.zeros_like(self.arg_max)
        return super().backward(dout)


BUGS = {
    ConvKernelFlipped: {"out", "dx", "dW"},
    ConvChannelOrder: {"out", "dx", "dW"},
    ConvStrideIgnoredInBackward: {"dx", "backward"},
    ConvCol2imOverwrites: {"dx"},
    ConvOneSidedPad: {"out", "dx", "dW"},
    ConvDWUntransposed: {"dW"},
    ConvDbMean: {"db"},
    ConvOutputOneShort: {"out", "backward"},
    PoolFirstElement: {"dx"},
}


@pytest.mark.parametrize("cls", list(BUGS), ids=lambda c: c.__name__)
def test_each_classic_convolution_and_pooling_bug_fails_on_the_tensor_it_breaks(cls: type) -> None:
    reports = every_setting(cls, seeds=(0,))
    bad = {r.tensor for rep in reports for r in rep.results if not r.ok}
    assert bad and bad <= BUGS[cls] | {"dx (first call)"}, bad
    assert {"out", "dx", "dW", "db", "backward"} & bad
    for r in (r for rep in reports for r in rep.results if not r.ok):
        text = str(r)
        assert cls.__name__ in text and r.tensor in text
        if r.status == FAIL and "shape mismatch" not in text:  # where, by how much, allowed
            assert "Greatest absolute difference" in text and "at index" in text
            assert "Tolerance: rtol=" in text


class Convolution:
    """The book's Convolution: no base class, weights and gradients as attributes."""

    def __init__(self, W: np.ndarray, b: np.ndarray, stride: int = 1, pad: int = 0) -> None:
        self.W, self.b, self.stride, self.pad = W, b, stride, pad
        self.dW: np.ndarray | None = None
        self.db: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        FN, _, FH, FW = self.W.shape
        N, _, H, W = x.shape
        out_h = 1 + int((H + 2 * self.pad - FH) / self.stride)
        out_w = 1 + int((W + 2 * self.pad - FW) / self.stride)
        self.x, self.col = x, im2col(x, FH, FW, self.stride, self.pad)
        self.col_W = self.W.reshape(FN, -1).T
        out = np.dot(self.col, self.col_W) + self.b
        return out.reshape(N, out_h, out_w, -1).transpose(0, 3, 1, 2)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        from scratch.convolution import col2im

        FN, C, FH, FW = self.W.shape
        dout = dout.transpose(0, 2, 3, 1).reshape(-1, FN)
        self.db = np.sum(dout, axis=0)
        self.dW = np.dot(self.col.T, dout).transpose(1, 0).reshape(FN, C, FH, FW)
        return col2im(np.dot(dout, self.col_W.T), self.x.shape, FH, FW, self.stride, self.pad)


def test_the_books_convolution_passes_every_setting_in_both_dtypes() -> None:
    reports = every_setting(Convolution)
    assert len({rep.layer for rep in reports}) >= 5  # its own case and the stride/pad/kernel ones
    assert all(rep.ok for rep in reports), [str(r) for r in reports if not r.ok]
