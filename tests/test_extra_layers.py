"""The classic BatchNorm, Dropout, Convolution, Pooling, Flatten and the nets built from them,
checked against PyTorch: one readable line per case."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from harness.check import check_layer, check_net
from harness.gradcheck import gradient_check
from reference.extra_layers import bn_example, conv_example, distinct_values
from scratch import (
    SGD,
    BatchNormalization,
    Convolution,
    Dropout,
    Flatten,
    MultiLayerNet,
    Pooling,
    SimpleConvNet,
    col2im,
    im2col,
)
from scratch.multi_layer_net import init_std

DTYPES = (np.float32, np.float64)
F64 = (np.float64,)  # numerical checks run in float64 anyway


def assert_ok(layer, module=None, dtypes=DTYPES, **kw):
    """check_layer in every dtype must PASS (numerical=True adds the three-way check)."""
    for dtype in dtypes:
        report = check_layer(layer, module, dtype=dtype, **kw)
        assert report.status == "PASS", str(report)


def conv(fn, c, fh, fw=None, stride=1, pad=0, seed=0):
    return conv_example(np.random.default_rng(seed), np.float64, fn, c, fh, fw or fh, stride, pad)


def bn(features, seed=0, **kw):
    return bn_example(np.random.default_rng(seed), np.float64, features, **kw)


# --- Convolution: nn.Conv2d, same (FN, C, FH, FW) layout ------------------------------------
def test_conv_3x3(): assert_ok(conv(4, 3, 3), input_shape=(2, 3, 7, 7))
def test_conv_stride2_pad1(): assert_ok(conv(5, 2, 3, stride=2, pad=1), input_shape=(2, 2, 8, 7))
def test_conv_rect_kernel_pad2(): assert_ok(conv(3, 2, 2, 3, stride=2, pad=2), input_shape=(3, 2, 6, 9))
def test_conv_1x1(): assert_ok(conv(4, 3, 1), input_shape=(2, 3, 4, 5))
def test_conv_kernel_fills_input(): assert_ok(conv(2, 1, 5), input_shape=(2, 1, 5, 5))
def test_conv_stride_skips_last_column(): assert_ok(conv(2, 1, 3, stride=3), input_shape=(1, 1, 8, 8))
def test_conv_mnist_sized(): assert_ok(conv(30, 1, 5), input_shape=(3, 1, 28, 28))
def test_conv_batch_1(): assert_ok(conv(2, 2, 3, pad=1), input_shape=(1, 2, 4, 4))
def test_conv_numerical(): assert_ok(conv(2, 2, 3, stride=2, pad=1), input_shape=(2, 2, 5, 5), numerical=True)


# --- Pooling: nn.MaxPool2d; distinct input values, so no window has a tie --------------------
def test_pool_2x2(): assert_ok(Pooling(2, 2), input_shape=(2, 3, 6, 6))
def test_pool_odd_input_drops_last_row(): assert_ok(Pooling(2, 2), input_shape=(2, 1, 7, 7))
def test_pool_3x3_stride2_pad1(): assert_ok(Pooling(3, 3, stride=2, pad=1), input_shape=(2, 2, 7, 7))
def test_pool_overlapping(): assert_ok(Pooling(3, 3, stride=1), input_shape=(1, 2, 5, 5))
def test_pool_rect_pad1(): assert_ok(Pooling(2, 3, stride=2, pad=1), input_shape=(2, 2, 6, 7))
def test_pool_numerical(): assert_ok(Pooling(2, 2), input_shape=(2, 2, 4, 4), numerical=True)


def test_pool_pads_with_minus_inf():  # all inputs negative: a zero border would win the max
    x = -1.0 - np.abs(distinct_values(None, (2, 2, 5, 5), np.float64, np.random.default_rng(0)))
    assert_ok(Pooling(3, 3, stride=2, pad=1), x=x)


def test_pool_pad_more_than_half_the_window_is_refused():
    with pytest.raises(ValueError, match="half the window"):
        Pooling(2, 2, pad=2)


# --- Flatten -------------------------------------------------------------------------------
def test_flatten(): assert_ok(Flatten(), input_shape=(3, 2, 3, 4))


# --- im2col / col2im ------------------------------------------------------------------------
def naive_im2col(x, fh, fw, stride, pad):
    xp = np.pad(x, [(0, 0), (0, 0), (pad, pad), (pad, pad)])
    n, _, h, w = xp.shape
    oh, ow = (h - fh) // stride + 1, (w - fw) // stride + 1
    return np.array([xp[i, :, y * stride:y * stride + fh, z * stride:z * stride + fw].ravel()
                     for i in range(n) for y in range(oh) for z in range(ow)])


@pytest.mark.parametrize("fh,fw,stride,pad", [(3, 3, 1, 0), (2, 3, 2, 1), (5, 5, 3, 2)])
def test_im2col_matches_a_plain_loop(fh, fw, stride, pad):
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 8))
    np.testing.assert_array_equal(im2col(x, fh, fw, stride, pad), naive_im2col(x, fh, fw, stride, pad))


@pytest.mark.parametrize("fh,fw,stride,pad", [(3, 3, 1, 0), (2, 3, 2, 1), (5, 5, 3, 2)])
def test_col2im_is_the_adjoint_of_im2col(fh, fw, stride, pad):  # <im2col(x), c> == <x, col2im(c)>
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 9, 8))
    c = rng.standard_normal(im2col(x, fh, fw, stride, pad).shape)
    lhs = np.sum(im2col(x, fh, fw, stride, pad) * c)
    assert lhs == pytest.approx(np.sum(x * col2im(c, x.shape, fh, fw, stride, pad)), rel=1e-12)


def test_im2col_keeps_float32():
    x = np.ones((1, 1, 4, 4), np.float32)
    assert im2col(x, 2, 2, 1, 1).dtype == np.float32
    assert col2im(im2col(x, 2, 2), x.shape, 2, 2).dtype == np.float32


# --- BatchNormalization: the twin is built from the layer's own conventions ----------------
def test_bn_2d(): assert_ok(bn(6), batch=4)
def test_bn_eval(): assert_ok(bn(6), batch=4, train=False)
def test_bn_4d_per_activation(): assert_ok(bn(18), input_shape=(4, 2, 3, 3))
def test_bn_4d_per_channel(): assert_ok(bn(3, mode="per_channel"), input_shape=(2, 3, 4, 4))
def test_bn_per_channel_eval(): assert_ok(bn(3, mode="per_channel"), input_shape=(2, 3, 4, 4), train=False)
def test_bn_numerical(): assert_ok(bn(4), batch=5, numerical=True, dtypes=F64)
def test_bn_per_channel_numerical():
    assert_ok(bn(2, mode="per_channel"), input_shape=(2, 2, 3, 3), numerical=True, dtypes=F64)


def test_bn_torch_defaults_is_stock_batchnorm2d():
    layer = BatchNormalization.torch_defaults(np.ones(3), np.zeros(3))
    assert_ok(layer, nn.BatchNorm2d(3), input_shape=(2, 3, 4, 4))


def test_bn_batch_1_is_vacuous_not_pass():  # one value per feature: out = beta, every gradient 0
    report = check_layer(bn(6), batch=1)
    assert report.status == "VACUOUS" and report["dx"].status == "VACUOUS", str(report)


def test_bn_batch_1_gradient_check_proves_nothing_and_says_so():
    assert gradient_check(bn(6), batch=1).status == "VACUOUS"


def test_bn_batch_1_torch_conventions_vacuous_too():  # torch itself refuses a batch of 1
    layer = BatchNormalization.torch_defaults(np.ones(4), np.zeros(4), mode="classic")
    assert check_layer(layer, input_shape=(1, 4)).status == "VACUOUS"


def test_bn_running_stats_follow_the_parameters_dtype():
    layer = bn(4)  # float64 running statistics, cast with the parameters by the harness
    report = check_layer(layer, dtype=np.float32, batch=4)
    assert report.status == "PASS" and report["running_var"].dtype == "float32", str(report)


def test_bn_wrong_feature_count_says_which_mode():
    with pytest.raises(ValueError, match="mode='per_channel'"):
        BatchNormalization(np.ones(3), np.zeros(3)).forward(np.ones((2, 3, 2, 2)))


# --- Dropout: one mask for both sides ------------------------------------------------------
def test_dropout_classic(): assert_ok(Dropout(0.5), batch=4)
def test_dropout_classic_eval(): assert_ok(Dropout(0.5), batch=4, train=False)
def test_dropout_inverted_vs_real_nn_dropout(): assert_ok(Dropout(0.3, "inverted"), nn.Dropout(0.3), batch=4)
def test_dropout_inverted_eval_vs_real_nn_dropout():
    assert_ok(Dropout(0.3, "inverted"), nn.Dropout(0.3), batch=4, train=False)
def test_dropout_numerical_with_frozen_mask(): assert_ok(Dropout(0.5), batch=3, numerical=True, dtypes=F64)


def test_pinning_nn_dropout_leaves_the_global_torch_rng_alone():
    state = torch.random.get_rng_state()
    check_layer(Dropout(0.5, "inverted"), nn.Dropout(0.5), batch=2)
    assert torch.equal(state, torch.random.get_rng_state())


def test_dropout_draws_a_new_mask_each_time_unless_fixed():
    d, x = Dropout(0.5, rng=0), np.ones((4, 50))
    assert not np.array_equal(d.forward(x), d.forward(x))
    d.set_mask(np.arange(200).reshape(4, 50) % 2 == 0)
    assert np.array_equal(d.forward(x), d.forward(x))


# --- Nets: the TwoLayerNet interface --------------------------------------------------------
def test_multi_layer_net_layout_and_shared_arrays():
    net = MultiLayerNet(6, [5, 4], 3, use_batchnorm=True, use_dropout=True, dtype=np.float32)
    assert list(net.layers) == ["Affine1", "BatchNorm1", "Activation_function1", "Dropout1",
                                "Affine2", "BatchNorm2", "Activation_function2", "Dropout2", "Affine3"]
    assert list(net.params) == ["W1", "b1", "gamma1", "beta1", "W2", "b2", "gamma2", "beta2", "W3", "b3"]
    assert all(v.dtype == np.float32 for v in net.params.values())
    assert net.layers["BatchNorm2"].params["gamma"] is net.params["gamma2"]
    w_before = net.layers["Affine1"].params["W"].copy()
    SGD(0.5).update(net.params, {k: np.ones_like(v) for k, v in net.params.items()})
    np.testing.assert_array_equal(net.layers["Affine1"].params["W"], w_before - 0.5)


@pytest.mark.parametrize("name,expected", [("he", np.sqrt(2 / 40)), ("relu", np.sqrt(2 / 40)),
                                           ("xavier", np.sqrt(1 / 40)), ("sigmoid", np.sqrt(1 / 40)),
                                           ("glorot", np.sqrt(2 / 60)), (0.01, 0.01)])
def test_init_std_names(name, expected):
    assert init_std(name, 40, 20) == pytest.approx(expected)


def test_multi_layer_net_gradient_matches_numerical_with_bn_dropout_and_weight_decay():
    net = MultiLayerNet(5, [4, 3], 3, activation="tanh", weight_init_std="xavier", weight_decay_lambda=0.1,
                        use_batchnorm=True, use_dropout=True, dropout_ratio=0.3, seed=3)
    x, t = np.random.default_rng(0).standard_normal((6, 5)), np.array([0, 1, 2, 0, 1, 2])
    grads = net.gradient(x, t)
    num = net.numerical_gradient(x, t, h=1e-5)  # reuses the Dropout masks of gradient()
    for k in net.params:
        np.testing.assert_allclose(grads[k], num[k], rtol=1e-5, atol=1e-7, err_msg=k)


def test_multi_layer_net_float32_stays_float32():
    net = MultiLayerNet(5, [4], 3, weight_decay_lambda=0.1, use_batchnorm=True, dtype=np.float32)
    x, t = np.ones((3, 5)), np.array([0, 1, 2])
    assert np.asarray(net.loss(x, t)).dtype == np.float32
    assert all(g.dtype == np.float32 for g in net.gradient(x, t).values())


def test_multi_layer_net_per_layer_check():
    net = MultiLayerNet(6, [8, 5], 3, activation="sigmoid", weight_init_std="xavier", use_batchnorm=True,
                        use_dropout=True, seed=1)
    assert check_net(net, input_shape=(8, 6)).status == "PASS"


def test_simple_convnet_shapes_and_per_layer_check():
    net = SimpleConvNet((1, 10, 10), {"filter_num": 4, "filter_size": 3}, hidden_size=7, output_size=5,
                        weight_init_std=0.3, seed=2)
    assert net.params["W1"].shape == (4, 1, 3, 3) and net.params["W2"].shape == (4 * 4 * 4, 7)
    assert check_net(net, input_shape=(3, 1, 10, 10)).status == "PASS"


def test_simple_convnet_default_is_the_classic_architecture():
    net = SimpleConvNet()
    assert [type(v).__name__ for v in net.layers.values()] == [
        "Convolution", "Relu", "Pooling", "Affine", "Relu", "Affine"]
    assert net.params["W1"].shape == (30, 1, 5, 5) and net.params["W2"].shape == (30 * 12 * 12, 100)


def test_simple_convnet_gradient_matches_numerical():
    net = SimpleConvNet((1, 6, 6), {"filter_num": 2, "filter_size": 3}, hidden_size=4, output_size=3,
                        weight_init_std=0.5, seed=1)
    x, t = np.random.default_rng(0).standard_normal((2, 1, 6, 6)), np.array([0, 2])
    grads, num = net.gradient(x, t), net.numerical_gradient(x, t, h=1e-5)
    for k in net.params:
        np.testing.assert_allclose(grads[k], num[k], rtol=1e-5, atol=1e-8, err_msg=k)


def test_convolution_rejects_wrong_channels():
    with pytest.raises(ValueError, match=r"expects \(N, 3, H, W\)"):
        Convolution(np.ones((2, 3, 3, 3)), np.zeros(2)).forward(np.ones((1, 2, 5, 5)))
