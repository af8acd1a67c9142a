"""The mutation catalogue: realistic bugs injected into *copies* of correct scratch components.

Each :class:`Mutant` names the component it copies (``"module:Name"``), a ``mutate`` function
that turns the correct component into the buggy copy (a subclass overriding a method, or a copy
of a method with a module-level function swapped, built at runtime: the files under
``scratch/`` are never edited), the check that must catch it (a key of :data:`CHECKS`) and the
tensor that check must name. :func:`run_mutant` runs the check twice, on the correct component
(it must PASS) and on the mutant (it must FAIL or ERROR), and records what caught it.

A mutant whose component is not installed (a module still missing) is reported as skipped.
"""

from __future__ import annotations

import copy
import importlib
import math
import re
import time
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.compare import ERROR, FAIL, PASS, TensorResult
from harness.report import LayerReport

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
KILLED, SURVIVED, SKIPPED, BROKEN = "KILLED", "SURVIVED", "SKIPPED", "BASELINE FAILS"
CRASHED = "CHECK CRASHED"  # the harness raised on the mutant instead of reporting it


# ---------------------------------------------------------------------------------------
# Building mutated copies at runtime


def sub(cls: type, **methods: Any) -> type:
    """A subclass of ``cls`` overriding ``methods`` (so the registry still finds its twin)."""
    return type(cls.__name__, (cls,), {"__module__": __name__, **methods})


def rebind(cls: type, *methods: str, **names: Any) -> type:
    """A subclass whose ``methods`` are copies of ``cls``'s, reading module-level ``names``
    (e.g. ``softmax=...``, ``im2col=...``) from the given replacements instead."""
    ns: dict[str, Any] = {}
    for m in methods:
        f = getattr(cls, m)
        g = types.FunctionType(f.__code__, {**f.__globals__, **names}, f.__name__, f.__defaults__,
                               f.__closure__)
        g.__kwdefaults__ = f.__kwdefaults__
        ns[m] = g
    return sub(cls, **ns)


def rebind_function(fn: Callable[..., Any], **names: Any) -> Callable[..., Any]:
    """A copy of function ``fn`` that reads module-level ``names`` from the replacements."""
    g = types.FunctionType(fn.__code__, {**fn.__globals__, **names}, fn.__name__, fn.__defaults__,
                           fn.__closure__)
    g.__kwdefaults__ = fn.__kwdefaults__
    return g


def resolve(target: str) -> Any:
    """``"package.module:Name"`` -> the object (``ModuleNotFoundError`` if not installed)."""
    mod, _, attr = target.partition(":")
    obj: Any = importlib.import_module(mod)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


# ---------------------------------------------------------------------------------------
# The checks a mutant can be caught by. Each takes the (correct or mutated) component and the
# mutant's options and returns a LayerReport.


def _instance(cls: type, rng: np.random.Generator, dtype: np.dtype,
              make: Callable[..., Any] | None) -> Any:
    from reference.registry import lookup

    if make is not None:
        return make(cls, rng, dtype)
    twin = lookup(cls)
    if twin is None or twin.example is None:
        raise LookupError(f"{cls.__name__}: no registered example; give the mutant make=")
    layer = twin.example(rng, dtype)
    if cls is not type(layer):
        layer = copy.copy(layer)
        layer.__class__ = cls  # the mutant is a subclass: same state, mutated methods
    return layer


def layer_check(cls: type, *, dtype: np.dtype = F64, seed: int = 0, batch: int = 5,
                input_shape: tuple[int, ...] | None = None, scale: float | None = None,
                make: Callable[..., Any] | None = None, numerical: bool = False,
                **kwargs: Any) -> LayerReport:
    """``check_layer`` on an instance of ``cls`` (a registered layer class or its mutant)."""
    from harness.check import check_layer, make_input, resolve_twin

    layer = _instance(cls, np.random.default_rng(1000 + seed), dtype, make)
    x = None
    if scale is not None:  # a magnitude the default inputs never reach (e.g. logits of 1e3)
        twin, _ = resolve_twin(layer, None, None)
        shape = input_shape or tuple(twin.input_shape(layer, batch))
        x = scale * make_input(twin, layer, shape, dtype, np.random.default_rng(seed))
    report = check_layer(layer, dtype=dtype, seed=seed, batch=batch, input_shape=input_shape, x=x,
                         numerical=numerical, **kwargs)
    if numerical:  # judged by backprop vs central differences alone, as with no torch twin
        report.results = [r for r in report.results if "backprop vs numerical" in r.tensor]
    return report


def variant_check(cls: type, *, variant: str, dtype: np.dtype = F64, seed: int = 0,
                  batch: int = 5) -> LayerReport:
    """The check suite's named setting (:class:`harness.suite.Variant`, e.g. ``"Relu (exact
    zeros)"``) on ``cls``: the setting's layer, re-classed as ``cls``, on its inputs."""
    from harness.suite import VARIANTS, variants_for

    variants_for(cls)  # loads the suite's settings
    v = next((w for w in VARIANTS if w.name == variant), None)
    if v is None:
        raise LookupError(f"no check setting named {variant!r}")
    layer = v.make(np.random.default_rng(1000 + seed), dtype)
    if cls is not type(layer):
        layer = copy.copy(layer)
        layer.__class__ = cls
    return v.check(layer, dtype, seed, batch)


