"""Bad input gives a clear error (or a FAIL naming the problem), and nothing is lost: the
user's layers, nets, inputs and labels are never modified by the harness."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

import scratch
from harness import CheckError, check_layer, check_net
from harness.compare import FAIL
from reference.layers import affine_example


@pytest.fixture
def affine():
    return affine_example(np.random.default_rng(0), np.float64)  # W (12, 7)


def x12(n=4):
    return np.random.default_rng(1).standard_normal((n, 12))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"input_shape": (4, 5)}, "the torch twin rejected input of shape (4, 5)"),
    ({"x": np.ones((4, 5))}, "mat1 and mat2 shapes cannot be multiplied (4x5 and 12x7)"),
    ({"x": np.ones((4, 12), dtype=np.int64)}, "input x must be a float array, got dtype int64"),
    ({"x": np.ones((4, 12), dtype=bool)}, "input x must be a float array, got dtype bool"),
    ({"x": np.float64(3.0)}, "input x must have at least one dimension"),
    ({"dtype": np.int32}, "dtype must be float32 or float64, got int32"),
    ({"dtype": np.float16}, "dtype must be float32 or float64, got float16"),
    ({"dtype": "complex128"}, "dtype must be float32 or float64, got complex128"),
    ({"x": np.ones((0, 12))}, "empty batch: input x has shape (0, 12)"),
    ({"batch": 0}, "input_shape must be positive integers, got (0, 12)"),
    ({"dout": np.ones((4, 7), dtype=np.int64), "x": np.ones((4, 12))},
     "(dout): dout must be a float array, got dtype int64"),
])
def test_misuse_of_check_layer_raises_a_clear_check_error(affine, kwargs, message):
    with pytest.raises(CheckError) as exc:
        check_layer(affine, **kwargs)
    assert message in str(exc.value)


@pytest.mark.parametrize(("where", "value"), [((2, 3), np.nan), ((0, 11), np.inf),
                                              ((3, 0), -np.inf)])
def test_nan_or_inf_in_the_input_is_located(affine, where, value):
    x = x12()
    x[where] = value
    with pytest.raises(CheckError) as exc:
        check_layer(affine, x=x)
    assert f"Affine: input x contains NaN/Inf (first at index {where})" in str(exc.value)


def test_nan_in_a_weight_is_located(affine):
    affine.params["b"][5] = np.nan
    with pytest.raises(CheckError, match=r"Affine: parameter 'b' contains NaN/Inf \(first at \(5,\)\)"):
        check_layer(affine)


def test_nan_in_a_net_weight_names_the_layer_the_parameter_and_the_index():
    net = scratch.TwoLayerNet(6, 5, 3)
    net.params["W2"][4, 1] = np.inf
    with pytest.raises(CheckError, match=r"TwoLayerNet\.Affine2: parameter 'W' contains NaN/Inf "
                                         r"\(first at \(4, 1\)\)"):
        check_net(net, input_shape=(3, 6))


def test_nan_born_in_the_middle_of_a_net_is_reported_at_the_first_layer_that_makes_it():
    class Log(scratch.Relu):  # a finite input, a NaN output wherever the input is negative
        def forward(self, x):
            self.mask = x <= 0
            return np.log(x)

    net = scratch.TwoLayerNet(6, 5, 3, weight_init_std=1.0)
    net.layers["Relu1"].__class__ = Log
    with np.errstate(invalid="ignore"):
        report = check_net(net, input_shape=(4, 6))
    first = report.first_divergence
    assert report.status == FAIL and first.name == "Relu1(Log).out is finite"
    h = np.random.default_rng(0).standard_normal((4, 6)) @ net.params["W1"]
    assert first.worst_index == tuple(int(i) for i in np.argwhere(h < 0)[0])
    assert "first NaN of the forward pass: layer Relu1 output" in first.message


@pytest.mark.parametrize(("t", "message"), [
    (np.array([0, 12, 3]), "labels out of range: expected 0..9 for 10 classes, got 12 at index 1"),
    (np.array([0, -1, 3]), "labels out of range: expected 0..9 for 10 classes, got -1 at index 1"),
    (np.array([0, 1]), "2 label(s) for a batch of 3 rows"),
    (np.array([0.0, 1.0, 2.0]), "float targets t of shape (3,) do not match the scores (3, 10)"),
    (np.array(["a", "b", "c"]), "targets t must be integer labels or a float array, got dtype <U1"),
])
def test_bad_labels_raise_a_clear_check_error(t, message):
    with pytest.raises(CheckError) as exc:
        check_layer(scratch.SoftmaxWithLoss(), x=np.ones((3, 10)), t=t)
    assert message in str(exc.value)


def test_labels_out_of_range_in_check_net_name_the_loss_layer():
    with pytest.raises(CheckError, match=r"TwoLayerNet\.last_layer: labels out of range.*got 7"):
        check_net(scratch.TwoLayerNet(6, 5, 3), input_shape=(2, 6), t=np.array([1, 7]))


def test_nan_in_float_targets_is_located():
    t = np.zeros((3, 5))
    t[1, 2] = np.nan
    with pytest.raises(CheckError, match=r"targets t contains NaN/Inf \(first at index \(1, 2\)\)"):
        check_layer(scratch.MeanSquaredError(), x=np.ones((3, 5)), t=t)


class ReturnsNone(scratch.Relu):
    def forward(self, x):
        super().forward(x)


class DropsAColumn(scratch.Relu):
    def forward(self, x):
        return super().forward(x)[:, :-1]


class ReturnsFloat32(scratch.Relu):
    def backward(self, dout):
        return super().backward(dout).astype(np.float32)


class Raises(scratch.Relu):
    def backward(self, dout):
        raise IndexError("boom")


@pytest.mark.parametrize(("layer", "tensor", "message"), [
    (ReturnsNone(), "out", "scratch returned None"),
    (DropsAColumn(), "out", "shape mismatch: scratch (4, 8) vs reference (4, 9)"),
    (ReturnsFloat32(), "dx", "dtype mismatch: scratch float32, expected float64"),
    (Raises(), "backward", "IndexError: boom (at "),
])
def test_a_broken_scratch_layer_is_a_finding_not_a_crash(layer, tensor, message):
    report = check_layer(layer, batch=4)
    bad = report.first_divergence
    assert bad.tensor == tensor and message in bad.message


def test_a_net_layer_returning_none_stops_the_net_at_that_layer():
    net = scratch.TwoLayerNet(6, 5, 3)
    net.layers["Relu1"].__class__ = ReturnsNone
    report = check_net(net, input_shape=(3, 6))
    assert report.first_divergence.name == "Relu1(ReturnsNone).out"
    assert "scratch returned None" in report.first_divergence.message
    assert not any(r.layer.startswith("Affine2") for r in report.results)


@pytest.mark.parametrize(("module", "message"), [
    (nn.Linear(12, 7, bias=False), "torch module has no parameter(s) ['bias']"),
    (nn.Bilinear(12, 12, 7), "torch 'weight' has shape (7, 12, 12)"),
    (nn.Sequential(nn.Linear(12, 7)), "torch module has no parameter(s) ['bias', 'weight']"),
])
def test_a_torch_module_with_a_different_parameter_set_is_named(affine, module, message):
    with pytest.raises(CheckError) as exc:
        check_layer(affine, module)
    assert message in str(exc.value) and "Affine" in str(exc.value)


def test_a_layer_its_registered_twin_cannot_build_is_named(affine):
    affine.params = {"weights": affine.params["W"], "b": affine.params["b"]}  # W renamed
    with pytest.raises(CheckError) as exc:
        check_layer(affine, input_shape=(3, 12))
    assert "Affine: the registered twin (Affine) could not build a torch module for this layer: " \
           "KeyError: 'W' (scratch params: ['b', 'weights'])" in str(exc.value)


def test_a_non_module_twin_is_refused(affine):
    with pytest.raises(CheckError, match=r"Relu: the torch twin must be an nn\.Module, got builtin"):
        check_layer(scratch.Relu(), module=torch.relu)  # type: ignore[arg-type]


def test_an_unregistered_layer_without_module_says_how_to_register():
    class Mystery:
        def __init__(self) -> None:
            self.params: dict = {}

    with pytest.raises(CheckError, match=r"no PyTorch twin registered for Mystery.*reference\.register"):
        check_layer(Mystery())


class GreedyAffine(scratch.Affine):
    """A buggy layer that updates its own weights during forward and backward."""

    def forward(self, x):
        self.params["W"] += 1.0
        return super().forward(x)

    def backward(self, dout):
        self.params["b"] *= 2.0
        return super().backward(dout)


def test_the_harness_never_modifies_the_users_layer_nor_its_input(affine):
    layer = GreedyAffine(affine.params["W"].copy(), affine.params["b"].copy())
    before = copy.deepcopy(layer.params)
    x, dout = x12(), np.ones((4, 7))
    x0, d0 = x.copy(), dout.copy()
    for dtype in (np.float32, np.float64):
        report = check_layer(layer, x=x, dout=dout, dtype=dtype, numerical=True)
        assert any(r.tensor.startswith("param W unchanged") for r in report.results)
    for k in before:
        np.testing.assert_array_equal(layer.params[k], before[k])
        assert layer.params[k].dtype == np.float64
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(dout, d0)


def test_check_net_never_modifies_the_users_net_nor_its_data():
    net = scratch.TwoLayerNet(6, 5, 3, weight_init_std=0.5)
    net.layers["Affine1"].__class__ = GreedyAffine
    params = {k: v.copy() for k, v in net.params.items()}
    x, t = np.random.default_rng(2).standard_normal((4, 6)), np.array([0, 2, 1, 1])
    x0, t0 = x.copy(), t.copy()
    check_net(net, x, t, dtype=np.float32)
    for k, v in params.items():
        np.testing.assert_array_equal(net.params[k], v)
        assert net.params[k] is net.layers["Affine1" if k.endswith("1") else "Affine2"].params[
            k[0]]  # the net's sharing of arrays with its layers is intact
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(t, t0)
