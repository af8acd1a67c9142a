"""The scratch layers on their own: math facts, dtypes, no mutation (no torch involved)."""

import numpy as np
import pytest

import scratch
from scratch import Affine, MeanSquaredError, Relu, Sigmoid, SoftmaxWithLoss, Tanh, softmax
from scratch.functions import cross_entropy_error


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make", [Relu, Sigmoid, Tanh])
def test_activations_keep_dtype_and_do_not_mutate(make, dtype, rng):
    x = rng.standard_normal((4, 5)).astype(dtype)
    dout = rng.standard_normal((4, 5)).astype(dtype)
    x0, d0 = x.copy(), dout.copy()
    layer = make()
    out, dx = layer.forward(x), layer.backward(dout)
    assert out.dtype == dtype and dx.dtype == dtype
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(dout, d0)


def test_sigmoid_is_the_logistic_function_and_stable_at_extremes():
    x = np.array([-1000.0, -2.0, 0.0, 2.0, 1000.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = Sigmoid().forward(x)
    np.testing.assert_allclose(y[1:4], [1 / (1 + np.exp(2)), 0.5, 1 / (1 + np.exp(-2))])
    assert y[0] == 0.0 and y[-1] == 1.0


def test_softmax_rows_sum_to_one_and_batch_rows_are_independent(rng):
    x = rng.standard_normal((5, 7)) * 50
    y = softmax(x)
    np.testing.assert_allclose(y.sum(axis=1), 1.0)
    np.testing.assert_allclose(softmax(x[2]), y[2])  # 1-D input == that row of the batch


def test_classic_cross_entropy_saturates_at_16_118():
    x = np.array([[1000.0, -1000.0]])
    loss = SoftmaxWithLoss().forward(x, np.array([1]))
    assert loss == pytest.approx(-np.log(1e-7)) and loss == pytest.approx(16.118, abs=1e-3)
    assert SoftmaxWithLoss(eps=0).forward(x, np.array([1])) == pytest.approx(2000.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_with_loss_accepts_integer_and_one_hot_labels(dtype, rng):
    x = rng.standard_normal((6, 4)).astype(dtype)
    t = rng.integers(0, 4, 6)
    a, b = SoftmaxWithLoss(), SoftmaxWithLoss()
    la, lb = a.forward(x, t), b.forward(x, np.eye(4, dtype=dtype)[t])
    assert la == lb and la.dtype == dtype
    np.testing.assert_array_equal(a.backward(), b.backward())


def test_softmax_with_loss_batch_of_one_and_1d_input(rng):
    x = rng.standard_normal(5)
    one = SoftmaxWithLoss()
    l1 = one.forward(x, 3)
    batch = SoftmaxWithLoss()
    l2 = batch.forward(x.reshape(1, 5), np.array([3]))
    assert l1 == pytest.approx(l2)
    assert one.backward().shape == (5,)


def test_softmax_with_loss_rejects_out_of_range_labels():
    with pytest.raises(ValueError, match=r"labels out of range: expected 0\.\.3, got min 0 max 4"):
        SoftmaxWithLoss().forward(np.zeros((2, 4)), np.array([0, 4]))


def test_affine_flattens_4d_input_and_restores_dx_shape(rng):
    W, b = rng.standard_normal((12, 3)), rng.standard_normal(3)
    layer = Affine(W, b)
    x = rng.standard_normal((2, 3, 2, 2))
    out = layer.forward(x)
    np.testing.assert_allclose(out, x.reshape(2, 12) @ W + b)
    assert layer.backward(np.ones((2, 3))).shape == (2, 3, 2, 2)
    np.testing.assert_allclose(layer.grads["b"], [2.0, 2.0, 2.0])


def test_mean_squared_error_reductions(rng):
    y, t = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    assert MeanSquaredError().forward(y, t) == pytest.approx(0.5 * np.sum((y - t) ** 2) / 4)
    assert MeanSquaredError("mean").forward(y, t) == pytest.approx(np.mean((y - t) ** 2))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_two_layer_net_stays_in_its_dtype(dtype, rng):
    net = scratch.TwoLayerNet(784, 50, 10, dtype=dtype)
    x, t = rng.random((3, 784)), rng.integers(0, 10, 3)  # float64 input is cast, not promoted
    assert net.loss(x, t).dtype == dtype
    assert all(g.dtype == dtype for g in net.gradient(x, t).values())
    assert net.params["W1"].shape == (784, 50) and net.params["W2"].shape == (50, 10)


def test_two_layer_net_backprop_matches_its_numerical_gradient(rng):
    net = scratch.TwoLayerNet(10, 6, 4, weight_init_std=0.5, seed=3)
    net.last_layer.eps = 0  # the exact loss: its derivative is what backward computes
    x, t = rng.standard_normal((5, 10)), rng.integers(0, 4, 5)
    grad, num = net.gradient(x, t), net.numerical_gradient(x, t, h=1e-5)
    for k in grad:  # the classic figure: max |backprop - numerical| per parameter
        assert np.abs(grad[k] - num[k]).max() < 1e-8, k


def test_classic_eps_makes_the_numerical_gradient_disagree_where_p_is_small(rng):
    """-log(p + 1e-7) has derivative p/(p + 1e-7) times the exact one: a relative error of
    1e-7/p, which backward ignores. With confident wrong predictions (p ~ 1e-4) it shows."""
    net = scratch.TwoLayerNet(10, 6, 4, weight_init_std=1.5, seed=3)
    x = rng.standard_normal((5, 10))
    t = np.argmin(net.predict(x), axis=1)  # the least likely class: p is tiny
    grad, num = net.gradient(x, t), net.numerical_gradient(x, t, h=1e-5)
    p = net.last_layer.y[np.arange(5), t]
    worst = max(np.abs(grad[k] - num[k]).max() for k in grad)
    assert worst > 1e-5 and p.min() < 1e-2


def test_two_layer_net_rejects_other_dtypes():
    with pytest.raises(TypeError, match="float32 or float64"):
        scratch.TwoLayerNet(4, 3, 2, dtype=np.float16)


def test_cross_entropy_of_one_hot_1d(rng):
    y = softmax(rng.standard_normal(4))
    assert cross_entropy_error(y, np.eye(4)[2]) == pytest.approx(-np.log(y[2] + 1e-7))