def numerical_check(cls: type, **opts: Any) -> LayerReport:
    """Backprop vs central differences (float64), the check for a layer with no torch twin."""
    return layer_check(cls, numerical=True, **opts)


def net_check(cls: type, *, make: Callable[..., Any], dtype: np.dtype = F64, seed: int = 0,
              input_shape: tuple[int, ...] = (5, 12), **kwargs: Any) -> LayerReport:
    """``check_net`` on ``make(cls, seed)``: every layer in forward then backward order."""
    from harness.check import check_net

    return check_net(make(cls, seed), dtype=dtype, seed=seed, input_shape=input_shape, **kwargs)


def optimizer_check(cls: type, *, make: Callable[[type], Any], dtype: np.dtype = F64,
                    seed: int = 0, **kwargs: Any) -> LayerReport:
    """``check_optimizer``: the same parameters and gradients through ``make(cls)`` and its
    torch.optim twin for several steps; every parameter compared after every step."""
    from reference.optimizers import check_optimizer

    return check_optimizer(make(cls), dtype=dtype, seed=seed, **kwargs)


def weight_decay_check(cls: type, *, make: Callable[..., Any], seed: int = 0,
                       **kwargs: Any) -> LayerReport:
    """``check_weight_decay``: the net's gradient() and SGD steps vs the torch twin with the
    same explicit L2 term, loss, every gradient and every parameter per step."""
    from reference.optimizers import check_weight_decay

    return check_weight_decay(make(cls, seed), seed=seed, **kwargs)


def epoch_loop_schedule(iters: int, iter_per_epoch: float) -> list[int]:
    """The classic evaluation steps written as an outer loop over epochs (how a torch training
    loop is structured): epoch k starts at step k * iter_per_epoch, evaluated when that is a
    whole step (the classic ``i % iter_per_epoch == 0``; 0, 600, ..., 9600 for MNIST)."""
    steps, k = [], 0
    while k * iter_per_epoch < iters:
        if float(k * iter_per_epoch).is_integer():
            steps.append(int(k * iter_per_epoch))
        k += 1
    return steps


SCHEDULE_CASES = ((40, 4, 35), (30, 4, 40), (7, 8, 5))
"""(train size, batch, steps): 10 steps per epoch; 7.5 (the classic evaluates every second
epoch); fewer samples than a batch (1 step per epoch)."""


def schedule_check(train: Callable[..., Any], *, seed: int = 0) -> LayerReport:
    """The trainer's evaluation schedule: ``train_side_by_side`` (or its mutant) runs a tiny
    side-by-side training for each of :data:`SCHEDULE_CASES`; the steps it evaluated at are
    compared with :func:`epoch_loop_schedule`. The schedule function the trainer calls is also
    compared on the classic MNIST run (60,000 samples, batch 100, 10,000 steps: 17 evaluations)."""
    import types as _types

    import scratch

    report = LayerReport(layer="trainer schedule", dtype="int64", seed=seed)
    r = np.random.default_rng(seed)
    for n, batch, iters in SCHEDULE_CASES:
        data = _types.SimpleNamespace(x_train=r.random((n, 6)), t_train=r.integers(0, 3, n),
                                      x_test=r.random((4, 6)), t_test=r.integers(0, 3, 4))
        res = train(lambda d: scratch.TwoLayerNet(6, 4, 3, dtype=d, seed=seed), data,
                    iters=iters, batch=batch, lr=0.1, record_param_diff=False)
        report.results.append(_schedule_result(
            res.eval_steps, epoch_loop_schedule(iters, max(n / batch, 1)),
            f"evaluation steps ({n} samples, batch {batch}, {iters} steps)"))
    fn = train.__globals__["evaluation_steps"]
    report.results.append(_schedule_result(fn(10000, 600.0), epoch_loop_schedule(10000, 600.0),
                                           "evaluation steps (MNIST, batch 100, 10000 steps)"))
    return report


def _schedule_result(got: list[int], want: list[int], tensor: str) -> TensorResult:
    from harness.compare import compare

    r = compare(np.asarray(got, dtype=np.int64), np.asarray(want, dtype=np.int64),
                tensor=tensor, layer="trainer schedule", vacuous_check=False)
    if r.status != PASS:
        r.message = (f"{len(got)} evaluations at {', '.join(map(str, got[:3]))}, ... vs the "
                     f"epoch loop's {len(want)} at {', '.join(map(str, want[:3]))}, ...")
    return r


