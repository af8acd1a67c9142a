"""Every convention that differs between the classic code and PyTorch (docs/conventions.md):
mismatched, the harness reports a FAIL on the tensor that shows it; aligned, a PASS."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from harness.check import CheckError, check_layer
from harness.compare import compare
from reference.extra_layers import CONVENTIONS, MaskedDropout, TwinBatchNorm, check_running_stats
from reference.optimizers import check_optimizer, check_weight_decay
from scratch import (
    AdaGrad,
    Adam,
    BatchNormalization,
    Dropout,
    Momentum,
    MultiLayerNet,
    Nesterov,
    Pooling,
    RMSprop,
    col2im,
    im2col,
)

D = 6
DOCS = Path(__file__).resolve().parents[1] / "docs" / "conventions.md"


def fails_on(report, *tensors):
    """The report FAILs, and on (at least) these tensors."""
    failing = {r.tensor for r in report.results if r.status == "FAIL"}
    assert report.status == "FAIL" and set(tensors) <= failing, f"failing: {failing}\n{report}"
    return report


def passes(report):
    assert report.status == "PASS", str(report)
    return report


def bn(**kw):
    rng = np.random.default_rng(0)
    return BatchNormalization(1 + 0.3 * rng.standard_normal(D), 0.2 * rng.standard_normal(D), **kw)


# --- BatchNorm ------------------------------------------------------------------------------
def test_bn_momentum_classic_0_9_is_torch_0_1():
    misread = nn.BatchNorm1d(D, momentum=0.9, eps=1e-6)  # "momentum 0.9" copied from the book
    fails_on(check_layer(bn(unbiased_running_var=True), misread, batch=4), "running_mean", "running_var")
    passes(check_layer(bn(unbiased_running_var=True), nn.BatchNorm1d(D, momentum=0.1, eps=1e-6), batch=4))


def test_bn_eps_classic_1e_6_vs_torch_1e_5():  # float64 sees it; float32 rounding hides it
    fails_on(check_layer(bn(unbiased_running_var=True), nn.BatchNorm1d(D), batch=4), "out", "dx", "dgamma")
    passes(check_layer(bn(unbiased_running_var=True, eps=1e-5), nn.BatchNorm1d(D), batch=4))


def test_bn_running_var_biased_vs_unbiased():
    fails_on(check_layer(bn(), nn.BatchNorm1d(D, eps=1e-6), batch=4), "running_var")
    passes(check_layer(bn(unbiased_running_var=True), nn.BatchNorm1d(D, eps=1e-6), batch=4))


def test_bn_running_var_starts_at_0_vs_1():  # each side from its own initial buffers
    fresh_torch = TwinBatchNorm(D, eps=1e-6, momentum=0.1, per_activation=True, biased_running_var=True)
    fails_on(check_running_stats(bn(), fresh_torch), "running_var", "out (eval)")
    passes(check_running_stats(bn(running_var_init=1.0), fresh_torch))


def test_bn_torch_defaults_match_a_fresh_stock_batchnorm_over_several_steps():
    layer = BatchNormalization.torch_defaults(np.ones(3), np.zeros(3))
    passes(check_running_stats(layer, nn.BatchNorm2d(3), input_shape=(2, 3, 4, 4), steps=5))
    fails_on(check_running_stats(BatchNormalization(np.ones(3), np.zeros(3), mode="per_channel"),
                                 nn.BatchNorm2d(3), input_shape=(2, 3, 4, 4)), "running_var", "out (eval)")


def test_user_built_batchnorm2d_against_the_classic_layer_fails_on_running_var_and_out():
    classic = BatchNormalization(np.ones(3), np.zeros(3), mode="per_channel")
    fails_on(check_layer(classic, nn.BatchNorm2d(3), input_shape=(2, 3, 4, 4)), "running_var", "out")
    torch_like = BatchNormalization.torch_defaults(np.ones(3), np.zeros(3))
    passes(check_layer(torch_like, nn.BatchNorm2d(3), input_shape=(2, 3, 4, 4)))


def test_bn_4d_classic_is_per_activation_not_per_channel():
    x = np.random.default_rng(0).standard_normal((4, 3, 2, 2))
    per_activation = BatchNormalization(np.ones(12), np.zeros(12)).forward(x)
    per_channel = nn.BatchNorm2d(3, eps=1e-6).double()(torch.from_numpy(x))
    assert compare(per_activation, per_channel, tensor="out").status == "FAIL"
    with pytest.raises(CheckError, match=r"'gamma' of shape \(12,\).*shape \(3,\)"):
        check_layer(BatchNormalization(np.ones(12), np.zeros(12)), nn.BatchNorm2d(3), x=x)
    aligned = BatchNormalization(np.ones(3), np.zeros(3), mode="per_channel", unbiased_running_var=True)
    passes(check_layer(aligned, nn.BatchNorm2d(3, eps=1e-6), x=x))


# --- Dropout --------------------------------------------------------------------------------
def test_dropout_classic_scaling_vs_nn_dropout_in_training():  # out differs by the factor 1/(1-p)
    report = fails_on(check_layer(Dropout(0.2), MaskedDropout(0.2, "inverted"), batch=4), "out", "dx")
    assert report["out"].max_rel == pytest.approx(0.2)
    fails_on(check_layer(Dropout(0.2), nn.Dropout(0.2), batch=4), "out", "dx")
    passes(check_layer(Dropout(0.2, scale="inverted"), nn.Dropout(0.2), batch=4))
    passes(check_layer(Dropout(0.2), batch=4))  # the classic twin


def test_dropout_classic_scaling_vs_nn_dropout_at_test_time():  # x*(1-p) vs x
    report = fails_on(check_layer(Dropout(0.2), nn.Dropout(0.2), batch=4, train=False), "out", "dx")
    assert report["out"].max_rel == pytest.approx(0.2)
    passes(check_layer(Dropout(0.2, scale="inverted"), nn.Dropout(0.2), batch=4, train=False))


class RedrawingDropout(Dropout):
    """The classic behaviour: a fresh mask on every training forward, whatever was injected."""

    def forward(self, x, train_flg=True):
        saved, self.fixed_mask = self.fixed_mask, None
        try:
            return super().forward(x, train_flg)
        finally:
            self.fixed_mask = saved


def test_dropout_masks_from_different_rngs_differ_unless_injected():
    fails_on(check_layer(RedrawingDropout(0.5), batch=4), "out", "dx")
    passes(check_layer(Dropout(0.5), batch=4))


def test_numerical_gradient_through_dropout_needs_a_frozen_mask():
    report = fails_on(check_layer(RedrawingDropout(0.5), batch=3, numerical=True), "out", "dx")
    row = report["dx backprop vs numerical"]  # differences of a random function say nothing
    assert row.status == "VACUOUS" and "not deterministic" in row.message
    passes(check_layer(Dropout(0.5), batch=3, numerical=True))


# --- Pooling with padding -------------------------------------------------------------------
class ClassicPooling(Pooling):
    """The classic forward and backward: output size computed without pad, zero padding."""

    def forward(self, x):
        n, c, h, w = x.shape
        out_h = int(1 + (h - self.pool_h) / self.stride)  # pad forgotten
        out_w = int(1 + (w - self.pool_w) / self.stride)
        col = im2col(x, self.pool_h, self.pool_w, self.stride, self.pad)  # zero padding
        col = col.reshape(-1, self.pool_h * self.pool_w)
        self.x_shape, self.arg_max = x.shape, np.argmax(col, axis=1)
        return np.max(col, axis=1).reshape(n, out_h, out_w, c).transpose(0, 3, 1, 2)

    def backward(self, dout):
        dout = dout.transpose(0, 2, 3, 1)
        dmax = np.zeros((dout.size, self.pool_h * self.pool_w), dtype=dout.dtype)
        dmax[np.arange(self.arg_max.size), self.arg_max] = dout.reshape(-1)
        return col2im(dmax, self.x_shape, self.pool_h, self.pool_w, self.stride, self.pad)


def test_classic_pooling_with_pad_is_broken_and_ours_is_not():
    crashed = check_layer(ClassicPooling(3, 3, 2, 1), nn.MaxPool2d(3, 2, 1), input_shape=(2, 2, 7, 7))
    assert crashed["forward"].status == "ERROR"  # 4x4 windows reshaped into 3x3
    lucky = check_layer(ClassicPooling(2, 2, 3, 1), nn.MaxPool2d(2, 3, 1), input_shape=(2, 2, 8, 8))
    fails_on(lucky, "out")  # the same size by luck, shifted windows: silently wrong
    passes(check_layer(Pooling(3, 3, stride=2, pad=1), nn.MaxPool2d(3, 2, 1), input_shape=(2, 2, 7, 7)))
    passes(check_layer(Pooling(2, 2, stride=3, pad=1), nn.MaxPool2d(2, 3, 1), input_shape=(2, 2, 8, 8)))


# --- Optimizers -----------------------------------------------------------------------------
def test_momentum_equals_torch_sgd_only_while_lr_is_constant():
    passes(check_optimizer(Momentum(0.1)))
    report = fails_on(check_optimizer(Momentum(0.1), lr_schedule={3: 0.01}), "W1", "b1", "W2", "b2")
    assert "first differs after step 3" in report["W1"].message
    passes(check_optimizer(Momentum(0.1, form="torch"), lr_schedule={3: 0.01}))


def test_nesterov_forms():
    book = fails_on(check_optimizer(Nesterov(0.1)), "W1")  # the book's code: a different optimizer
    assert "first differs after step 1" in book["W1"].message
    passes(check_optimizer(Nesterov(0.1, form="bengio")))
    fails_on(check_optimizer(Nesterov(0.1, form="bengio"), lr_schedule={3: 0.01}), "W1")
    passes(check_optimizer(Nesterov(0.1, form="torch"), lr_schedule={3: 0.01}))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adagrad_eps(dtype):  # 1e-7 vs torch's 1e-10: visible once grads are ~1e-3
    fails_on(check_optimizer(AdaGrad(0.1), lambda ps: torch.optim.Adagrad(ps, lr=0.1), dtype=dtype,
                             grad_scale=1e-3), "W1")
    passes(check_optimizer(AdaGrad(0.1), dtype=dtype, grad_scale=1e-3))  # twin: Adagrad(eps=1e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rmsprop_eps_and_alpha(dtype):
    fails_on(check_optimizer(RMSprop(0.01), lambda ps: torch.optim.RMSprop(ps, lr=0.01), dtype=dtype,
                             grad_scale=1e-3), "W1")
    default_alpha = lambda ps: torch.optim.RMSprop(ps, lr=0.01, eps=1e-7)  # noqa: E731
    fails_on(check_optimizer(RMSprop(0.01, decay_rate=0.9), default_alpha, dtype=dtype), "W1")
    passes(check_optimizer(RMSprop(0.01, decay_rate=0.9),
                           lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.9, eps=1e-7), dtype=dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_eps_on_uncorrected_sqrt_v(dtype):
    fixed = lambda ps: torch.optim.Adam(ps, lr=0.01, eps=1e-7)  # noqa: E731
    fails_on(check_optimizer(Adam(0.01), fixed, dtype=dtype, grad_scale=1e-3), "W1", "b1")
    passes(check_optimizer(Adam(0.01), dtype=dtype, grad_scale=1e-3))  # eps_t = 1e-7/sqrt(1-b2^t)


def test_adam_difference_is_bounded_for_ordinary_gradients():  # below float32's tolerance
    stock = lambda ps: torch.optim.Adam(ps, lr=0.01)  # noqa: E731
    passes(check_optimizer(Adam(0.01), stock, dtype=np.float32))
    report = fails_on(check_optimizer(Adam(0.01), stock, dtype=np.float64), "W1")
    assert report["W1"].max_abs < 1e-5


# --- Weight decay ---------------------------------------------------------------------------
def test_weight_decay_explicit_l2_vs_sgd_weight_decay():
    net = MultiLayerNet(6, [5, 4], 3, weight_init_std="he", weight_decay_lambda=0.1, use_dropout=True)
    passes(check_weight_decay(net))
    report = fails_on(check_weight_decay(net, convention="sgd_weight_decay"),
                      "loss", "dW1", "b1 after step", "b3 after step")  # not in the loss; decays biases
    assert report["W1 after step"].status == "PASS" and report["db1"].status == "PASS"
    assert "first differs after step 2" in report["b1 after step"].message  # b starts at 0


def test_sgd_weight_decay_also_decays_batchnorm_gamma_and_beta():
    net = MultiLayerNet(6, [5], 3, weight_decay_lambda=0.1, use_batchnorm=True, seed=0)
    passes(check_weight_decay(net))
    fails_on(check_weight_decay(net, convention="sgd_weight_decay"), "gamma1 after step", "beta1 after step")


# --- The table ------------------------------------------------------------------------------
def test_docs_table_names_every_switch():
    text = DOCS.read_text()
    for row in CONVENTIONS:
        assert row["component"] in text
        for switch in re.findall(r"[a-z_]+(?:_[a-z]+)+|\b(?:momentum|eps|mode|scale|form)\b", row["switch"]):
            assert switch in text, (row, switch)
