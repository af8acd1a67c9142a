"""The five classic bugs and the transposed weight: check_layer FAILs and its report names the
tensor, the worst index and the size of the difference, which we recompute by hand here."""

import numpy as np
import pytest

import scratch
from harness import check_layer, check_net
from harness.compare import FAIL, PASS
from scratch.functions import softmax

RNG = np.random.default_rng(7)
W_SQUARE = RNG.standard_normal((6, 6)) / np.sqrt(6)
B = 0.1 * RNG.standard_normal(6)


class SigmoidPrecedence(scratch.Sigmoid):
    def backward(self, dout):
        return dout * 1.0 - self.out * self.out  # dout * (1.0 - out) * out


class SoftmaxOverBatch(scratch.SoftmaxWithLoss):
    def forward(self, x, t):
        super().forward(x, t)  # the labels, saved for backward
        e = np.exp(x - np.max(x))  # the 1-D softmax: one max and one sum for the whole batch
        self.y = e / np.sum(e)
        return -np.sum(np.log(self.y[np.arange(x.shape[0]), t] + 1e-7)) / x.shape[0]


class ReluInplaceDout(scratch.Relu):
    def backward(self, dout):
        dout[self.mask] = 0
        return dout


class LossNotDivided(scratch.SoftmaxWithLoss):
    def backward(self, dout=1.0):
        return super().backward(dout) * self.y.shape[0]


class BiasWrongAxis(scratch.Affine):
    def backward(self, dout):
        dx = super().backward(dout)
        self.grads["b"] = np.sum(dout, axis=1)
        return dx


class TransposedWeight(scratch.Affine):
    def backward(self, dout):
        super().backward(dout)
        return dout @ self.params["W"]  # dout @ W.T


def worst(diff: np.ndarray) -> tuple[tuple[int, ...], float]:
    i = np.unravel_index(int(np.argmax(np.abs(diff))), diff.shape)
    return tuple(int(k) for k in i), float(np.abs(diff).max())


def run(layer, x, t=None, dout=None):
    report = check_layer(layer, x=x, t=t, dout=dout)
    assert report.status == FAIL, str(report)
    return report, report.first_divergence


def test_sigmoid_precedence_bug_fails_dx_at_the_worst_element():
    x, dout = RNG.standard_normal((5, 6)), RNG.standard_normal((5, 6))
    report, bad = run(SigmoidPrecedence(), x, dout=dout)
    y = 1 / (1 + np.exp(-x))
    index, size = worst((dout * 1.0 - y * y) - dout * (1 - y) * y)
    assert bad.name == "SigmoidPrecedence.dx" and report["out"].status == PASS
    assert bad.max_abs_index == index and bad.max_abs == pytest.approx(size, rel=1e-9)
    assert f"at index {index}" in str(bad) and f"{size:.6g}" in str(bad)


def test_one_dimensional_softmax_on_a_batch_fails_the_loss():
    x, t = RNG.standard_normal((4, 5)), np.array([0, 3, 1, 4])
    _, bad = run(SoftmaxOverBatch(), x, t=t)
    ref = -np.mean(np.log(softmax(x)[np.arange(4), t] + 1e-7))
    e = np.exp(x - x.max())
    buggy = -np.mean(np.log((e / e.sum())[np.arange(4), t] + 1e-7))
    assert bad.tensor == "loss" and bad.max_abs == pytest.approx(abs(buggy - ref), rel=1e-9)


def test_inplace_dout_in_relu_fails_the_unchanged_check_at_the_first_masked_element():
    x = np.array([[0.5, -1.0, 2.0], [-0.3, 0.7, -0.2]])
    report, bad = run(ReluInplaceDout(), x, dout=np.ones((2, 3)))
    assert report["dx"].status == PASS  # the values are right: only the side effect is wrong
    assert bad.tensor == "upstream dout unchanged" and bad.mismatched == 3
    assert bad.worst_index == (0, 1) and "modified its upstream dout in place" in bad.message


@pytest.mark.parametrize("batch", [2, 5, 9])
def test_loss_gradient_not_divided_by_batch_is_off_by_the_batch_size(batch):
    x, t = RNG.standard_normal((batch, 4)), RNG.integers(0, 4, batch)
    _, bad = run(LossNotDivided(), x, t=t)
    correct = softmax(x) - np.eye(4)[t]
    index, size = worst(correct - correct / batch)
    assert bad.tensor == "dx" and bad.max_abs_index == index
    assert bad.max_abs == pytest.approx(size, rel=1e-9)


