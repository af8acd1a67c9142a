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

# Issue 4: the classic layer and optimizer set.
from scratch.convolution import Convolution, Flatten, Pooling, col2im, im2col
from scratch.multi_layer_net import MultiLayerNet
from scratch.normalization import BatchNormalization, Dropout
from scratch.optimizers import SGD, AdaGrad, Adam, Momentum, Nesterov, RMSprop
from scratch.simple_convnet import SimpleConvNet

__all__ += [
    "SGD", "AdaGrad", "Adam", "BatchNormalization", "Convolution", "Dropout", "Flatten",
    "Momentum", "MultiLayerNet", "Nesterov", "Pooling", "RMSprop", "SimpleConvNet", "col2im",
    "im2col",
]
