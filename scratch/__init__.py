"""Pure NumPy layers, nets, optimizers and numerical gradients (never imports torch)."""

from scratch.functions import cross_entropy_error, log_softmax, sigmoid, softmax
from scratch.gradient import numerical_gradient
from scratch.layers import (
    Affine,
    Layer,
    MeanSquaredError,
    Relu,
    Sigmoid,
    SoftmaxWithLoss,
    Tanh,
)
from scratch.two_layer_net import TwoLayerNet

__all__ = [
    "Affine",
    "Layer",
    "MeanSquaredError",
    "Relu",
    "Sigmoid",
    "SoftmaxWithLoss",
    "Tanh",
    "TwoLayerNet",
    "cross_entropy_error",
    "log_softmax",
    "numerical_gradient",
    "sigmoid",
    "softmax",
]
