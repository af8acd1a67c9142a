"""No vacuous PASS: a comparison that cannot tell a right answer from a wrong one is reported as
VACUOUS, and the inputs the harness generates exercise every code path."""

import numpy as np
import pytest

import scratch
from harness import check_layer, check_net
from harness.compare import PASS, VACUOUS
from harness.suite import all_cases
from reference.extra_layers import bn_example

RNG = np.random.default_rng(11)


def away(shape, sign=0.0, margin=0.1):
    z = np.abs(RNG.standard_normal(shape)) + margin
    return z * sign if sign else z * RNG.choice([-1.0, 1.0], size=shape)


class NoMask(scratch.Relu):
    def backward(self, dout):
        return dout.copy()  # forgets the mask: only inputs <= 0 can show it


def test_all_negative_relu_inputs_give_all_zeros_on_both_sides():
    report = check_layer(scratch.Relu(), x=away((4, 6), -1.0))
    assert report.status == VACUOUS
    assert report["out"].status == VACUOUS and "all zeros" in report["out"].message
    assert report["dx"].status == VACUOUS


def test_all_positive_relu_inputs_are_the_identity_and_hide_a_missing_mask():
    x = away((4, 6), +1.0)
    for layer in (scratch.Relu(), NoMask()):
        report = check_layer(layer, x=x)
        assert report.status == VACUOUS, str(report)
        assert "acted as the identity" in report["dx"].message
    assert check_layer(NoMask(), x=away((4, 6))).status == "FAIL"  # both signs: caught


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layer", [scratch.Sigmoid(), scratch.Tanh()], ids=["Sigmoid", "Tanh"])
@pytest.mark.parametrize("scale", [25, 40])
def test_saturated_activations_have_no_gradient_flow(layer, dtype, scale):
    report = check_layer(layer, x=scale * np.sign(away((3, 5))), dtype=dtype)
    dx = report["dx"]  # tiny (below atol x max|dout|: any dx would pass) or exactly 0
    assert dx.status == VACUOUS and ("no gradient flows" in dx.message or "all zeros" in dx.message)
    assert report.status == VACUOUS


def test_a_gradient_below_the_rounding_floor_is_vacuous_not_pass():
    x = 30 * np.sign(away((3, 5)))  # sigmoid' ~ 1e-13: any dx below 1e-10 x |dout| would pass
    report = check_layer(scratch.Sigmoid(), x=x)
    assert report["dx"].status == VACUOUS
    assert "an all-zero dx would pass too" in report["dx"].message


def test_half_saturated_sigmoid_still_exercises_the_backward():
    x = away((4, 6))
    x[:2] *= 50  # two rows saturated, two in the linear range
    assert check_layer(scratch.Sigmoid(), x=x).status == PASS


def test_sigmoid_of_zeros_is_a_constant_output():
    report = check_layer(scratch.Sigmoid(), x=np.zeros((3, 4)))
    assert report["out"].status == VACUOUS and "constant (0.5)" in report["out"].message


def test_saturated_softmax_with_the_right_labels_has_a_zero_gradient():
    x = np.zeros((3, 4))
    t = np.array([0, 2, 3])
    x[np.arange(3), t] = 1e3  # softmax is exactly one-hot on the label
    report = check_layer(scratch.SoftmaxWithLoss(eps=0), x=x, t=t)
    assert report["dx"].status == VACUOUS and report.status == VACUOUS


@pytest.mark.parametrize(("mode", "shape"), [("classic", (1, 6)), ("per_channel", (1, 6, 1, 1))])
def test_batchnorm_on_a_batch_of_one_is_vacuous(mode, shape):
    layer = bn_example(np.random.default_rng(0), np.float64, features=6, mode=mode)
    report = check_layer(layer, input_shape=shape)
    assert report.status == VACUOUS, str(report)
    assert report["dgamma"].status == VACUOUS and report["dx"].status == VACUOUS


def test_check_net_reports_a_dead_relu_layer_as_vacuous():
    net = scratch.TwoLayerNet(6, 5, 3, weight_init_std=0.5)
    net.params["b1"][:] = -100.0  # every hidden pre-activation is negative
    report = check_net(net, input_shape=(4, 6))
    assert report.status == VACUOUS
    assert report.first_divergence.name == "Relu1(Relu).out"
    assert report["Affine1(Affine).dW"].status == VACUOUS  # no gradient reaches the first layer


@pytest.mark.parametrize("seed", range(20))
def test_generated_relu_inputs_cross_the_kink_away_from_it(seed):
    from harness.check import make_input
    from reference.registry import lookup

    twin = lookup(scratch.Relu)
    x = make_input(twin, scratch.Relu(), (3, 9), np.dtype(np.float64), np.random.default_rng(seed))
    assert (x > 0).any() and (x < 0).any() and np.abs(x).min() >= 0.05


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_built_in_check_exercises_every_parameter_gradient(dtype):
    """The suite `nn-parity check` runs: PASS everywhere means no all-zero/constant tensor,
    no identity nonlinearity and no gradient below the rounding floor."""
    for case in all_cases():
        report = case.run(np.dtype(dtype), 0, 3)
        assert report.status == PASS, f"{case.name}: {report.first_divergence}"
