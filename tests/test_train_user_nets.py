"""Side-by-side training of a user's own nets, the way a new user writes them: the net is
trained in place and given back clean (no Dropout mask left installed, its own ``loss``), a
``predict`` that runs dropout in training mode is a DISAGREE (not a crash), a regression loss
(MeanSquaredError) learns one-hot float targets on both sides, and a loss with weight decay
stored under another name than ``weight_decay_lambda`` gets a hint saying so."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from harness.train import analyse, train_side_by_side
from reference.layers import random_targets
from reference.registry import register, unregister
from scratch.layers import MeanSquaredError
from scratch.multi_layer_net import MultiLayerNet
from scratch.normalization import Dropout
from scratch.two_layer_net import TwoLayerNet


def run(subset: Any, net: Any, iters: int = 20, **kw: Any) -> tuple[Any, Any]:
    r = train_side_by_side(net, subset, iters=iters, **kw)
    return r, analyse(r)


def dropout_net(cls: type = MultiLayerNet, dtype: Any = np.float64) -> Any:
    return cls(784, [30, 20], 10, dtype=dtype, seed=0, use_dropout=True, dropout_ratio=0.3)


def dropouts(net: Any) -> list[Dropout]:
    return [layer for layer in net.layers.values() if isinstance(layer, Dropout)]


# ---------------------------------------------------------------- the net is given back clean


@pytest.mark.parametrize("frameworks", [("numpy", "torch"), ("torch",)])
def test_no_dropout_mask_is_left_in_the_trained_net(subset, frameworks) -> None:
    net = dropout_net()
    run(subset, net, frameworks=frameworks)
    assert all(d.fixed_mask is None for d in dropouts(net)) and "loss" not in vars(net)
    net.gradient(subset.x_train[:32], subset.t_train[:32])  # another batch size: no stale mask
    masks = [d.mask.copy() for d in dropouts(net)]
    net.gradient(subset.x_train[:32], subset.t_train[:32])
    assert not all(np.array_equal(m, d.mask) for m, d in zip(masks, dropouts(net), strict=True))


class FailsAtStep3(MultiLayerNet):
    calls = 0

    def gradient(self, x, t):
        self.calls += 1
        if self.calls == 4:
            raise RuntimeError("user bug at step 3")
        return super().gradient(x, t)


def test_masks_and_loss_are_given_back_when_training_fails(subset) -> None:
    net = dropout_net(FailsAtStep3)
    with pytest.raises(RuntimeError, match="user bug at step 3"):
        run(subset, net, parallel=False)
    assert all(d.fixed_mask is None for d in dropouts(net)) and "loss" not in vars(net)


# ---------------------------------------------------------------- dropout at test time


class DropoutInPredict(MultiLayerNet):  # predict() always in training mode: dropout at test time
    def predict(self, x, train_flg=False):
        return super().predict(x, True)


@pytest.mark.parametrize("mode", ["free", "lockstep"])
def test_dropout_in_predict_disagrees_on_the_eval_output(subset, mode) -> None:
    _, an = run(subset, dropout_net(DropoutInPredict), mode=mode)
    assert an.agree is False and an.first_step is None, an.verdict
    assert an.eval_failure["check"] == "eval output" and an.eval_failure["step"] == 0
    assert "the evaluation-mode output disagrees" in an.verdict
    assert "DropoutInPredict.predict() in evaluation mode differs" in an.verdict


# ---------------------------------------------------------------- a regression loss


class MSENet(TwoLayerNet):  # MeanSquaredError on one-hot rows; loss(x, t) takes them as they come
    def _build_layers(self) -> None:
        super()._build_layers()
        self.last_layer = MeanSquaredError()


class MSEGradTwice(MSENet):
    def gradient(self, x, t):
        return {k: 2 * g for k, g in super().gradient(x, t).items()}


@pytest.mark.parametrize("dtype,mode,parallel", [("float64", "free", True),
                                                 ("float64", "free", False),
                                                 ("float32", "lockstep", False)])
def test_mean_squared_error_net_trains_on_one_hot_float_targets(subset, dtype, mode,
                                                               parallel) -> None:
    seen = []

    class Recorded(MSENet):
        def loss(self, x, t):
            seen.append((t.dtype, t.shape))
            return super().loss(x, t)

    r, an = run(subset, Recorded(784, 20, 10, dtype=np.dtype(dtype)), dtype=dtype, mode=mode,
                parallel=parallel)
    assert an.agree is True and r.config.targets == "one-hot", an.verdict
    assert seen[0] == (np.dtype(dtype), (100, 10))
    assert all(c.status == "PASS" for c in r.eval_checks)


def test_a_mean_squared_error_bug_is_still_caught(subset) -> None:
    _, an = run(subset, MSEGradTwice(784, 20, 10))
    assert an.agree is False and an.first_step == 0, an.verdict


class OwnSquaredLoss:  # a user's loss layer with a registered twin, not a scratch subclass
    def forward(self, x, t):
        self.diff = x - t
        return 0.5 * np.sum(self.diff ** 2) / x.shape[0]

    def backward(self, dout=1.0):
        return self.diff * dout / self.diff.shape[0]


class TwinSquaredLoss(torch.nn.Module):
    def forward(self, x, t):
        return 0.5 * ((x - t) ** 2).sum() / x.shape[0]


def test_a_registered_regression_loss_gets_one_hot_targets(subset) -> None:
    register(OwnSquaredLoss, lambda layer: TwinSquaredLoss(), kind="loss",
             make_target=random_targets)
    try:
        net = TwoLayerNet(784, 20, 10, seed=0)
        net.last_layer = OwnSquaredLoss()
        r, an = run(subset, net)
    finally:
        unregister(OwnSquaredLoss)
    assert an.agree is True and r.config.targets == "one-hot", an.verdict


def test_one_hot_targets_that_cannot_fit_are_refused_before_training(subset) -> None:
    steps = []
    net = MSENet(784, 20, 5, seed=0)
    before = net.params["W1"].copy()
    with pytest.raises(ValueError, match=r"MeanSquaredError, a regression loss: it needs float "
                                         r"targets of the output's shape \(batch, 5\)"):
        run(subset, net, callbacks=[steps.append])
    assert not steps and np.array_equal(net.params["W1"], before)


# ---------------------------------------------------------------- weight decay under another name


class WeightDecayAsWd(TwoLayerNet):  # right, but the twin does not know self.wd
    def __init__(self, *a: Any, wd: float = 0.1, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.wd = wd

    def loss(self, x, t):
        return super().loss(x, t) + 0.5 * self.wd * sum(np.sum(self.params[k] ** 2)
                                                        for k in ("W1", "W2"))

    def gradient(self, x, t):
        g = super().gradient(x, t)
        return {k: g[k] + self.wd * self.params[k] if k.startswith("W") else g[k] for k in g}


class LossTwice(TwoLayerNet):  # a wrong data term: it changes with the batch
    def loss(self, x, t):
        return 2 * super().loss(x, t)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_weight_decay_under_another_name_gets_a_hint(subset, dtype) -> None:
    net = WeightDecayAsWd(784, 20, 10, seed=0, dtype=np.dtype(dtype))
    r, an = run(subset, net, dtype=dtype)
    assert an.agree is False and an.first_step == 0 and an.first_tensor == "loss", an.verdict
    term = r.loss_term["batch0"]
    assert term > 0 and abs(r.loss_term["batch1"] - term) <= 1e-9 * term
    assert ("the net's loss adds a term of the weights alone that the twin does not know "
            f"({term:.6g} on two batches): weight decay stored as something other than "
            "weight_decay_lambda? The twin adds 0.5 * weight_decay_lambda * sum(W**2)"
            ) in an.verdict
    assert an.hint in an.verdict


def test_a_wrong_data_term_gets_no_weight_decay_hint(subset) -> None:
    r, an = run(subset, LossTwice(784, 20, 10, seed=0))
    assert an.agree is False and an.first_tensor == "loss", an.verdict
    assert r.loss_term is None and "weights alone" not in an.verdict
