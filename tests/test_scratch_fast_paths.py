"""The cheaper softmax, label check and loss backward compute what the plain formulas compute.

* ``softmax``/``log_softmax`` of a batch with fewer classes than rows work on a transposed
  copy: same values (to rounding), same dtype, same NaN/inf rows, a fresh C-contiguous result,
  the input untouched;
* ``labels_to_indices`` checks both bounds with one max over the labels viewed as unsigned:
  negative, too large, non-integer labels are still refused with a clear message, whatever the
  integer width or byte order;
* ``SoftmaxWithLoss`` takes the label entries by flat index: the same loss and ``dx`` bit for
  bit as the classic ``dx[rows, t] -= 1``, nothing it is given is modified, every ``dx`` is a
  new array.
"""

from __future__ import annotations

import numpy as np
import pytest

from scratch import SoftmaxWithLoss
from scratch.functions import labels_to_indices, log_softmax, softmax


def plain_softmax(x):
    shifted = x - np.max(x, axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / np.sum(e, axis=-1, keepdims=True)


def plain_log_softmax(x):
    shifted = x - np.max(x, axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


SHAPES = [(100, 10), (1000, 2), (11, 10), (3, 10), (10, 100), (1, 10), (10,), (2, 3, 4)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("fn, plain", [(softmax, plain_softmax),
                                       (log_softmax, plain_log_softmax)],
                         ids=["softmax", "log_softmax"])
def test_softmax_equals_the_plain_formula(fn, plain, shape, dtype, rng):
    x = (5 * rng.standard_normal(shape)).astype(dtype)
    x_before = x.copy()
    got = fn(x)
    want = plain(x.astype(np.float64))
    assert got.dtype == dtype and got.shape == x.shape
    assert got.flags.c_contiguous and not np.shares_memory(got, x)
    np.testing.assert_array_equal(x, x_before)
    rtol = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(got, want.astype(dtype), rtol=rtol, atol=rtol)


@pytest.mark.parametrize("fn, plain", [(softmax, plain_softmax),
                                       (log_softmax, plain_log_softmax)],
                         ids=["softmax", "log_softmax"])
def test_nan_and_inf_rows_behave_as_in_the_plain_formula(fn, plain, rng):
    x = rng.standard_normal((12, 4)).astype(np.float32)
    x[0, 1] = np.nan
    x[1, 2] = np.inf
    x[2] = -np.inf
    x[3, 0] = -np.inf
    x[4] = [1e30, -1e30, 0, 3e38]
    with np.errstate(all="ignore"):
        got, want = fn(x), plain(x)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)  # equal_nan by default


def test_non_contiguous_and_read_only_input(rng):
    x = rng.standard_normal((40, 20)).astype(np.float32)[::2, ::3]  # (20, 7), strided
    x.flags.writeable = False
    np.testing.assert_allclose(softmax(x), plain_softmax(x), rtol=1e-6)
    x_f = np.asfortranarray(rng.standard_normal((30, 5)))  # x.T is already C-contiguous
    before = x_f.copy()
    np.testing.assert_allclose(softmax(x_f), plain_softmax(x_f), rtol=1e-14)
    np.testing.assert_array_equal(x_f, before)


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint8, np.uint64, ">i8", ">i4"])
def test_labels_accept_every_integer_width_and_byte_order(dtype):
    t = np.array([0, 3, 9, 2], dtype=dtype)
    idx = labels_to_indices(t, 10)
    assert idx.tolist() == [0, 3, 9, 2]
    assert labels_to_indices(np.array(7, dtype=dtype), 10).tolist() == [7]


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, ">i8"])
@pytest.mark.parametrize("bad", [-1, 10, -128], ids=["minus-one", "num-classes", "most-negative"])
def test_labels_out_of_range_are_refused(dtype, bad):
    t = np.array([1, bad, 2], dtype=dtype)
    with pytest.raises(ValueError, match=r"labels out of range: expected 0\.\.9"):
        labels_to_indices(t, 10)
    with pytest.raises(ValueError, match="labels out of range"):
        SoftmaxWithLoss().forward(np.zeros((3, 10), np.float32), t)


def test_unsigned_labels_too_large_are_refused():
    with pytest.raises(ValueError, match="got min 1 max 200"):
        labels_to_indices(np.array([1, 200], dtype=np.uint8), 10)


@pytest.mark.parametrize("t", [np.array([0.0, 1.0]), np.array([True, False]), np.array(["0", "1"])],
                         ids=["float", "bool", "str"])