CHECKS: dict[str, Callable[..., LayerReport]] = {
    "check_layer": layer_check,
    "numerical": numerical_check,
    "setting": variant_check,
    "check_net": net_check,
    "optimizer": optimizer_check,
    "weight_decay": weight_decay_check,
    "schedule": schedule_check,
}


# ---------------------------------------------------------------------------------------
# The catalogue


@dataclass(frozen=True)
class Mutant:
    name: str
    description: str
    target: str  # "module:Name" of the correct component this is a copy of
    mutate: Callable[[Any], Any]  # correct component -> mutated copy
    check: str  # key of CHECKS
    expect: str  # the check must name this tensor (a substring of the failing result's name)
    opts: dict[str, Any] = field(default_factory=dict)

    def original(self) -> Any:
        return resolve(self.target)


CATALOGUE: list[Mutant] = []


def mutant(name: str, description: str, target: str, mutate: Callable[[Any], Any], check: str,
           expect: str, **opts: Any) -> None:
    if any(m.name == name for m in CATALOGUE):
        raise ValueError(f"duplicate mutant name {name!r}")
    CATALOGUE.append(Mutant(name, description, target, mutate, check, expect, opts))


def square_affine(cls: type, rng: np.random.Generator, dtype: np.dtype, n: int = 8) -> Any:
    """An Affine with a square W: a transposed W has the right shape and the wrong values."""
    return cls((rng.standard_normal((n, n)) / math.sqrt(n)).astype(dtype),
               (0.1 * rng.standard_normal(n)).astype(dtype))


def softmax_1d(x: np.ndarray) -> np.ndarray:
    """The book's 1-D softmax: one max and one sum over the *whole* array."""
    e = np.exp(x - np.max(x))
    return e / np.sum(e)


def softmax_unshifted(x: np.ndarray) -> np.ndarray:
    e = np.exp(x)
    return e / np.sum(e, axis=-1, keepdims=True)


def _relu_inplace_dout(self: Any, dout: np.ndarray) -> np.ndarray:
    dout[self.mask] = 0
    return dout


def _relu_inplace_x(self: Any, x: np.ndarray) -> np.ndarray:
    self.mask = x <= 0
    x[self.mask] = 0
    return x


Grad = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # (dout, W, x) -> array


def _affine_backward(dx: Grad = lambda d, W, x: d @ W.T, dW: Grad = lambda d, W, x: x.T @ d,
                     db: Grad = lambda d, W, x: d.sum(axis=0),
                     reshape: bool = True) -> Callable[[Any, np.ndarray], np.ndarray]:
    """Affine.backward with one of its three formulas replaced by the buggy one."""
    def backward(self: Any, dout: np.ndarray) -> np.ndarray:
        W, x = self.params["W"], self.x
        out = dx(dout, W, x)
        self.grads["W"], self.grads["b"] = dW(dout, W, x), db(dout, W, x)
        return out.reshape(self.original_x_shape) if reshape else out
    return backward


def _affine_forward_f32(self: Any, x: np.ndarray) -> np.ndarray:
    self.original_x_shape = x.shape
    self.x = x.reshape(x.shape[0], -1)
    p = {k: v.astype(np.float32) for k, v in self.params.items()}
    return (self.x.astype(np.float32) @ p["W"] + p["b"]).astype(x.dtype)


def _two_layer_net(cls: type, seed: int) -> Any:
    return cls(12, 9, 6, weight_init_std=0.5, seed=seed)


def in_net(key: str, **methods: Any) -> Callable[[type], type]:
    """A net class whose layer ``key`` is a mutant (subclass of the layer with ``methods``)."""
    def mutate(net_cls: type) -> type:
        def _build_layers(self: Any) -> None:
            net_cls._build_layers(self)
            layer = self.layers[key]
            layer.__class__ = sub(type(layer), **methods)
        return sub(net_cls, _build_layers=_build_layers)
    return mutate


L = "scratch.layers:"

mutant("sigmoid-precedence", "Sigmoid backward `dout * 1.0 - out * out` (missing parentheses)",
       L + "Sigmoid", lambda C: sub(C, backward=lambda s, d: d * 1.0 - s.out * s.out),
       "check_layer", "dx")
mutant("softmax-1d-on-batch", "the 1-D softmax (one max, one sum) applied to an (N, C) batch",
       L + "SoftmaxWithLoss", lambda C: rebind(C, "forward", softmax=softmax_1d),
       "check_layer", "loss")
mutant("softmax-no-max-shift", "softmax without subtracting the row max: exp overflows at "
       "logits ~1e3", L + "SoftmaxWithLoss", lambda C: rebind(C, "forward", softmax=softmax_unshifted),
       "check_layer", "loss", scale=1e3)
mutant("relu-inplace-dout", "Relu backward zeroes the masked entries of dout in place",
       L + "Relu", lambda C: sub(C, backward=_relu_inplace_dout), "check_layer", "dout unchanged")
mutant("relu-inplace-x", "Relu forward zeroes the negative inputs in place (no x.copy())",
       L + "Relu", lambda C: sub(C, forward=_relu_inplace_x), "check_layer", "input x unchanged")
