"""Hand-written layers a new user brings (activations, normalisations, losses, pooling, ...):
correct ones pass in float32 and float64, each classic bug is caught with a precise message.
The twins here are registered with ``module=`` so nothing leaks into the global registry."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

from harness import check_layer
from harness.compare import FAIL, PASS


def _rows(report, status=FAIL):
    return {r.tensor: r for r in report.results if r.status == status}


class LeakyReusesBuffer:
    """Forward writes into a buffer it keeps and returns that buffer every call."""

    def __init__(self) -> None:
        self.buf: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        if self.buf is None or self.buf.shape != x.shape:
            self.buf = np.empty_like(x)
        self.mask = x <= 0
        np.multiply(x, np.where(self.mask, 0.1, 1.0).astype(x.dtype), out=self.buf)
        return self.buf

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return np.where(self.mask, dout * dout.dtype.type(0.1), dout)


class SoftmaxBackwardInPlace:
    """Backward multiplies the cached (and returned) output in place: y *= (...)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        e = np.exp(x - x.max(axis=1, keepdims=True))
        e /= e.sum(axis=1, keepdims=True)
        self.y = e
        return e

    def backward(self, dout: np.ndarray) -> np.ndarray:
        y = self.y
        y *= dout - (dout * y).sum(axis=1, keepdims=True)
        return y


class Softmax:
    def forward(self, x: np.ndarray) -> np.ndarray:
        e = np.exp(x - x.max(axis=1, keepdims=True))
        self.y = e / e.sum(axis=1, keepdims=True)
        return self.y

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return self.y * (dout - (dout * self.y).sum(axis=1, keepdims=True))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_an_output_buffer_reused_by_the_next_call_fails(dtype: str) -> None:
    report = check_layer(LeakyReusesBuffer(), nn.LeakyReLU(0.1), input_shape=(3, 7), dtype=dtype)
    bad = _rows(report)
    assert list(bad) == ["first call's output unchanged"], report
    msg = bad["first call's output unchanged"].message
    assert "the second call changed the output the first call returned" in msg
    assert "return a new array" in msg


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_backward_writing_into_the_returned_output_fails(dtype: str) -> None:
    report = check_layer(SoftmaxBackwardInPlace(), nn.Softmax(dim=1), input_shape=(3, 7),
                         dtype=dtype)
    bad = _rows(report)
    assert "forward output unchanged" in bad, report
    assert "backward wrote into the array forward returned" in bad["forward output unchanged"].message


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_correct_softmax_passes_with_the_output_rows(dtype: str) -> None:
    report = check_layer(Softmax(), nn.Softmax(dim=1), input_shape=(3, 7), dtype=dtype)
    assert report.ok, report
    assert {"forward output unchanged", "first call's output unchanged"} <= set(_rows(report, PASS))
