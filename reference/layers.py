"""PyTorch twins of the core scratch layers, registered with :mod:`reference.registry`."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import scratch
from reference.registry import WeightSpec, register, transpose

# ---------------------------------------------------------------------------------------
# Torch modules that reproduce classic semantics where torch has no exact built-in twin.


class FlattenLinear(nn.Linear):
    """``nn.Linear`` that flattens (N, ...) input first, like the classic Affine."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.reshape(x.shape[0], -1))


class ClassicCrossEntropy(nn.Module):
    """Softmax + mean cross-entropy with the classic ``-log(p + eps)`` value.

    The value is the classic one (it saturates at ``-log(1e-7) = 16.118``; torch's
    ``cross_entropy`` keeps growing, to 40 and beyond). The gradient is exactly autograd's
    gradient of ``F.cross_entropy``, ``(softmax - onehot) / N``, which is what the classic
    backward computes: the classic code differentiates the loss *without* its eps. With
    ``eps=0`` this is ``F.cross_entropy`` itself.
    """

    def __init__(self, eps: float = 1e-7) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(1, -1) if x.dim() == 1 else x
        idx = t.argmax(dim=-1) if t.dim() == 2 else t.reshape(-1).long()
        ce = F.cross_entropy(x2, idx)
        if not self.eps:
            return ce
        with torch.no_grad():
            p = torch.softmax(x2, dim=-1).gather(1, idx.view(-1, 1)).squeeze(1)
            classic = -torch.log(p + self.eps).sum() / x2.shape[0]
        return ce + (classic - ce).detach()


class ClassicMSE(nn.Module):
    """``0.5 * sum((y - t)**2) / N`` (classic) or ``mean((y - t)**2)`` (``reduction='mean'``)."""

    def __init__(self, reduction: str = "classic") -> None:
        super().__init__()
        self.reduction = reduction

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.reduction == "mean":
            return F.mse_loss(x, t.to(x.dtype))
        n = x.shape[0] if x.dim() > 1 else 1
        return 0.5 * ((x - t.to(x.dtype)) ** 2).sum() / n


# ---------------------------------------------------------------------------------------
# Inputs that exercise every code path.


def away_from_zero(shape: tuple[int, ...], dtype: np.dtype, rng: np.random.Generator,
                   margin: float = 0.05) -> np.ndarray:
    """Normal-sized values with ``|x| >= margin``: both sides of a kink at 0, none on it.

    Signs are balanced by construction (half negative, half positive, randomly placed), so
    ReLU's both branches run at every batch size, and a central difference with step < margin
    never straddles the kink.
    """
    z = np.abs(rng.standard_normal(shape))
    signs = np.where(rng.permutation(z.size) % 2 == 0, 1.0, -1.0).reshape(shape)
    return (signs * (margin + z)).astype(dtype)


def random_labels(layer: object, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n, c = (1, x.shape[0]) if x.ndim == 1 else (x.shape[0], x.shape[-1])
    t = rng.integers(0, c, size=n)
    return t[0] if x.ndim == 1 else t


def random_targets(layer: object, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(x.shape).astype(x.dtype)


def affine_example(rng: np.random.Generator, dtype: np.dtype, n_in: int = 12, n_out: int = 7):
    W = (rng.standard_normal((n_in, n_out)) / math.sqrt(n_in)).astype(dtype)
    b = (0.1 * rng.standard_normal(n_out)).astype(dtype)
    return scratch.Affine(W, b)


def _linear_factory(layer: scratch.Affine) -> nn.Module:
    n_in, n_out = layer.params["W"].shape
    return FlattenLinear(n_in, n_out)


register(
    scratch.Affine,
    _linear_factory,
    {"W": WeightSpec("weight", transpose, transpose), "b": "bias"},
    input_shape=lambda layer, n: (n, layer.params["W"].shape[0]),
    example=affine_example,
    conventions="W is (in, out); nn.Linear.weight is (out, in): transposed on transfer.",
    name="Affine",
)
register(scratch.Relu, lambda layer: nn.ReLU(), input_shape=lambda layer, n: (n, 9),
         example=lambda rng, dtype: scratch.Relu(), make_input=lambda l, s, d, r: away_from_zero(s, d, r))
register(scratch.Sigmoid, lambda layer: nn.Sigmoid(), input_shape=lambda layer, n: (n, 9),
         example=lambda rng, dtype: scratch.Sigmoid())
register(scratch.Tanh, lambda layer: nn.Tanh(), input_shape=lambda layer, n: (n, 9),
         example=lambda rng, dtype: scratch.Tanh())
register(
    scratch.SoftmaxWithLoss,
    # a class of the user's own matched by its name may write the classic 1e-7 inline
    lambda layer: ClassicCrossEntropy(getattr(layer, "eps", scratch.functions.CLASSIC_LOG_EPS)),
    kind="loss",
    input_shape=lambda layer, n: (n, 10),
    example=lambda rng, dtype: scratch.SoftmaxWithLoss(),
    make_target=random_labels,
    exact=lambda layer: (setattr(layer, "eps", 0.0), layer)[1],
    conventions=(
        "classic loss is -log(softmax + 1e-7) (saturates at 16.118), torch's cross_entropy "
        "is exact; SoftmaxWithLoss(eps=0) matches F.cross_entropy, the twin reproduces eps."
    ),
)
register(
    scratch.MeanSquaredError,
    lambda layer: ClassicMSE(layer.reduction),
    kind="loss",
    input_shape=lambda layer, n: (n, 5),
    example=lambda rng, dtype: scratch.MeanSquaredError(),
    make_target=random_targets,
    conventions="classic is 0.5*sum/N; nn.MSELoss is mean over elements: reduction='mean'.",
)