mutant("loss-grad-not-divided-by-batch", "SoftmaxWithLoss backward returns softmax - onehot, "
       "not divided by the batch size", L + "SoftmaxWithLoss",
       lambda C: sub(C, backward=lambda s, dout=1.0: C.backward(s, dout) * s.y.shape[0]),
       "check_layer", "dx")
mutant("mse-grad-mixed-reduction", "MeanSquaredError forward 0.5*sum/N, backward 2*diff/size "
       "(the torch 'mean' gradient)", L + "MeanSquaredError",
       lambda C: sub(C, backward=lambda s, dout=1.0: s.diff * (2.0 / s.diff.size)),
       "check_layer", "dx")
mutant("bias-grad-wrong-axis", "Affine db = sum(dout, axis=1): summed over features, not the "
       "batch", L + "Affine", lambda C: sub(C, backward=_affine_backward(db=lambda d, W, x: d.sum(axis=1))),
       "check_layer", "db", make=square_affine, batch=8)
mutant("transposed-dW", "Affine dW = dout.T @ x (the transpose; square W so the shape is right)",
       L + "Affine", lambda C: sub(C, backward=_affine_backward(dW=lambda d, W, x: d.T @ x)),
       "check_layer", "dW", make=square_affine)
mutant("transposed-weight-dx", "Affine dx = dout @ W instead of dout @ W.T (square W)",
       L + "Affine", lambda C: sub(C, backward=_affine_backward(dx=lambda d, W, x: d @ W)),
       "check_layer", "dx", make=square_affine)
mutant("affine-4d-no-reshape", "Affine backward returns dx as (N, C*H*W), not the 4-D input "
       "shape", L + "Affine", lambda C: sub(C, backward=_affine_backward(reshape=False)),
       "check_layer", "dx", input_shape=(5, 2, 3, 2),
       make=lambda C, rng, dt: square_affine(C, rng, dt, 12))
mutant("float32-accumulation", "Affine computes in float32 and casts back: float64 in name only",
       L + "Affine", lambda C: sub(C, forward=_affine_forward_f32), "check_layer", "out")
mutant("tanh-derivative", "Tanh backward dout * (1 - out) instead of (1 - out**2); caught "
       "without torch, by central differences", L + "Tanh",
       lambda C: sub(C, backward=lambda s, d: d * (1 - s.out)), "numerical",
       "dx backprop vs numerical")
mutant("net-relu-mask-dropped", "TwoLayerNet whose Relu backward passes dout through unmasked",
       "scratch.two_layer_net:TwoLayerNet", in_net("Relu1", backward=lambda s, d: d),
       "check_net", "Relu1(Relu).dx", make=_two_layer_net)
def _stale_gradient(self: Any, x: np.ndarray, t: np.ndarray) -> dict:
    prev = getattr(self, "_prev", None)  # returns the previous call's gradients
    self._prev = {k: v.copy() for k, v in type(self).__mro__[1].gradient(self, x, t).items()}
    return prev if prev is not None else self._prev


mutant("net-gradient-previous-call", "TwoLayerNet.gradient() returns the previous call's "
       "gradients: every layer is right on its own", "scratch.two_layer_net:TwoLayerNet",
       lambda C: sub(C, gradient=_stale_gradient), "check_net", "gradient()['W1']",
       make=_two_layer_net)
mutant("net-bias-grad-mean", "TwoLayerNet whose second Affine takes db as the batch mean",
       "scratch.two_layer_net:TwoLayerNet",
       in_net("Affine2", backward=_affine_backward(db=lambda d, W, x: d.mean(axis=0))),
       "check_net", "Affine2(Affine).db", make=_two_layer_net)


# -- BatchNormalization, Dropout ------------------------------------------------------------


def flipped(cls: type, method: str, **attrs: Callable[[Any], Any]) -> type:
    """A subclass whose ``method`` runs with attributes temporarily changed, e.g. the
    BatchNorm momentum swapped: ``flipped(C, "forward", momentum=lambda m: 1 - m)``."""
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        saved = {k: getattr(self, k) for k in attrs}
        for k, f in attrs.items():
            setattr(self, k, f(saved[k]))
        try:
            return getattr(cls, method)(self, *args, **kwargs)
        finally:
            for k, v in saved.items():
                setattr(self, k, v)
    return sub(cls, **{method: run})


def _bn(C: type, rng: np.random.Generator, dtype: np.dtype) -> Any:
    from reference.extra_layers import bn_example

    layer = bn_example(rng, dtype)
    layer.__class__ = C
    return layer


def _bn_eval_batch_stats(self: Any, x: np.ndarray, train_flg: bool = True) -> np.ndarray:
    rm, rv = self.running_mean, self.running_var  # forgets train_flg: batch statistics always
    out = type(self).__mro__[1].forward(self, x, True)
    self.running_mean, self.running_var = rm, rv
    return out