def test_loss_gradient_not_divided_is_invisible_at_batch_one():
    x, t = RNG.standard_normal((1, 4)), np.array([2])
    assert check_layer(LossNotDivided(), x=x, t=t).status == PASS  # why the selftest uses N > 1


def test_bias_gradient_over_the_wrong_axis_fails_db():
    x, dout = RNG.standard_normal((6, 6)), RNG.standard_normal((6, 6))  # N == out: same shape
    _, bad = run(BiasWrongAxis(W_SQUARE.copy(), B.copy()), x, dout=dout)
    index, size = worst(dout.sum(axis=1) - dout.sum(axis=0))
    assert bad.name == "BiasWrongAxis.db" and bad.max_abs_index == index
    assert bad.max_abs == pytest.approx(size, rel=1e-9)


def test_bias_gradient_over_the_wrong_axis_with_other_shapes_is_a_shape_mismatch():
    layer = BiasWrongAxis(RNG.standard_normal((4, 3)), np.zeros(3))
    _, bad = run(layer, RNG.standard_normal((5, 4)))
    assert bad.tensor == "db" and "shape mismatch: scratch (5,) vs reference (3,)" in bad.message


def test_transposed_weight_in_backward_fails_dx():
    x, dout = RNG.standard_normal((3, 6)), RNG.standard_normal((3, 6))
    report, bad = run(TransposedWeight(W_SQUARE.copy(), B.copy()), x, dout=dout)
    index, size = worst(dout @ W_SQUARE - dout @ W_SQUARE.T)
    assert bad.name == "TransposedWeight.dx" and bad.max_abs_index == index
    assert bad.max_abs == pytest.approx(size, rel=1e-9)
    assert report["dW"].status == PASS and report["db"].status == PASS


def test_check_net_names_the_first_diverging_layer_tensor_and_index():
    class OneBadElement(scratch.Affine):
        def backward(self, dout):
            dx = super().backward(dout)
            self.grads["W"] = self.grads["W"].copy()
            self.grads["W"][3, 1] += 1e-3
            return dx

    net = scratch.TwoLayerNet(8, 5, 4, weight_init_std=0.5)
    net.layers["Affine2"].__class__ = OneBadElement
    report = check_net(net, input_shape=(6, 8))
    bad = report.first_divergence
    assert report.status == FAIL and bad.name == "Affine2(OneBadElement).dW"
    assert bad.worst_index == (3, 1) and bad.max_abs == pytest.approx(1e-3, rel=1e-6)
    assert "first divergence: Affine2(OneBadElement).dW" in str(report)
    order = [r.name for r in report.results if r.status == PASS and r.tensor == "out"]
    assert order == ["Affine1(Affine).out", "Relu1(Relu).out", "Affine2(OneBadElement).out"]


def test_side_by_side_training_names_the_first_step_tensor_and_index():
    import types

    from harness.train import analyse, train_side_by_side

    class OneBadElement(scratch.Affine):
        def backward(self, dout):
            dx = super().backward(dout)
            self.grads["W"] = self.grads["W"].copy()
            self.grads["W"][3, 1] += 1e-3
            return dx

    def make(dtype):
        net = scratch.TwoLayerNet(6, 5, 3, weight_init_std=0.5, dtype=dtype, seed=0)
        net.layers["Affine2"].__class__ = OneBadElement
        return net

    r = np.random.default_rng(0)
    data = types.SimpleNamespace(x_train=r.random((40, 6)), t_train=r.integers(0, 3, 40),
                                 x_test=r.random((8, 6)), t_test=r.integers(0, 3, 8))
    an = analyse(train_side_by_side(make, data, iters=4, batch=4, lr=0.1, mode="lockstep"))
    assert an.agree is False and an.first_step == 0
    assert an.first_tensor == "dW2" and an.first_index == (3, 1)
    assert an.first_abs == pytest.approx(1e-3, rel=1e-6)
    assert "part at step 0, in dW2[3, 1]" in an.verdict