def test_non_integer_labels_are_refused(t):
    with pytest.raises(TypeError, match="labels must be integers or one-hot rows"):
        labels_to_indices(t, 10)


def test_wrong_label_count_is_refused():
    with pytest.raises(ValueError, match="2 rows of scores but 3 labels"):
        SoftmaxWithLoss().forward(np.zeros((2, 10)), np.array([1, 2, 3]))


def classic_loss_and_dx(x, t, eps, dout):
    """The book's SoftmaxWithLoss, line for line, in the input's dtype."""
    dt = x.dtype.type
    y = plain_softmax(x)
    n, rows = x.shape[0], np.arange(x.shape[0])
    if eps:
        loss = -np.sum(np.log(y[rows, t] + dt(eps))) / dt(n)
    else:
        loss = -np.sum(plain_log_softmax(x)[rows, t]) / dt(n)
    dx = y.copy()
    dx[rows, t] -= 1
    dx *= dt(dout) / dt(n)
    return loss, dx


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("eps", [1e-7, 0.0], ids=["classic", "exact"])
@pytest.mark.parametrize("n, c", [(100, 10), (5, 10), (10, 100)])
def test_softmax_with_loss_is_the_classic_layer(n, c, eps, dtype, rng):
    x = (3 * rng.standard_normal((n, c))).astype(dtype)
    t = rng.integers(0, c, n)
    x0, t0 = x.copy(), t.copy()
    layer = SoftmaxWithLoss(eps=eps)
    loss = layer.forward(x, t)
    y_before = layer.y.copy()
    dx1 = layer.backward(1.0)
    dx2 = layer.backward(np.array(2.5))
    want_loss, want_dx = classic_loss_and_dx(x, t, eps, 1.0)
    rtol = 1e-5 if dtype == np.float32 else 1e-13
    assert np.asarray(loss).dtype == dtype and dx1.dtype == dtype
    np.testing.assert_allclose(loss, want_loss, rtol=rtol)
    np.testing.assert_allclose(dx1, want_dx, rtol=rtol, atol=rtol / n)
    # the flat-index update is the classic dx[rows, t] -= 1 bit for bit, on the layer's own y
    y = layer.y
    classic = y.copy()
    classic[np.arange(n), t] -= 1
    np.testing.assert_array_equal(dx1, classic * (dtype(1.0) / dtype(n)))
    np.testing.assert_array_equal(dx2, classic * (dtype(2.5) / dtype(n)))
    assert dx1 is not dx2 and not np.shares_memory(dx1, dx2)
    assert not np.shares_memory(dx1, layer.y)
    np.testing.assert_array_equal(layer.y, y_before)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(t, t0)


def test_one_sample_and_one_hot_labels(rng):
    x = rng.standard_normal(10).astype(np.float32)
    by_index, by_row = SoftmaxWithLoss(), SoftmaxWithLoss()
    loss_i = by_index.forward(x, np.int64(4))
    loss_r = by_row.forward(x, np.eye(10, dtype=np.float32)[4])
    assert loss_i == loss_r and np.asarray(loss_i).dtype == np.float32
    dx = by_index.backward()
    assert dx.shape == (10,) and dx.dtype == np.float32
    np.testing.assert_array_equal(dx, by_row.backward())
    want = plain_softmax(x.astype(np.float64))
    want[4] -= 1
    np.testing.assert_allclose(dx, want, rtol=1e-5, atol=1e-7)

    xb = rng.standard_normal((6, 10))
    t = rng.integers(0, 10, 6)
    a, b = SoftmaxWithLoss(eps=0), SoftmaxWithLoss(eps=0)
    assert a.forward(xb, t) == b.forward(xb, np.eye(10)[t])
    np.testing.assert_array_equal(a.backward(), b.backward())


def test_a_subclass_that_replaces_y_gets_its_own_y_in_backward(rng):
    """backward reads only self.y and self.t_idx: a forward override that sets y is honoured."""
    class Uniform(SoftmaxWithLoss):
        def forward(self, x, t):
            loss = super().forward(x, t)
            self.y = np.full_like(x, 1.0 / x.shape[1])
            return loss

    x, t = rng.standard_normal((4, 5)), np.array([0, 4, 2, 2])
    layer = Uniform()
    layer.forward(x, t)
    want = np.full((4, 5), 0.2)
    want[np.arange(4), t] -= 1
    np.testing.assert_array_equal(layer.backward(), want / 4)