def _dropout_backward_unmasked(self: Any, dout: np.ndarray) -> np.ndarray:
    return dout.copy()


N = "scratch.normalization:"
mutant("batchnorm-running-var-unbiased", "classic BatchNorm updates running_var with the "
       "unbiased N/(N-1) variance (torch's rule) while configured for the biased one",
       N + "BatchNormalization",
       lambda C: flipped(C, "forward", unbiased_running_var=lambda u: not u),
       "check_layer", "running_var", make=_bn)
mutant("batchnorm-momentum-swap", "running = (1 - m) * running + m * batch (torch's "
       "momentum meaning used with the classic m = 0.9)", N + "BatchNormalization",
       lambda C: flipped(C, "forward", momentum=lambda m: 1 - m), "check_layer",
       "running_mean", make=_bn)
mutant("batchnorm-eval-uses-batch-stats", "BatchNorm ignores train_flg: test time normalizes "
       "with the batch statistics", N + "BatchNormalization",
       lambda C: sub(C, forward=_bn_eval_batch_stats), "check_layer", "out", make=_bn,
       train=False)
mutant("dropout-mask-not-in-backward", "Dropout backward returns dout without the mask",
       N + "Dropout", lambda C: sub(C, backward=_dropout_backward_unmasked), "check_layer", "dx")


# -- Convolution, Pooling -------------------------------------------------------------------


def im2col_stride_rows_only(input_data: np.ndarray, filter_h: int, filter_w: int,
                            stride: int = 1, pad: int = 0, pad_value: float = 0.0) -> np.ndarray:
    """im2col that strides down the rows but steps one column at a time (the wrong stride
    along W); the number of windows is right, so only the values are wrong."""
    from scratch.convolution import conv_output_size, im2col

    N, _, H, W = input_data.shape
    oh, ow = (conv_output_size(H, filter_h, stride, pad), conv_output_size(W, filter_w, stride, pad))
    col = im2col(input_data, filter_h, filter_w, 1, pad, pad_value)
    col = col.reshape(N, H + 2 * pad - filter_h + 1, W + 2 * pad - filter_w + 1, -1)
    return col[:, ::stride][:, :oh, :ow].reshape(N * oh * ow, -1)


def _conv_dW_untransposed(self: Any, dout: np.ndarray) -> np.ndarray:
    C = type(self).__mro__[1]
    dx = C.backward(self, dout)
    FN, c, FH, FW = self.W.shape
    d2 = dout.transpose(0, 2, 3, 1).reshape(-1, FN)
    self.grads["W"] = (self.col.T @ d2).reshape(FN, c, FH, FW)  # the missing .T before reshape
    return dx


def _pool_grad_to_first(self: Any, dout: np.ndarray) -> np.ndarray:
    arg_max, self.arg_max = self.arg_max, np.zeros_like(self.arg_max)  # window's first element
    try:
        return type(self).__mro__[1].backward(self, dout)
    finally:
        self.arg_max = arg_max


def _conv(C: type, rng: np.random.Generator, dtype: np.dtype) -> Any:
    from reference.extra_layers import conv_example

    layer = conv_example(rng, dtype, fn=5, c=2, stride=2, pad=1)
    layer.__class__ = C
    return layer


V = "scratch.convolution:"
mutant("im2col-wrong-stride", "im2col strides the rows but not the columns (stride 2 conv)",
       V + "Convolution", lambda C: rebind(C, "forward", im2col=im2col_stride_rows_only),
       "check_layer", "out", make=_conv, input_shape=(5, 2, 8, 7))
mutant("conv-dW-untransposed", "Convolution dW = (col.T @ dout).reshape(W.shape) without the "
       "transpose: right size, wrong layout", V + "Convolution",
       lambda C: sub(C, backward=_conv_dW_untransposed), "check_layer", "dW", make=_conv,
       input_shape=(5, 2, 8, 7))
mutant("maxpool-grad-wrong-element", "max-pool backward routes dout to each window's first "
       "element instead of its maximum", V + "Pooling",
       lambda C: sub(C, backward=_pool_grad_to_first), "check_layer", "dx",
       make=lambda C, rng, dt: C(2, 2, stride=2))


# -- Bugs only the suite's other settings show (harness.suite.Variant) ----------------------


def _relu_mask_lt(self: Any, x: np.ndarray) -> np.ndarray:
    self.mask = x < 0  # `dout[x < 0] = 0`: the gradient passes at exactly 0
    return np.maximum(x, 0)


def softmax_batch_max(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())  # the whole batch's max: rows far below it underflow to 0/0
    return e / e.sum(axis=-1, keepdims=True)


def _tanh_naive(self: Any, x: np.ndarray) -> np.ndarray:
    a, b = np.exp(x), np.exp(-x)
    self.out = (a - b) / (a + b)  # inf / inf for |x| > ~710
    return self.out


def conv_output_size_fh(size: int, filter_size: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - filter_size) // stride + 1


