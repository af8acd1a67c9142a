"""``check_net`` also checks the net's own methods against the torch twin of the whole net:
``gradient()`` (every key, on a second call), ``predict()`` in evaluation mode and
``accuracy()``. Wiring bugs pass every per-layer check and fail here; correct nets pass."""

from __future__ import annotations

import numpy as np
import pytest

from harness import check_net
from scratch.layers import Affine
from scratch.multi_layer_net import MultiLayerNet
from scratch.simple_convnet import SimpleConvNet
from scratch.two_layer_net import TwoLayerNet


def failing(net, **kw) -> set[str]:
    return {r.tensor for r in check_net(net, **kw).results if r.status != "PASS"}


def mlp(cls=MultiLayerNet, **kw):
    return cls(6, [10, 8], 3, seed=0, **kw)


class StaleGradients(TwoLayerNet):  # returns the previous call's gradients
    def gradient(self, x, t):
        prev = getattr(self, "prev", None)
        self.prev = {k: v.copy() for k, v in super().gradient(x, t).items()}
        return prev if prev is not None else self.prev


class CopyPasteB2(TwoLayerNet):  # "b2": a1.grads["b"]
    def gradient(self, x, t):
        g = super().gradient(x, t)
        return {**g, "b2": self.layers["Affine1"].grads["b"][: g["b2"].shape[0]]}


class GammaBetaSwapped(MultiLayerNet):
    def gradient(self, x, t):
        g = super().gradient(x, t)
        return {**g, "gamma1": g["beta1"], "beta1": g["gamma1"]}


class PredictInTrainingMode(MultiLayerNet):
    def predict(self, x, train_flg=True):
        return super().predict(x, train_flg)


class AccuracyOverTheBatchAxis(TwoLayerNet):  # argmax over axis 0 (10 rows, 10 classes)
    def accuracy(self, x, t):
        return float(np.mean(np.argmax(self.predict(x), axis=0) == t))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("make", [
    lambda: TwoLayerNet(24, 9, 10, weight_init_std=0.5),
    lambda: mlp(use_batchnorm=True, use_dropout=True, dropout_ratio=0.3, activation="tanh"),
    lambda: mlp(weight_decay_lambda=0.1),
    lambda: SimpleConvNet((1, 10, 10), {"filter_num": 4, "filter_size": 3}, hidden_size=7,
                          output_size=5, weight_init_std=0.3),
], ids=["two-layer", "batchnorm-dropout", "weight-decay", "convnet"])
def test_correct_nets_pass_every_method_row(make, dtype) -> None:
    r = check_net(make(), dtype=dtype, batch=4)
    methods = [x for x in r.results if "()" in x.tensor]
    kinds = {x.tensor.split("[")[0] for x in methods}
    assert r.ok and kinds == {"gradient()", "predict() (evaluation mode)", "accuracy()"}, str(r)


G = "gradient()"
def test_stale_gradients(): assert failing(StaleGradients(24, 9, 10)) >= {f"{G}['W1']", f"{G}['b2']"}
def test_copy_paste_key(): assert failing(CopyPasteB2(24, 10, 10)) == {f"{G}['b2']"}
def test_swapped_keys(): assert failing(mlp(GammaBetaSwapped, use_batchnorm=True)) == {f"{G}['gamma1']",
                                                                                     f"{G}['beta1']"}
def test_predict_in_training_mode():
    assert "predict() (evaluation mode)" in failing(mlp(PredictInTrainingMode, use_batchnorm=True))
def test_wrong_accuracy(): assert failing(AccuracyOverTheBatchAxis(24, 9, 10), batch=10) == {"accuracy()"}


def test_a_wrong_layer_is_named_first_and_the_net_row_says_so() -> None:
    class DoubleW(Affine):
        def backward(self, dout):
            dx = super().backward(dout)
            self.grads["W"] = 2 * self.grads["W"]
            return dx

    net = TwoLayerNet(24, 10, 10)
    net.layers["Affine2"] = DoubleW(net.params["W2"], net.params["b2"])
    r = check_net(net)
    assert r.first_divergence.tensor == "dW" and r.first_divergence.layer.startswith("Affine2")
    row = next(x for x in r.results if x.tensor == "gradient()['W2']")
    assert row.status == "FAIL" and "a layer fails on its own too" in row.message


def test_the_message_points_at_gradient_not_at_a_layer() -> None:
    r = check_net(CopyPasteB2(24, 10, 10))
    bad = next(x for x in r.results if x.status != "PASS")
    assert "it is the gradient of 'b1' (stored under the wrong key" in bad.message
    assert r.first_divergence.tensor == "gradient()['b2']"


class OneHotOnly(TwoLayerNet):
    def accuracy(self, x, t):
        return float(np.mean(np.argmax(self.predict(x), axis=1) == np.argmax(t, axis=1)))


class NeedsVerbose(TwoLayerNet):
    def accuracy(self, x, t, verbose):
        return 0.0


