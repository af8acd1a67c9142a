"""The project's own layers through its own pytest plugin, tinygrad-style: one line a test."""

from __future__ import annotations

import numpy as np
import torch

import scratch
from harness.pytest_plugin import is_autoloaded, parity_test
from reference.layers import affine_example

# Loaded by its pytest11 entry point once the package is installed; otherwise, here.
pytest_plugins = [] if is_autoloaded() else ["harness.pytest_plugin"]

RNG = np.random.default_rng(7)

# every built-in layer, float32 and float64, three seeds: 36 tests from one line
test_builtin_layers = parity_test(scratch.Affine, scratch.Relu, scratch.Sigmoid, scratch.Tanh,
                                  scratch.SoftmaxWithLoss, scratch.MeanSquaredError)


def test_affine_batch_of_one(parity): parity(affine_example(RNG, np.float64), batch=1)
def test_affine_4d_input(parity): parity(affine_example(RNG, np.float32, n_in=12), input_shape=(2, 3, 2, 2), dtype="float32")  # noqa: E501
def test_relu_big_batch(parity): parity(scratch.Relu(), input_shape=(64, 33))
def test_sigmoid_explicit_twin(parity): parity(scratch.Sigmoid(), torch.nn.Sigmoid(), input_shape=(5, 7))
def test_softmax_exact_eps0(parity): parity(scratch.SoftmaxWithLoss(eps=0), input_shape=(6, 10))
def test_softmax_one_hot(parity): parity(scratch.SoftmaxWithLoss(), x=RNG.standard_normal((3, 4)), t=np.eye(4)[[0, 3, 1]])  # noqa: E501
def test_mse_mean(parity): parity(scratch.MeanSquaredError(reduction="mean"), input_shape=(4, 5))
def test_two_layer_net(parity): parity(scratch.TwoLayerNet(24, 9, 10, 0.5), input_shape=(3, 24))
def test_numerical_gradients_too(parity): parity(scratch.Tanh(), input_shape=(3, 4), numerical=True)
def test_every_seed(parity): [parity(scratch.Tanh(), input_shape=(4, 6), seed=s) for s in range(5)]


def test_marker_style_defaults(parity): assert parity(scratch.Affine, dtype="float32", batch=8).input_shape == (8, 12)  # noqa: E501

# (the @pytest.mark.parity marker is tested under --strict-markers in test_pytest_plugin.py: it
# is registered by the plugin's pytest_configure, which runs before collection only when the
# plugin is installed, so using it here would warn in an uninstalled checkout)