def _conv_forward_out_w_fh(self: Any, x: np.ndarray) -> np.ndarray:
    from scratch.convolution import im2col

    FN, _, FH, FW = self.W.shape
    N, _, H, W = x.shape
    out_h = conv_output_size_fh(H, FH, self.stride, self.pad)
    out_w = conv_output_size_fh(W, FH, self.stride, self.pad)  # FH where FW belongs
    self.x_shape = x.shape
    self.col = im2col(x, FH, FW, self.stride, self.pad)
    self.col_W = self.W.reshape(FN, -1).T
    out = self.col @ self.col_W + self.b
    return np.ascontiguousarray(out.reshape(N, out_h, out_w, FN).transpose(0, 3, 1, 2))


def _pool_backward_offset_pool_h(self: Any, dout: np.ndarray) -> np.ndarray:
    N, C, H, W = self.x_shape
    s, p = self.stride, self.pad
    oh, ow = self.arg_max.shape[2:]
    dx = np.zeros((N, C, H + 2 * p, W + 2 * p), dtype=dout.dtype)
    for k in range(self.pool_h * self.pool_w):
        y, x = divmod(k, self.pool_h)  # pool_h where pool_w belongs
        dx[:, :, y:y + s * oh:s, x:x + s * ow:s] += dout * (self.arg_max == k)
    return dx[:, :, p:H + p, p:W + p]


def _pool_backward_every_tie(self: Any, dout: np.ndarray) -> np.ndarray:
    from scratch.convolution import windows

    N, C, H, W = self.x_shape
    s, p = self.stride, self.pad
    win = windows(self._x, self.pool_h, self.pool_w, s, p, pad_value=-np.inf)
    top = win.max(axis=(4, 5))
    oh, ow = top.shape[2:]
    dx = np.zeros((N, C, H + 2 * p, W + 2 * p), dtype=dout.dtype)
    for y in range(self.pool_h):
        for x in range(self.pool_w):  # every element equal to the max gets the gradient
            dx[:, :, y:y + s * oh:s, x:x + s * ow:s] += dout * (win[..., y, x] == top)
    return dx[:, :, p:H + p, p:W + p]


def _pool_keeping_x(C: type) -> type:
    def forward(self: Any, x: np.ndarray) -> np.ndarray:
        self._x = x
        return C.forward(self, x)
    return sub(C, forward=forward, backward=_pool_backward_every_tie)


mutant("relu-mask-lt-zero", "Relu mask `x < 0` (the book's variant `dout[x < 0] = 0`): the "
       "gradient passes at exactly 0, where torch's is 0", L + "Relu",
       lambda C: sub(C, forward=_relu_mask_lt), "setting", "dx", variant="Relu (exact zeros)")
mutant("softmax-batch-max", "softmax shifted by the batch's max, not each row's: rows far "
       "below it underflow to 0/0", L + "SoftmaxWithLoss",
       lambda C: rebind(C, "forward", softmax=softmax_batch_max), "setting", "loss",
       variant="SoftmaxWithLoss (logits in the hundreds)")
mutant("tanh-naive-exp", "Tanh as (e^x - e^-x) / (e^x + e^-x): NaN for large inputs (float32: "
       "from |x| ~ 89)", L + "Tanh", lambda C: sub(C, forward=_tanh_naive), "setting", "out",
       variant="Tanh (large inputs)", dtype=F32)
mutant("conv-out-w-from-fh", "Convolution sizes out_w with FH instead of FW: invisible for "
       "square kernels", V + "Convolution", lambda C: sub(C, forward=_conv_forward_out_w_fh),
       "setting", "forward", variant="Convolution (2x3 kernel, stride 1)")
mutant("maxpool-offset-pool-h", "max-pool backward decodes the window offset with pool_h "
       "instead of pool_w: invisible for square windows", V + "Pooling",
       lambda C: sub(C, backward=_pool_backward_offset_pool_h), "setting", "backward",
       variant="Pooling (2x3 window, stride 1)")
def _dropout_keep_reversed(self: Any, shape: tuple[int, ...]) -> np.ndarray:
    return self.rng.random(shape) < self.dropout_ratio  # keeps p instead of 1 - p


mutant("dropout-keep-test-reversed", "Dropout draws its keep-mask as rand < p: drops 1 - p; "
       "invisible to a torch comparison, where both sides use one injected mask",
       "scratch.normalization:Dropout", lambda C: sub(C, draw_mask=_dropout_keep_reversed),
       "setting", "dropped fraction", variant="Dropout (own mask: drop rate and scale)")
mutant("maxpool-grad-every-tie", "max-pool backward sends dout to every element equal to the "
       "window's maximum (torch: the first)", V + "Pooling", _pool_keeping_x, "setting", "dx",
       variant="Pooling (3x3/2, pad 1, ties)")


# -- Optimizers, weight decay ---------------------------------------------------------------