def test_a_one_hot_only_accuracy_passes(): assert check_net(OneHotOnly(24, 9, 10)).ok


def test_an_accuracy_it_cannot_call_is_a_note_not_a_failure() -> None:
    r = check_net(NeedsVerbose(24, 9, 10))
    assert r.ok and "verbose" in r.info["notes"][0] and "note: " in str(r)


class WeightDecayNamedWd(TwoLayerNet):  # right, but the twin only knows weight_decay_lambda
    wd = 0.1

    def loss(self, x, t):
        return super().loss(x, t) + 0.5 * self.wd * sum(np.sum(self.params[k] ** 2) for k in ("W1", "W2"))

    def gradient(self, x, t):
        g = super().gradient(x, t)
        return {**g, **{k: g[k] + self.wd * self.params[k] for k in ("W1", "W2")}}


class RegressionNet(TwoLayerNet):  # MSE loss, float targets, its own notion of accuracy
    def __init__(self):
        super().__init__(6, 5, 3, weight_init_std=0.5)
        from scratch.layers import MeanSquaredError
        self.last_layer = MeanSquaredError()

    def accuracy(self, x, t):
        return float(np.mean(np.abs(self.predict(x) - t) < 0.5))


class HoldsItsArrayModule(TwoLayerNet):  # the usual CuPy/NumPy switch
    xp = np

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.xp = np


def test_a_loss_term_the_twin_does_not_know_is_a_note_and_gradient_is_checked_numerically():
    r = check_net(WeightDecayNamedWd(24, 9, 10))
    assert r.ok and any("weight_decay_lambda" in n for n in r.info["notes"])
    assert {x.tensor for x in r.results} >= {f"{G}['W1'] vs numerical", f"{G}['b2'] vs numerical"}


class WdForgottenInGradient(WeightDecayNamedWd):  # the term in loss() only
    def gradient(self, x, t):
        return TwoLayerNet.gradient(self, x, t)


class WdForgottenInLoss(TwoLayerNet):  # weight_decay_lambda in gradient() only
    weight_decay_lambda = 0.1

    def gradient(self, x, t):
        g = super().gradient(x, t)
        return {**g, **{k: g[k] + 0.1 * self.params[k] for k in ("W1", "W2")}}


class DoubleLoss(TwoLayerNet):
    def loss(self, x, t):
        return 2 * super().loss(x, t)


class AlwaysZeroAccuracy(TwoLayerNet):
    def accuracy(self, x, t):
        return 0.0


class OneHotArgmaxOverBatch(TwoLayerNet):  # right for integer labels, wrong for one-hot rows
    def accuracy(self, x, t):
        y = np.argmax(self.predict(x), axis=1)
        if t.ndim != 1:
            t = np.argmax(t, axis=0)[: len(y)]
        return float(np.sum(y == t)) / x.shape[0]


class ExtraKey(TwoLayerNet):
    def gradient(self, x, t):
        return {**super().gradient(x, t), "W3": np.zeros(3)}


def test_a_term_left_out_of_gradient_fails_against_the_nets_own_loss() -> None:
    assert failing(WdForgottenInGradient(24, 9, 10)) == {f"{G}['W1'] vs numerical",
                                                         f"{G}['W2'] vs numerical"}


def test_a_wrong_loss_fails_its_own_row() -> None:
    r = check_net(WdForgottenInLoss(24, 9, 10))
    assert "loss(x, t)" in failing(WdForgottenInLoss(24, 9, 10))
    assert "loss() leaves it out" in next(x.message for x in r.results if x.tensor == "loss(x, t)")
    r = check_net(DoubleLoss(24, 9, 10))
    assert failing(DoubleLoss(24, 9, 10)) == {"loss(x, t)"}
    assert "changes with the data" in next(x.message for x in r.results if x.tensor == "loss(x, t)")


def test_accuracy_that_counts_nothing_or_misreads_one_hot_rows_fails() -> None:
    assert failing(AlwaysZeroAccuracy(24, 9, 10)) == {"accuracy()"}
    assert failing(AlwaysZeroAccuracy(24, 9, 10), batch=2) == {"accuracy()"}
    r = check_net(OneHotArgmaxOverBatch(24, 9, 10), batch=6)
    assert not r.ok and "given one-hot rows" in r.results[-1].message


def test_extra_gradient_keys_are_a_note() -> None:
    r = check_net(ExtraKey(24, 9, 10))
    assert r.ok and any("also returned ['W3']" in n for n in r.info["notes"])


def test_a_regression_nets_own_accuracy_is_not_judged_as_argmax() -> None:
    r = check_net(RegressionNet(), t=np.random.default_rng(0).standard_normal((4, 3)))
    assert r.ok and "accuracy()" not in {x.tensor for x in r.results}


def test_a_net_holding_a_module_gets_its_methods_checked() -> None:
    r = check_net(HoldsItsArrayModule(24, 9, 10))
    assert r.ok and "gradient()['W1']" in {x.tensor for x in r.results}
