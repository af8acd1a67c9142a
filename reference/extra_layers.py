"""PyTorch twins of the classic BatchNormalization, Dropout, Convolution, Pooling and Flatten.

Each twin is built *from the scratch layer's settings*, so a layer with classic conventions is
checked against a torch module with the same conventions, and a layer switched to torch's
conventions against torch's own code path. docs/conventions.md lists every difference and the
switch that aligns it; :data:`CONVENTIONS` holds the same table as data.

* BatchNormalization -> :class:`TwinBatchNorm`, torch's ``_BatchNorm`` (the code of
  ``nn.BatchNorm1d/2d``) for input of any rank, with two switches: ``per_activation``
  (flatten to (N, C*H*W) first, the classic 4-D behaviour) and ``biased_running_var``
  (classic running-variance update). The output and all gradients always come from torch's
  batch-norm kernel, except for one value per feature (batch 1), where torch refuses and the
  twin writes the same formula out in torch ops (everything is then exactly 0 but ``beta``:
  the harness reports VACUOUS).
* Dropout -> :class:`MaskedDropout` (one injected mask, classic or inverted scaling), or the
  real ``nn.Dropout``: ``prepare`` pins torch's RNG for that module and reads its mask back, so
  both sides drop the same units.
* Convolution -> ``nn.Conv2d`` (same weight layout, cross-correlation, zero padding).
* Pooling -> ``nn.MaxPool2d`` (torch allows ``padding <= kernel / 2``); inputs are distinct
  values so that no window has a tie.
* Flatten -> ``nn.Flatten``.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from reference.registry import register
from scratch.convolution import Convolution, Flatten, Pooling
from scratch.normalization import BatchNormalization, Dropout

# ---------------------------------------------------------------------------------------
# Torch modules


class TwinBatchNorm(_BatchNorm):
    """torch's batch norm over dim 1 for 2-D to 5-D input, with the classic switches.

    * ``momentum`` is torch's (the fraction of the batch statistic mixed in: classic 0.9 is
      0.1 here).
    * ``per_activation=True``: (N, C, H, W) is flattened to (N, C*H*W) first, so every
      activation is a feature (the classic layer on 4-D input); ``False``: per channel, as
      ``nn.BatchNorm2d``.
    * ``biased_running_var=True``: the running variance is updated with the biased batch
      variance (the classic rule) instead of torch's unbiased one. The output and its
      gradients still come from torch's kernel (``torch.batch_norm`` with batch statistics);
      only the buffer update is written out. ``False``: ``nn.BatchNorm``'s own forward.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, *,
                 per_activation: bool = False, biased_running_var: bool = False) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=True,
                         track_running_stats=True)
        self.per_activation = per_activation
        self.biased_running_var = biased_running_var

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input (N, C, ...), got {input.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        if self.per_activation:
            x = x.reshape(shape[0], -1)
        self._check_input_dim(x)
        if self.training and self.biased_running_var:
            out = self._forward_classic_stats(x)
        else:
            out = super().forward(x)
        return out.reshape(shape)

    def _forward_classic_stats(self, x: torch.Tensor) -> torch.Tensor:
        dims = [0, *range(2, x.dim())]
        per_feature = x.numel() // x.shape[1]
        view = [1, -1] + [1] * (x.dim() - 2)
        if per_feature > 1:
            out = torch.batch_norm(x, self.weight, self.bias, None, None, True, 0.0, self.eps,
                                   False)
        else:  # torch's kernel refuses one value per feature: the same formula in torch ops
            mean = x.mean(dims, keepdim=True)
            var = x.var(dims, unbiased=False, keepdim=True)
            out = (x - mean) / torch.sqrt(var + self.eps) * self.weight.view(view) \
                + self.bias.view(view)
        with torch.no_grad():
            m = self.momentum
            mean, var = x.mean(dims), x.var(dims, unbiased=False)
            self.running_mean.copy_((1 - m) * self.running_mean + m * mean)
            self.running_var.copy_((1 - m) * self.running_var + m * var)
            self.num_batches_tracked += 1
        return out


class MaskedDropout(nn.Module):
    """Dropout with an injected keep-mask (True = keep): the same units as the scratch layer.

    ``scale="inverted"`` is ``nn.Dropout``: ``x * mask / (1 - p)`` in training, ``x`` in eval.
    ``scale="classic"``: ``x * mask`` in training, ``x * (1 - p)`` in eval.
    """

    def __init__(self, p: float = 0.5, scale: str = "inverted",
                 mask: np.ndarray | None = None) -> None:
        super().__init__()
        self.p, self.scale = float(p), scale
        self.mask: np.ndarray | None = None if mask is None else np.asarray(mask, dtype=bool)

    def set_mask(self, mask: np.ndarray) -> None:
        self.mask = np.asarray(mask, dtype=bool).copy()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x * (1.0 - self.p) if self.scale == "classic" else x
        if self.mask is None:
            raise RuntimeError("MaskedDropout has no mask: set_mask() it (the twin's prepare "
                               "hook does) before a training forward")
        if tuple(self.mask.shape) != tuple(x.shape):
            raise RuntimeError(f"MaskedDropout mask {self.mask.shape} does not fit input "
                               f"{tuple(x.shape)}")
        keep = torch.from_numpy(self.mask).to(x.dtype)
        if self.scale == "inverted":
            keep = keep / (1.0 - self.p)  # what nn.Dropout computes: noise.div_(1 - p)
        return x * keep

    def extra_repr(self) -> str:
        return f"p={self.p}, scale={self.scale!r}"


def pin_torch_dropout(module: nn.Dropout, x: np.ndarray, seed: int) -> np.ndarray:
    """Make ``module`` (a stock ``nn.Dropout``) draw its mask from a fixed seed on every call,
    and return that mask for an input like ``x``.

    The module's forward runs inside ``torch.random.fork_rng`` after ``manual_seed(seed)``:
    the global RNG is untouched and every call draws the same mask. The mask is read back by
    running the module once on ones.
    """
    cls_forward = type(module).forward

    def pinned(inp: torch.Tensor) -> torch.Tensor:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return cls_forward(module, inp)

    module.forward = pinned  # type: ignore[method-assign]
    with torch.no_grad():
        probe = pinned(torch.ones(x.shape, dtype=torch.from_numpy(np.asarray(x)).dtype))
    return (probe != 0).numpy() if module.training else np.ones(x.shape, dtype=bool)


# ---------------------------------------------------------------------------------------
# Factories and hooks


def batchnorm_factory(layer: BatchNormalization) -> TwinBatchNorm:
    """The torch module with the scratch layer's settings and current running statistics."""
    mod = TwinBatchNorm(layer.gamma.size, eps=layer.eps, momentum=1.0 - layer.momentum,
                        per_activation=layer.mode == "classic",
                        biased_running_var=not layer.unbiased_running_var)
    # Cast before copying: float64 running statistics must not pass through float32 buffers.
    mod = mod.to(torch.float64 if np.asarray(layer.gamma).dtype == np.float64 else torch.float32)
    with torch.no_grad():
        mod.running_mean.copy_(torch.from_numpy(np.ascontiguousarray(layer.running_mean)))
        mod.running_var.copy_(torch.from_numpy(np.ascontiguousarray(layer.running_var)))
    return mod


def batchnorm_input_shape(layer: BatchNormalization, n: int) -> tuple[int, ...]:
    """(n, D) for the classic mode (4-D input flattens to this anyway); (n, C, 3, 3) per
    channel. ``n`` is honoured: a batch of 1 is a vacuous check and is reported so."""
    if layer.mode == "per_channel":
        return (n, layer.gamma.size, 3, 3)
    return (n, layer.gamma.size)


def dropout_prepare(layer: Dropout, module: nn.Module | None, x: np.ndarray,
                    rng: np.random.Generator) -> None:
    """One mask for both sides: drawn from ``rng`` (``rand > p``), or, for a stock
    ``nn.Dropout``, the one torch draws from a pinned seed. ``module`` is None when the
    numerical gradient check freezes the scratch mask alone."""
    if isinstance(module, nn.Dropout):
        mask = pin_torch_dropout(module, x, int(rng.integers(0, 2**31 - 1)))
    else:
        mask = rng.random(np.shape(x)) > layer.dropout_ratio
        if isinstance(module, MaskedDropout):
            module.set_mask(mask)
    layer.set_mask(mask)


def distinct_values(layer: Any, shape: tuple[int, ...], dtype: np.dtype,
                    rng: np.random.Generator) -> np.ndarray:
    """A random permutation of evenly spaced values with unit variance: no two are equal, so
    no pooling window has a tie and a central difference (h=1e-5) never reorders a window."""
    size = math.prod(shape)
    spacing = 2.0 * math.sqrt(3.0) / size
    vals = (rng.permutation(size) - (size - 1) / 2.0) * spacing
    return vals.reshape(shape).astype(dtype)


def bn_example(rng: np.random.Generator, dtype: np.dtype, features: int = 6, mode: str = "classic",
               stats: bool = True, **kw: Any) -> BatchNormalization:
    gamma = (1.0 + 0.3 * rng.standard_normal(features)).astype(dtype)
    beta = (0.2 * rng.standard_normal(features)).astype(dtype)
    layer = BatchNormalization(gamma, beta, mode=mode, **kw)
    if stats:  # running statistics that are not the initial ones
        layer.running_mean = (0.5 * rng.standard_normal(features)).astype(dtype)
        layer.running_var = (0.5 + rng.random(features)).astype(dtype)
    return layer


def conv_example(rng: np.random.Generator, dtype: np.dtype, fn: int = 4, c: int = 3, fh: int = 3,
                 fw: int = 3, stride: int = 1, pad: int = 0) -> Convolution:
    W = (rng.standard_normal((fn, c, fh, fw)) / math.sqrt(c * fh * fw)).astype(dtype)
    b = (0.1 * rng.standard_normal(fn)).astype(dtype)
    return Convolution(W, b, stride, pad)


def layer_settings(layer: Any, *names: str) -> list[Any]:
    """The layer's attributes ``names`` (``stride``, ``pad``, ...), which the twin is built
    from; a layer that keeps one under another name gets an error naming every one the twin
    reads (not a bare AttributeError on the first)."""
    missing = [n for n in names if not hasattr(layer, n)]
    if missing:
        cls = type(layer).__name__
        raise AttributeError(
            f"the twin is built from the layer's attributes {', '.join(names)} (the book's "
            f"names); {cls} has no {', '.join(missing)}: keep the settings as "
            f"{', '.join(f'self.{n}' for n in missing)}, or register {cls} with a twin of its own")
    return [getattr(layer, n) for n in names]


def window_input_size(kernel: int, stride: int, pad: int, positions: int,
                      remainder: bool = False) -> int:
    """An input size with ``positions`` window positions of a ``kernel``-wide window (stride,
    pad), and ``stride - 1`` more, unused, when ``remainder``: a stride that does not divide."""
    return max(1, kernel - 2 * pad + (positions - 1) * stride + (stride - 1) * remainder)


def _int_setting(layer: Any, name: str, default: int) -> int:
    try:
        return int(getattr(layer, name, default))
    except (TypeError, ValueError):  # a tuple stride: the twin's factory says what it needs
        return default


def conv_input_shape(layer: Convolution, n: int) -> tuple[int, ...]:
    """(n, C, H, W) with H != W and a non-square output (4 x 5 window positions; a stride
    > 1 leaves the last columns unused): a height and width mixed up, or a stride that must
    divide, shows. C comes from the filters (3 in the suite's example: the channel order
    inside a filter row shows too)."""
    _, c, fh, fw = np.shape(layer.W)
    s, p = _int_setting(layer, "stride", 1), _int_setting(layer, "pad", 0)
    return (n, c, window_input_size(fh, s, p, 4), window_input_size(fw, s, p, 5, True))


def pool_input_shape(layer: Pooling, n: int) -> tuple[int, ...]:
    """(n, 2, H, W): 2 channels, 3 x 4 windows, H != W, a stride > 1 leaving a column unused."""
    s, p = _int_setting(layer, "stride", 2), _int_setting(layer, "pad", 0)
    ph, pw = _int_setting(layer, "pool_h", 2), _int_setting(layer, "pool_w", 2)
    return (n, 2, window_input_size(ph, s, p, 3), window_input_size(pw, s, p, 4, True))


def _conv_factory(layer: Convolution) -> nn.Conv2d:
    fn, c, fh, fw = np.shape(layer.W)
    stride, pad = layer_settings(layer, "stride", "pad")
    return nn.Conv2d(c, fn, (fh, fw), stride=stride, padding=pad)


def _pool_factory(layer: Pooling) -> nn.MaxPool2d:
    pool_h, pool_w, stride, pad = layer_settings(layer, "pool_h", "pool_w", "stride", "pad")
    return nn.MaxPool2d((pool_h, pool_w), stride=stride, padding=pad)


# ---------------------------------------------------------------------------------------
# Registration

BN_CONVENTIONS = (
    "momentum: classic keeps 0.9 of the old value, torch mixes in 0.1 (twin: 1 - momentum); "
    "eps: classic 1e-6 (10e-7), torch 1e-5; running_var: classic starts at 0 and is biased, "
    "torch starts at 1 and feeds the unbiased N/(N-1) variance (switches running_var_init, "
    "unbiased_running_var); 4-D input: classic normalises per activation (BatchNorm1d on "
    "C*H*W), BatchNorm2d per channel (mode='per_channel'). torch_defaults() aligns all."
)

register(
    BatchNormalization,
    batchnorm_factory,
    {"gamma": "weight", "beta": "bias"},
    buffer_map={"running_mean": "running_mean", "running_var": "running_var"},
    input_shape=batchnorm_input_shape,
    example=None,  # the suite's cases below use batches >= 3 (batch 1 is vacuous)
    conventions=BN_CONVENTIONS,
)
register(
    Dropout,
    lambda layer: MaskedDropout(layer.dropout_ratio, layer.scale, layer.fixed_mask),
    input_shape=lambda layer, n: (n, 16),
    example=lambda rng, dtype: Dropout(0.5),
    prepare=dropout_prepare,
    conventions=(
        "classic scales by (1 - p) at test time, nn.Dropout by 1/(1 - p) in training "
        "(scale='inverted'); masks come from different RNGs: prepare injects one mask into "
        "both sides (for nn.Dropout itself, by pinning its seed and reading the mask back)."
    ),
)
register(
    Convolution,
    _conv_factory,
    {"W": "weight", "b": "bias"},
    input_shape=conv_input_shape,
    example=conv_example,
    conventions="none: same (FN, C, FH, FW) layout, cross-correlation and zero padding.",
)
register(
    Pooling,
    _pool_factory,
    input_shape=pool_input_shape,
    example=lambda rng, dtype: Pooling(2, 2, stride=2),
    make_input=distinct_values,
    conventions=(
        "classic pooling with pad > 0 is broken (output size ignores pad, zero padding); "
        "the scratch Pooling pads with -inf and sizes the output like nn.MaxPool2d."
    ),
)
register(
    Flatten,
    lambda layer: nn.Flatten(),
    input_shape=lambda layer, n: (n, 2, 3, 3),
    example=lambda rng, dtype: Flatten(),
    conventions="none.",
)


# ---------------------------------------------------------------------------------------
# The conventions table (docs/conventions.md has the same rows with numbers)

CONVENTIONS: list[dict[str, str]] = [
    {"component": "BatchNormalization", "twin": "TwinBatchNorm (nn.BatchNorm1d/2d code)",
     "differs": "momentum 0.9 (keep) vs 0.1 (mix in)", "switch": "momentum (twin: 1 - momentum)"},
    {"component": "BatchNormalization", "twin": "TwinBatchNorm",
     "differs": "eps 1e-6 (10e-7) vs 1e-5", "switch": "eps"},
    {"component": "BatchNormalization", "twin": "TwinBatchNorm",
     "differs": "running_var starts at 0 vs 1", "switch": "running_var_init"},
    {"component": "BatchNormalization", "twin": "TwinBatchNorm(biased_running_var)",
     "differs": "running_var biased vs unbiased N/(N-1)", "switch": "unbiased_running_var"},
    {"component": "BatchNormalization", "twin": "TwinBatchNorm(per_activation)",
     "differs": "4-D: per activation (C*H*W) vs per channel (C)", "switch": "mode"},
    {"component": "Dropout", "twin": "MaskedDropout / nn.Dropout",
     "differs": "x*(1-p) at test time vs x/(1-p) in training", "switch": "scale"},
    {"component": "Dropout", "twin": "MaskedDropout / nn.Dropout",
     "differs": "masks from different RNGs", "switch": "set_mask (twin prepare hook)"},
    {"component": "Convolution", "twin": "nn.Conv2d", "differs": "none", "switch": "-"},
    {"component": "Pooling", "twin": "nn.MaxPool2d",
     "differs": "classic pad > 0 broken; here fixed", "switch": "-"},
    {"component": "Flatten", "twin": "nn.Flatten", "differs": "none", "switch": "-"},
    {"component": "Momentum", "twin": "optim.SGD(momentum, dampening=0)",
     "differs": "lr folded into the velocity (diverges when lr changes)", "switch": "form"},
    {"component": "Nesterov", "twin": "optim.SGD(momentum, nesterov=True)",
     "differs": "book code uses the updated velocity; lr folded in", "switch": "form"},
    {"component": "AdaGrad", "twin": "optim.Adagrad", "differs": "eps 1e-7 vs 1e-10",
     "switch": "eps (twin: eps=1e-7)"},
    {"component": "RMSprop", "twin": "optim.RMSprop", "differs": "eps 1e-7 vs 1e-8; decay_rate = alpha",
     "switch": "eps, decay_rate"},
    {"component": "Adam", "twin": "optim.Adam", "differs": "eps added to uncorrected sqrt(v)",
     "switch": "twin eps_t = eps / sqrt(1 - beta2**t) per step"},
    {"component": "MultiLayerNet", "twin": "TorchNet + explicit L2",
     "differs": "weight decay: 0.5*lambda*sum W^2 in the loss, weights only vs SGD(weight_decay)",
     "switch": "weight_decay_lambda / explicit L2 term"},
]


# ---------------------------------------------------------------------------------------
# A multi-step check of the running statistics from each side's own initial state


def check_running_stats(layer: BatchNormalization, module: nn.Module | None = None, *,
                        steps: int = 4, dtype: Any = np.float64, seed: int = 0, batch: int = 4,
                        input_shape: tuple[int, ...] | None = None, name: str | None = None):
    """Run ``steps`` training forwards on both sides from *their own* initial buffers (the
    harness's ``check_layer`` copies the scratch buffers into torch first; this does not),
    then one test-time forward. Compared: ``running_mean`` and ``running_var`` after every
    step (stacked, shape (steps, D)) and the test-time ``out (eval)``.

    ``module`` defaults to the twin built from the layer (aligned by construction); pass a
    stock ``nn.BatchNorm1d/2d`` to see which conventions differ.
    """
    from harness.check import TORCH_DTYPE, as_float_dtype, copy_layer
    from harness.compare import compare
    from harness.report import LayerReport

    dtype = as_float_dtype(dtype)
    name = name or "BatchNormalization (running stats)"
    work = copy_layer(layer, dtype)
    work.running_mean = np.asarray(work.running_mean).astype(dtype)
    work.running_var = np.asarray(work.running_var).astype(dtype)
    mod = batchnorm_factory(work) if module is None else copy.deepcopy(module)
    mod = mod.to(TORCH_DTYPE[dtype])
    with torch.no_grad():
        mod.weight.copy_(torch.from_numpy(work.gamma.copy()))
        mod.bias.copy_(torch.from_numpy(work.beta.copy()))
    shape = tuple(input_shape or batchnorm_input_shape(work, batch))
    rng = np.random.default_rng(seed)
    means, vars_, t_means, t_vars = [], [], [], []
    for _ in range(steps):
        x = (1.5 * rng.standard_normal(shape) + 0.5).astype(dtype)
        work.forward(x, train_flg=True)
        mod.train(True)
        with torch.no_grad():
            mod(torch.from_numpy(x))
        means.append(np.asarray(work.running_mean))
        vars_.append(np.asarray(work.running_var))
        t_means.append(mod.running_mean.detach().numpy().copy())
        t_vars.append(mod.running_var.detach().numpy().copy())
    report = LayerReport(layer=name, dtype=dtype.name, input_shape=shape, seed=seed)
    for tensor, mine, theirs in (("running_mean", means, t_means), ("running_var", vars_, t_vars)):
        r = compare(np.stack(mine), np.stack(theirs), tensor=tensor, layer=name, dtype=dtype,
                    vacuous_check=False)
        if not r.ok and r.worst_index is not None:
            r.message = (f"first differs after training step {_first_bad_step(mine, theirs, dtype)}"
                         " (index 0 = after step 1)")
        report.results.append(r)
    x = (1.5 * rng.standard_normal(shape) + 0.5).astype(dtype)
    mod.train(False)
    with torch.no_grad():
        out_t = mod(torch.from_numpy(x))
    report.results.append(compare(work.forward(x, train_flg=False), out_t, tensor="out (eval)",
                                  layer=name, dtype=dtype))
    return report


def _first_bad_step(mine: list[np.ndarray], theirs: list[np.ndarray], dtype: np.dtype) -> int:
    from harness.compare import compare

    for i, (a, e) in enumerate(zip(mine, theirs, strict=True)):
        if not compare(a, e, tensor="", dtype=dtype, vacuous_check=False).ok:
            return i + 1
    return -1


# ---------------------------------------------------------------------------------------
# Extra cases for `nn-parity check`


def check_dropout_rate(layer: Any, dtype: np.dtype, seed: int, batch: int,
                       name: str = "Dropout") -> Any:
    """The layer's own mask generator, which no torch comparison exercises (both sides of
    ``check_layer`` use one injected mask): in training, on 20,000 ones, the fraction dropped
    must be ``dropout_ratio`` within 6 binomial standard deviations, and every kept value
    ``1`` (classic) or ``1 / (1 - p)`` (inverted)."""
    from harness.check import clone
    from harness.compare import FAIL, PASS, TensorResult
    from harness.report import LayerReport

    report = LayerReport(layer=name, dtype=dtype.name, input_shape=(400, 50), seed=seed)
    work = clone(layer, name)
    if hasattr(work, "clear_mask"):
        work.clear_mask()
    p = float(getattr(work, "dropout_ratio", 0.5))
    out = np.asarray(work.forward(np.ones((400, 50), dtype=dtype), train_flg=True))
    dropped = float(np.mean(out == 0))
    allowed = 6.0 * math.sqrt(p * (1.0 - p) / out.size)
    ok = abs(dropped - p) <= allowed
    report.results.append(TensorResult(
        layer=name, tensor="dropped fraction", status=PASS if ok else FAIL, dtype=dtype.name,
        shape=out.shape, total=1, mismatched=int(not ok), max_abs=abs(dropped - p),
        actual_at_worst=dropped, expected_at_worst=p, allowed_at_worst=allowed,
        tolerance_text=f"6 binomial standard deviations (= {allowed:.2e})",
        message="" if ok else f"the layer's own masks drop {dropped:.4f} of the inputs, "
                              f"dropout_ratio is {p:g} (a keep test the wrong way round, "
                              f"rand < p, drops 1 - p)"))
    kept = out[out != 0]
    want = 1.0 / (1.0 - p) if getattr(work, "scale", "classic") == "inverted" else 1.0
    bad = int(np.count_nonzero(~np.isclose(kept, want, rtol=1e-6)))
    report.results.append(TensorResult(
        layer=name, tensor="kept values", status=FAIL if bad else PASS, dtype=dtype.name,
        shape=kept.shape, total=int(kept.size), mismatched=bad,
        max_abs=float(np.max(np.abs(kept - want))) if kept.size else 0.0,
        tolerance_text=f"rtol=1e-6 of {want:g}",
        message=f"{bad} kept value(s) are not {want:g} (scale {getattr(work, 'scale', '?')!r})"
        if bad else ""))
    return report



def large_inputs(scale: float) -> Any:
    """An input drawer (rng, shape, dtype) -> x with values large enough to overflow a naive
    formula: half of the standard normal values times ``scale``, and the first half of the
    first row's features ``8 * scale`` above the rest (exp(320) overflows float32)."""
    def draw(r: np.random.Generator, shape: tuple[int, ...], d: np.dtype) -> np.ndarray:
        x = r.standard_normal(shape)
        x[r.random(shape) < 0.5] *= scale  # half of the values large, half moderate
        if len(shape) >= 2:
            x[0, : max(shape[1] // 2, 1)] += 8 * scale  # part of one row far above the rest
        return x.astype(d)
    return draw


def _register_cases() -> None:
    from harness.check import check_layer
    from harness.suite import Variant, add_case, add_variant
    from reference.layers import affine_example
    from scratch.layers import Affine, Relu, Sigmoid, SoftmaxWithLoss, Tanh

    def bn_variant(label: str, *, features: int = 6, mode: str = "classic", shape=None,
                   min_batch: int = 3, train: bool = True, **kw: Any) -> None:
        add_variant(Variant(
            BatchNormalization, label,
            lambda r, d: bn_example(r, d, features, mode, **kw), shape=shape,
            min_batch=min_batch,  # batch 1 is vacuous and batch 2 nearly so (docs)
            kwargs={"train": train}))

    add_variant(Variant(Affine, "4-D input", lambda r, d: affine_example(r, d, n_in=2 * 3 * 2),
                        shape=(2, 3, 2)))
    bn_variant("")  # the registration has no example=: BatchNorm needs >= 3 rows
    bn_variant("eval", train=False)
    bn_variant("4-D, per activation", features=2 * 3 * 3, shape=(2, 3, 3))
    bn_variant("4-D, per channel", features=3, mode="per_channel", shape=(3, 4, 4), min_batch=1)
    bn_variant("torch defaults, 4-D", features=3, mode="per_channel", shape=(3, 4, 4),
               min_batch=1, eps=1e-5, running_var_init=1.0, unbiased_running_var=True)

    def running_stats(dtype: np.dtype, seed: int, batch: int):
        layer = bn_example(np.random.default_rng(1000 + seed), np.dtype(dtype), stats=False)
        return check_running_stats(layer, dtype=dtype, seed=seed, batch=max(batch, 3),
                                   name="BatchNormalization (running stats, 4 steps)")

    add_case("BatchNormalization (running stats, 4 steps)", running_stats, group="layer")

    def stock_dropout_case(name: str, train: bool) -> None:
        def run(dtype: np.dtype, seed: int, batch: int, numerical: bool = False):
            return check_layer(Dropout(0.5, "inverted"), nn.Dropout(0.5), dtype=dtype, seed=seed,
                               batch=batch, train=train, name=name, numerical=numerical)

        # stock nn.Dropout in training draws a new mask at every forward pass: central
        # differences of a random function say nothing, so that case is PyTorch-only
        add_case(name, run, group="layer", numerical=not train)

    add_variant(Variant(Dropout, "eval", lambda r, d: Dropout(0.5, "classic"),
                        kwargs={"train": False}))
    add_variant(Variant(Dropout, "own mask: drop rate and scale", lambda r, d: Dropout(0.2),
                        numerical=False, check_fn=check_dropout_rate))
    stock_dropout_case("Dropout (inverted) vs nn.Dropout", True)
    stock_dropout_case("Dropout (inverted, eval) vs nn.Dropout", False)

    def conv(label: str, shape: tuple[int, ...], numerical: bool = True, **kw: Any) -> None:
        add_variant(Variant(Convolution, label, lambda r, d: conv_example(r, d, **kw), shape,
                            numerical=numerical))

    def pool(label: str, shape: tuple[int, ...], *args: int, inputs: Any = None,
             numerical: bool = True, hint: str = "", **kw: int) -> None:
        add_variant(Variant(Pooling, label, lambda r, d: Pooling(*args, **kw), shape,
                            inputs=inputs, numerical=numerical, hint=hint))

    # Inputs the registrations avoid on purpose (so that the default check is unambiguous),
    # in cases of their own: exact zeros at a ReLU (torch's gradient there is 0), ties in a
    # pooling window (torch routes the gradient to the first maximum in row-major order),
    # values large enough to overflow a naive formula.
    def with_zeros(r: np.random.Generator, shape: tuple[int, ...], d: np.dtype) -> np.ndarray:
        x = r.standard_normal(shape)
        x[r.random(shape) < 0.3] = 0.0
        return x.astype(d)

    def ties(r: np.random.Generator, shape: tuple[int, ...], d: np.dtype) -> np.ndarray:
        return r.integers(-2, 3, size=shape).astype(d)

    # numerical=False: central differences straddle the kink at 0
    add_variant(Variant(Relu, "exact zeros", lambda r, d: Relu(), (9,), inputs=with_zeros,
                        numerical=False,
                        hint="inputs with exact zeros: torch's ReLU gradient at 0 is 0 (the "
                             "mask is x <= 0); a mask x < 0 lets dout through there"))
    add_variant(Variant(Sigmoid, "large inputs", lambda r, d: Sigmoid(), (9,), inputs=large_inputs(40.0)))
    add_variant(Variant(Tanh, "large inputs", lambda r, d: Tanh(), (9,), inputs=large_inputs(40.0)))
    add_variant(Variant(SoftmaxWithLoss, "logits in the hundreds", lambda r, d: SoftmaxWithLoss(),
                        (10,), inputs=large_inputs(100.0), numerical=False))
    conv("2x3 kernel, stride 1", (2, 5, 7), fn=3, c=2, fh=2, fw=3)

    conv("stride 2, pad 1", (2, 8, 7), fn=5, c=2, stride=2, pad=1)
    conv("2x3 kernel, stride 2, pad 2", (2, 6, 9), fn=3, c=2, fh=2, fw=3, stride=2, pad=2)
    # --numerical skips this one: 2 forward passes per input element and weight (56 s); the
    # smaller Convolution cases run the same code through central differences
    conv("30 filters 5x5, 28x28", (1, 28, 28), numerical=False, fn=30, c=1, fh=5, fw=5)
    pool("3x3, stride 2, pad 1", (2, 7, 7), 3, 3, stride=2, pad=1)
    pool("3x3, stride 1, overlapping", (2, 5, 5), 3, 3, stride=1)
    pool("2x2/2 on 7x7", (3, 7, 7), 2, 2, stride=2)
    pool("2x3 window, stride 1", (2, 5, 7), 2, 3, stride=1)
    ties_hint = ("inputs with ties in a window: torch sends each window's gradient to its first "
                 "maximum in row-major order (np.argmax's choice), one element per window; a "
                 "backward that sends it to every tied maximum (x == max) fails here")
    pool("3x3/2, pad 1, ties", (2, 7, 7), 3, 3, stride=2, pad=1, inputs=ties, numerical=False,
         hint=ties_hint)
    # ties without padding too: a pooling that keeps pad at 0 (the book's cannot pad) skips
    # the padded setting above, and a backward sending a tie to every maximum must still fail
    pool("2x2/2, ties", (3, 6, 6), 2, 2, stride=2, inputs=ties, numerical=False, hint=ties_hint)

    # The nets, layer by layer (each torch twin gets the scratch layer's own input and dout).
    # tanh: with a batch of 1 a narrow ReLU layer can be dead (all zeros: VACUOUS); at least
    # 3 rows for the BatchNorm layers (batch 1 is vacuous, 2 nearly so).
    def multi_layer_net(dtype: np.dtype, seed: int, batch: int):
        from harness.check import check_net
        from scratch.multi_layer_net import MultiLayerNet

        net = MultiLayerNet(6, [10, 8], 3, activation="tanh", weight_init_std="xavier",
                            use_batchnorm=True, use_dropout=True, dropout_ratio=0.3, dtype=dtype,
                            seed=seed)
        return check_net(net, dtype=dtype, seed=seed, input_shape=(max(batch, 3), 6))

    def simple_convnet(dtype: np.dtype, seed: int, batch: int):
        from harness.check import check_net
        from scratch.simple_convnet import SimpleConvNet

        net = SimpleConvNet((1, 10, 10), {"filter_num": 4, "filter_size": 3}, hidden_size=7,
                            output_size=5, weight_init_std=0.3, dtype=dtype, seed=seed)
        return check_net(net, dtype=dtype, seed=seed, input_shape=(batch, 1, 10, 10))

    add_case("MultiLayerNet (BatchNorm, dropout), per layer", multi_layer_net, group="net")
    add_case("SimpleConvNet, per layer", simple_convnet, group="net")


_register_cases()