def _momentum_sign_error(self: Any, params: dict, grads: dict) -> None:
    v = self._state(self.v, params)
    for k, p in params.items():
        v[k] = self.momentum * v[k] + self.lr * grads[k]  # + where the book has -
        p += v[k]


def _adam_no_bias_correction(self: Any, params: dict, grads: dict) -> None:
    m, v = self._state(self.m, params), self._state(self.v, params)
    self.iter += 1
    for k, p in params.items():
        g = grads[k]
        m[k] += (1 - self.beta1) * (g - m[k])
        v[k] += (1 - self.beta2) * (g * g - v[k])
        p -= self.lr * m[k] / (np.sqrt(v[k]) + self.eps)  # lr, not lr_t


def _adagrad_eps_in_sqrt(self: Any, params: dict, grads: dict) -> None:
    h = self._state(self.h, params)
    for k, p in params.items():
        h[k] += grads[k] * grads[k]
        p -= self.lr * grads[k] / np.sqrt(h[k] + self.eps)  # eps inside the root


def _rmsprop_decay_swapped(self: Any, params: dict, grads: dict) -> None:
    h = self._state(self.h, params)
    for k, p in params.items():
        h[k] = (1 - self.decay_rate) * h[k] + self.decay_rate * grads[k] * grads[k]
        p -= self.lr * grads[k] / (np.sqrt(h[k]) + self.eps)


def _decay_biases_too(self: Any, x: np.ndarray, t: np.ndarray) -> dict:
    grads = type(self).__mro__[1].gradient(self, x, t)
    for k in grads:
        if k.startswith("b"):
            grads[k] = grads[k] + self.weight_decay_lambda * self.params[k]
    return grads


def _decayed_net(C: type, seed: int) -> Any:
    return C(6, [5, 4], 3, weight_init_std="he", weight_decay_lambda=0.1, seed=seed)


O = "scratch.optimizers:"
def _momentum_reset_every_10(self: Any, params: dict, grads: dict) -> None:
    self.calls = getattr(self, "calls", 0) + 1
    if self.calls % 10 == 0:
        self.v = {}  # a "restart" copied from another recipe
    type(self).__mro__[1].update(self, params, grads)


def _lr_cached_on_first_call(self: Any, params: dict, grads: dict) -> None:
    self.lr0 = getattr(self, "lr0", self.lr)
    lr, self.lr = self.lr, self.lr0  # a schedule's later lr is ignored
    try:
        type(self).__mro__[1].update(self, params, grads)
    finally:
        self.lr = lr


mutant("momentum-velocity-reset", "Momentum's velocity silently reset every 10 updates: right "
       "for the first 9 steps", O + "Momentum", lambda C: sub(C, update=_momentum_reset_every_10),
       "optimizer", "W1", make=lambda C: C(lr=0.1, momentum=0.9))
mutant("lr-cached-on-first-call", "the optimizer keeps the lr of its first call: a schedule's "
       "change is ignored", O + "Adam", lambda C: sub(C, update=_lr_cached_on_first_call),
       "optimizer", "W1", make=lambda C: C(lr=0.01))
mutant("momentum-sign-error", "Momentum v = m*v + lr*g; p += v (the gradient's sign flipped)",
       O + "Momentum", lambda C: sub(C, update=_momentum_sign_error), "optimizer", "W1",
       make=lambda C: C(lr=0.1, momentum=0.9))
mutant("adam-no-bias-correction", "Adam steps with lr instead of "
       "lr * sqrt(1 - beta2**t) / (1 - beta1**t)", O + "Adam",
       lambda C: sub(C, update=_adam_no_bias_correction), "optimizer", "W1",
       make=lambda C: C(lr=0.01))
mutant("adagrad-eps-inside-sqrt", "AdaGrad divides by sqrt(h + eps), not sqrt(h) + eps",
       O + "AdaGrad", lambda C: sub(C, update=_adagrad_eps_in_sqrt), "optimizer", "W1",
       make=lambda C: C(lr=0.1), grad_scale=1e-3)
mutant("rmsprop-decay-swapped", "RMSprop h = (1 - rho) * h + rho * g*g (decay and rate "
       "swapped)", O + "RMSprop", lambda C: sub(C, update=_rmsprop_decay_swapped), "optimizer",
       "W1", make=lambda C: C(lr=0.01))
mutant("weight-decay-on-biases", "MultiLayerNet.gradient adds lambda * b to the bias "
       "gradients too (the classic decays weights only)", "scratch.multi_layer_net:MultiLayerNet",
       lambda C: sub(C, gradient=_decay_biases_too), "weight_decay", "db", make=_decayed_net)


# -- The trainer's evaluation schedule ---------------------------------------------------------


def evaluation_steps_off_by_one(iters: int, iter_per_epoch: float) -> list[int]:
    """Evaluate after the last step of each epoch, ``(i + 1) % iter_per_epoch == 0``: 16
    evaluations for 10,000 MNIST steps instead of the classic 17, none before training."""
    return [i for i in range(iters) if (i + 1) % iter_per_epoch == 0]


