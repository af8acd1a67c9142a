"""Convolution and pooling layers written by users: every classic bug is caught in the settings
``nn-parity check --module`` runs, and a correct layer passes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import scratch
from harness.compare import FAIL
from harness.report import LayerReport
from harness.user_modules import spec_for_class, variant_specs
from scratch.convolution import windows


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


class TiesToEveryMaximum(UnpaddedPooling):
    """Backward sends ``dout`` to every element equal to the window's maximum."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        return super().forward(x)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        win = windows(self.x, self.pool_h, self.pool_w, self.stride)
        top = win.max(axis=(-2, -1))
        dx = np.zeros_like(self.x)
        oh, ow = top.shape[2:]
        s = self.stride
        for y in range(self.pool_h):
            for x in range(self.pool_w):
                dx[:, :, y:y + s * oh:s, x:x + s * ow:s] += dout * (win[..., y, x] == top)
        return dx


def failing(reports: list[LayerReport]) -> list[Any]:
    return [r for rep in reports for r in rep.results if r.status == FAIL]


def test_unpadded_pooling_passes_every_setting_it_can_reach() -> None:
    reports = every_setting(UnpaddedPooling)
    assert reports and all(rep.ok for rep in reports), [str(r) for r in reports if not r.ok]


def test_pooling_that_routes_a_tie_to_every_maximum_fails_without_padding_too() -> None:
    # it skips the padded settings (pad kept at 0): a setting with ties and no padding catches it
    bad = failing(every_setting(TiesToEveryMaximum))
    assert bad and {r.tensor for r in bad} == {"dx"}
    assert all("ties" in r.layer for r in bad)
    text = str(bad[0])
    assert "Greatest absolute difference" in text and "at index" in text and "Tolerance" in text


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
