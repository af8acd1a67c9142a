"""check_layer / check_net: parity on correct layers, precise FAILs on broken ones, misuse errors."""

import numpy as np
import pytest
import torch
from torch import nn

import scratch
from harness import CheckError, check_layer, check_net
from harness.compare import FAIL, PASS
from reference import WeightSpec, register, transpose
from reference.layers import affine_example
from reference.registry import unregister

CORE = [
    lambda rng, dt: affine_example(rng, dt),
    lambda rng, dt: scratch.Relu(),
    lambda rng, dt: scratch.Sigmoid(),
    lambda rng, dt: scratch.Tanh(),
    lambda rng, dt: scratch.SoftmaxWithLoss(),
    lambda rng, dt: scratch.SoftmaxWithLoss(eps=0),
    lambda rng, dt: scratch.MeanSquaredError(),
    lambda rng, dt: scratch.MeanSquaredError("mean"),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make", CORE, ids=["Affine", "Relu", "Sigmoid", "Tanh", "SoftmaxWithLoss",
                                            "SoftmaxWithLoss-eps0", "MSE", "MSE-mean"])
def test_correct_core_layers_pass_over_200_seeds(make, dtype):
    for seed in range(200):
        rng = np.random.default_rng(seed)
        batch = int(rng.integers(1, 40))
        report = check_layer(make(rng, np.dtype(dtype)), dtype=dtype, seed=seed, batch=batch)
        assert report.ok, str(report)


@pytest.mark.parametrize("layer", [affine_example(np.random.default_rng(0), np.float64),
                                   scratch.Relu(), scratch.Sigmoid(), scratch.Tanh(),
                                   scratch.SoftmaxWithLoss(), scratch.MeanSquaredError()],
                         ids=lambda layer: type(layer).__name__)
def test_three_way_gradient_check_passes_for_correct_layers(layer):
    report = check_layer(layer, numerical=True, seed=3)
    numerical = [r for r in report.results if "numerical" in r.tensor]
    assert numerical and all(r.status == PASS for r in numerical), str(report)
    assert all("mean_abs" in r.extra and "rel_error" in r.extra for r in numerical)


def test_three_way_check_blames_backprop_not_torch():
    class ScaledDW(scratch.Affine):
        def backward(self, dout):
            dx = super().backward(dout)
            self.grads["W"] = self.grads["W"] * 1.01
            return dx

    layer = ScaledDW(*affine_example(np.random.default_rng(0), np.float64).params.values())
    report = check_layer(layer, numerical=True)
    assert report["dW backprop vs numerical"].status == FAIL
    assert report["dW torch vs numerical"].status == PASS
    assert report["dW"].status == FAIL and report["out"].status == PASS


def test_subclass_is_checked_against_its_parents_twin_with_no_registration():
    class MyRelu(scratch.Relu):
        pass

    assert check_layer(MyRelu(), input_shape=(3, 4)).ok


def test_unknown_layer_without_module_is_a_clear_error():
    class Mystery:
        def forward(self, x):
            return x

    with pytest.raises(CheckError, match="no PyTorch twin registered for Mystery"):
        check_layer(Mystery(), input_shape=(2, 2))


def test_a_user_module_and_weight_map_can_be_given_explicitly():
    class Scale:  # y = x * w (per feature)
        def __init__(self):
            self.params = {"w": np.array([1.5, -2.0, 0.5])}
            self.grads = {}

        def forward(self, x):
            self.x = x
            return x * self.params["w"]

        def backward(self, dout):
            self.grads["w"] = np.sum(dout * self.x, axis=0)
            return dout * self.params["w"]

    class TorchScale(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(3))

        def forward(self, x):
            return x * self.weight

    assert check_layer(Scale(), TorchScale(), input_shape=(4, 3), weight_map={"w": "weight"}).ok


def test_registration_with_a_layout_conversion():
    class RowAffine:  # stores W as (out, in), like torch
        def __init__(self, W):
            self.params = {"Wt": W}
            self.grads = {}

        def forward(self, x):
            self.x = x
            return x @ self.params["Wt"].T

        def backward(self, dout):
            self.grads["Wt"] = dout.T @ self.x
            return dout @ self.params["Wt"]

    register(RowAffine, lambda layer: nn.Linear(3, 2, bias=False),
             {"Wt": WeightSpec("weight")}, input_shape=lambda layer, n: (n, 3))
    try:
        assert check_layer(RowAffine(np.arange(6.0).reshape(2, 3))).ok
    finally:
        unregister(RowAffine)
    # The same layer with a transposing spec now fails on shapes: named, not a traceback.
    register(RowAffine, lambda layer: nn.Linear(3, 2, bias=False),
             {"Wt": WeightSpec("weight", transpose, transpose)}, input_shape=lambda layer, n: (n, 3))
    try:
        with pytest.raises(CheckError, match=r"'Wt' of shape \(2, 3\) converts to \(3, 2\)"):
            check_layer(RowAffine(np.arange(6.0).reshape(2, 3)))
    finally:
        unregister(RowAffine)