mutant("epoch-schedule-off-by-one", "the trainer evaluates when (i + 1) % iter_per_epoch == 0 "
       "instead of i % iter_per_epoch == 0", "harness.train:train_side_by_side",
       lambda f: rebind_function(f, evaluation_steps=evaluation_steps_off_by_one), "schedule",
       "evaluation steps")


# ---------------------------------------------------------------------------------------
# Running


@dataclass
class Outcome:
    mutant: Mutant
    status: str  # KILLED, SURVIVED, SKIPPED, BASELINE FAILS or CHECK CRASHED
    caught_by: str = ""
    difference: str = ""
    expected_hit: bool = False
    detail: str = ""
    seconds: float = 0.0
    report: LayerReport | None = None
    baseline: LayerReport | None = None

    def row(self) -> dict[str, Any]:
        m = self.mutant
        return {"mutant": m.name, "component": m.target, "check": m.check, "status": self.status,
                "caught_by": self.caught_by, "difference": self.difference,
                "expected": m.expect, "expected_hit": self.expected_hit, "detail": self.detail}


def describe_difference(r: TensorResult) -> str:
    """The size and place of a failing difference, in one short phrase."""
    if r.status == ERROR:
        return r.message.split(" (at ")[0][:100]
    if "unchanged" in r.tensor:
        return f"{r.mismatched} element(s) modified in place, first at {r.worst_index}"
    # An optimizer's "first differs after step 7 ..." is a measured difference, whatever its
    # explanation mentions (lr_schedule=None)
    step = re.search(r"first differs after (?:training )?step (\d+)", r.message)
    if r.message and (not r.total or (not step and any(
            w in r.message for w in ("mismatch", "None", "evaluations")))):
        return r.message[:100]
    if not math.isfinite(r.max_abs):
        return "NaN/Inf where torch is finite" if "scratch" in r.message else r.message[:100]
    ratio = r.extra.get("worst_ratio", float("nan"))
    where = f" at {r.max_abs_index}" if r.max_abs_index else ""
    text = f"max abs {r.max_abs:.2e}{where}" + (  # a statistical check has no ratio
        f", {ratio:.2g}x tolerance" if isinstance(ratio, (int, float)) and math.isfinite(ratio) else "")
    return text + (f", from step {step.group(1)}" if step else "")


def first_failure(report: LayerReport) -> TensorResult | None:
    return next((r for r in report.results if r.status in (FAIL, ERROR)), None)


def run_mutant(m: Mutant) -> Outcome:
    """Check the correct component (must PASS), then the mutant (must FAIL or ERROR)."""
    t0 = time.perf_counter()
    try:
        original = m.original()
    except (ModuleNotFoundError, AttributeError) as exc:
        return Outcome(m, SKIPPED, detail=f"{m.target} not available: {exc}")
    from harness.check import CheckError

    check = CHECKS[m.check]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            baseline = check(original, **m.opts)
        except Exception as exc:  # the check cannot run on the correct component
            return Outcome(m, BROKEN, detail=f"the check on the correct {m.target} raised "
                           f"{type(exc).__name__}: {exc}", seconds=time.perf_counter() - t0)
        try:
            report = check(m.mutate(original), **m.opts)
        except CheckError as exc:  # the harness refused the mutant: caught, with a message
            return Outcome(m, KILLED, caught_by=f"{m.check}: CheckError", difference=str(exc)[:100],
                           expected_hit=m.expect in str(exc), baseline=baseline,
                           seconds=time.perf_counter() - t0)
        except Exception as exc:
            return Outcome(m, CRASHED, detail=f"the check crashed on the mutant: "
                           f"{type(exc).__name__}: {exc}", baseline=baseline,
                           seconds=time.perf_counter() - t0)
    out = Outcome(m, KILLED, report=report, baseline=baseline)
    if baseline.status != PASS:
        bad = baseline.first_divergence
        out.status = BROKEN
        out.detail = f"the correct {m.target} is {baseline.status}: {bad.name if bad else ''}"
    hit = first_failure(report)
    if hit is None:
        out.status = SURVIVED if out.status == KILLED else out.status
        out.caught_by = "-"
        out.difference = f"all {len(report.results)} tensors {report.status}"
    else:
        out.caught_by = f"{m.check}: {hit.name}"
        out.difference = describe_difference(hit)
        out.expected_hit = m.expect in hit.name
        if not out.expected_hit:
            out.detail = f"expected {m.expect!r} to catch it, first failure was {hit.name}"
    out.seconds = time.perf_counter() - t0
    return out


def select(patterns: list[str] | None = None) -> list[Mutant]:
    import fnmatch

    if not patterns:
        return list(CATALOGUE)
    return [m for m in CATALOGUE if any(fnmatch.fnmatch(m.name, p) for p in patterns)]


def run_all(patterns: list[str] | None = None) -> list[Outcome]:
    return [run_mutant(m) for m in select(patterns)]
