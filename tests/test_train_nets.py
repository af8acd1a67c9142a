"""Side-by-side float64 training of the deeper nets on real MNIST, with every optimizer.

The issue's bar: SimpleConvNet (a few hundred steps) and a 5-layer MultiLayerNet with
BatchNorm + Dropout (one injected mask for both sides) + Adam stay within 1e-9 relative in
loss. A subset of MNIST keeps the evaluations cheap; the training batches are real images.
"""

from types import SimpleNamespace

import numpy as np
import pytest

from harness.data import load_dataset
from harness.train import analyse, train_side_by_side
from scratch.multi_layer_net import MultiLayerNet
from scratch.simple_convnet import SimpleConvNet

OPTIMIZERS = [("sgd", 0.1), ("momentum", 0.01), ("nesterov", 0.01), ("adagrad", 0.01),
              ("rmsprop", 0.001), ("adam", 0.001)]


@pytest.fixture(scope="module")
def mnist_subset(mnist_dir):
    d = load_dataset("mnist", data_dir=mnist_dir, dtype=np.float64)
    return SimpleNamespace(x_train=d.x_train[:6000], t_train=d.t_train[:6000],
                           x_test=d.x_test[:1000], t_test=d.t_test[:1000], source=d.source)


def five_layer_net(**kw):
    return MultiLayerNet(784, [100, 100, 100, 100], 10, use_batchnorm=True, use_dropout=True,
                         dropout_ratio=0.2, weight_decay_lambda=0.01, dtype=np.float64, seed=0, **kw)


def max_rel_loss_gap(result) -> float:
    ln, lt = np.asarray(result.loss["numpy"]), np.asarray(result.loss["torch"])
    return float(np.max(np.abs(ln - lt) / np.abs(lt)))


def run(net, data, **kw):
    result = train_side_by_side(net, data, dtype=np.float64, **kw)
    return result, analyse(result)


@pytest.mark.parametrize(("optimizer", "lr"), OPTIMIZERS, ids=[o for o, _ in OPTIMIZERS])
def test_five_layer_batchnorm_dropout_net_trains_in_parity(mnist_subset, optimizer, lr):
    result, an = run(five_layer_net(), mnist_subset, iters=300, batch=100, lr=lr,
                     optimizer=optimizer)
    assert max_rel_loss_gap(result) <= 1e-9
    assert an.verdict.startswith("AGREE"), an.verdict
    assert result.loss["numpy"][-1] < result.loss["numpy"][0]  # it learns


def test_dropout_is_really_active_on_both_sides(mnist_subset):
    """One mask per step is drawn and injected into both sides: the losses agree, and they
    are not the losses of the same net without dropout."""
    with_drop, _ = run(five_layer_net(), mnist_subset, iters=5, batch=100, lr=0.001,
                       optimizer="adam")
    no_drop = MultiLayerNet(784, [100, 100, 100, 100], 10, use_batchnorm=True,
                            weight_decay_lambda=0.01, dtype=np.float64, seed=0)
    without, _ = run(no_drop, mnist_subset, iters=5, batch=100, lr=0.001, optimizer="adam")
    assert max_rel_loss_gap(with_drop) <= 1e-9
    assert abs(with_drop.loss["numpy"][0] - without.loss["numpy"][0]) > 1e-3


@pytest.mark.parametrize(("optimizer", "lr"), [("sgd", 0.1), ("adam", 0.001)])
def test_simple_convnet_trains_in_parity(mnist_subset, optimizer, lr):
    net = SimpleConvNet((1, 28, 28), dtype=np.float64, seed=0)
    result, an = run(net, mnist_subset, iters=200, batch=20, lr=lr, optimizer=optimizer)
    assert max_rel_loss_gap(result) <= 1e-9
    assert an.verdict.startswith("AGREE"), an.verdict
    assert np.mean(result.loss["numpy"][-20:]) < 0.7 * result.loss["numpy"][0]


def test_lockstep_names_a_bug_in_a_batchnorm_gradient(mnist_subset):
    class BadGamma(MultiLayerNet):
        def gradient(self, x, t):
            grads = super().gradient(x, t)
            grads["gamma2"] = grads["gamma2"] * 1.001
            return grads

    net = BadGamma(784, [50, 50, 50], 10, use_batchnorm=True, dtype=np.float64, seed=0)
    _, an = run(net, mnist_subset, iters=20, batch=50, lr=0.1, optimizer="sgd", mode="lockstep")
    assert an.verdict.startswith("DISAGREE") and an.first_step == 0
    assert an.first_tensor == "dgamma2", an.verdict


def test_a_bias_before_batchnorm_is_judged_at_its_layers_scale(mnist_subset):
    """Its exact gradient is 0: both sides keep ~1e-17 of rounding, which must not be judged
    against its own ~1e-17 magnitude (a false alarm) but against the layer's weights."""
    net = MultiLayerNet(784, [100, 100], 10, use_batchnorm=True, dtype=np.float64, seed=0)
    result, an = run(net, mnist_subset, iters=30, batch=100, lr=0.1, optimizer="sgd",
                     mode="lockstep")
    assert an.verdict.startswith("AGREE"), an.verdict
    assert 0 < np.nanmax(result.diffs["db1"].abs) < 1e-15


def test_nan_in_training_names_the_step_and_the_first_non_finite_parameter(mnist_subset):
    """lr 1e200: both frameworks blow up alike at step 1 (NaN/Inf at the same elements in
    every tensor): the same behaviour, judged up to that step, with a warning naming it."""
    import scratch

    net = scratch.TwoLayerNet(784, 50, 10, weight_init_std=1.0, dtype=np.float64)
    with np.errstate(all="ignore"):
        _, an = run(net, mnist_subset, iters=8, batch=100, lr=1e200, optimizer="sgd")
    assert an.agree is True and an.stopped_at == 1, an.verdict
    assert an.nonfinite is not None and (an.nonfinite.step, an.nonfinite.side) == (1, "both")
    assert "both runs turn non-finite alike at step 1 (first in the loss" in an.verdict
    assert an.warnings and an.warnings[0].startswith("WARNING: both runs turn non-finite")