def test_different_parameter_sets_are_named():
    layer = affine_example(np.random.default_rng(0), np.float64)
    with pytest.raises(CheckError, match=r"torch parameter\(s\) \['bias'\] are not mapped"):
        check_layer(layer, nn.Linear(12, 7), weight_map={"W": WeightSpec("weight", transpose, transpose)})


def test_the_users_layer_is_never_modified():
    layer = affine_example(np.random.default_rng(0), np.float32)
    before = {k: v.copy() for k, v in layer.params.items()}
    check_layer(layer, dtype=np.float64, numerical=True)
    for k, v in layer.params.items():
        assert v.dtype == np.float32
        np.testing.assert_array_equal(v, before[k])


def test_a_layer_that_writes_into_dout_is_caught():
    class InplaceRelu(scratch.Relu):
        def backward(self, dout):
            dout[self.mask] = 0
            return dout

    report = check_layer(InplaceRelu(), input_shape=(4, 6))
    assert report["upstream dout unchanged"].status == FAIL
    assert report["dx"].status == PASS  # the values are right; the side effect is the bug


def test_a_layer_that_raises_is_reported_as_an_error_not_a_crash():
    class Broken(scratch.Tanh):
        def backward(self, dout):
            raise RuntimeError("oops")

    report = check_layer(Broken(), input_shape=(2, 3))
    assert report.status == "ERROR" and "RuntimeError: oops" in str(report)


def test_check_net_passes_and_names_the_first_divergent_layer():
    net = scratch.TwoLayerNet(8, 5, 3, weight_init_std=0.5, seed=1)
    assert check_net(net, input_shape=(4, 8)).ok

    class BadBias(scratch.Affine):
        def backward(self, dout):
            dx = super().backward(dout)
            self.grads["b"] = np.sum(dout, axis=1)  # the classic wrong-axis bug
            return dx

    net.layers["Affine1"] = BadBias(net.params["W1"], net.params["b1"])
    report = check_net(net, input_shape=(6, 8))
    first = report.first_divergence
    assert first is not None and first.layer == "Affine1(BadBias)" and first.tensor == "db"
    assert "Affine1(BadBias).db" in str(report)
    layer_rows = [r for r in report.results if "()" not in r.tensor]  # not the net's methods
    assert all(r.status == PASS for r in layer_rows if not r.layer.startswith("Affine1"))
    assert next(r for r in report.results if r.tensor == "gradient()['b1']").status == "FAIL"


def test_check_net_forward_results_come_before_backward():
    net = scratch.TwoLayerNet(8, 5, 3, seed=1)
    tensors = [r.tensor for r in check_net(net, input_shape=(2, 8)).results]
    assert tensors[:4] == ["out", "out", "out", "loss"] and tensors[4] == "dx"


@pytest.mark.parametrize(("kwargs", "msg"), [
    ({"dtype": np.float16}, "dtype must be float32 or float64"),
    ({"dtype": np.int32}, "dtype must be float32 or float64"),
    ({"x": np.ones((3, 12), dtype=np.int64)}, "input x must be a float array, got dtype int64"),
    ({"x": np.ones((0, 12))}, "empty batch"),
    ({"x": np.array([[np.nan] * 12])}, r"input x contains NaN/Inf \(first at index \(0, 0\)\)"),
    ({"input_shape": (3, -1)}, "input_shape must be positive integers"),
    ({"input_shape": (3, 5)}, "the torch twin rejected input of shape"),
])
def test_misuse_gets_a_clear_error(kwargs, msg):
    with pytest.raises(CheckError, match=msg):
        check_layer(affine_example(np.random.default_rng(0), np.float64), **kwargs)


def test_nan_weights_are_named():
    layer = affine_example(np.random.default_rng(0), np.float64)
    layer.params["W"][2, 3] = np.nan
    with pytest.raises(CheckError, match=r"parameter 'W' contains NaN/Inf \(first at \(2, 3\)\)"):
        check_layer(layer)
