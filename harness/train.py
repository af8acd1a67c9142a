"""Side-by-side training: the scratch NumPy net and its PyTorch twin, step by step.

:func:`train_side_by_side` runs the classic experiment (two-layer net on MNIST, SGD, batches
sampled with replacement, accuracy every epoch) in NumPy and PyTorch at once:

* identical initial weights: the scratch net's init, copied into the torch twin
  (:func:`reference.nets.to_torch`);
* identical mini-batches: one index stream ``rng.integers(0, N, size=batch)`` per step
  (the classic ``np.random.choice(N, batch)``, with replacement), shared by both;
* the same optimizer and hyper-parameters (:func:`make_optimizer_pair`: the scratch optimizer
  and the torch optimizer that computes the same update, from ``reference.optimizers``);
* the same evaluation schedule (:func:`evaluation_steps`, the classic
  ``if i % iter_per_epoch == 0``) on all of the training and test set.

Each step records both losses (the loss of the forward pass the gradient comes from), and
optionally (``record_param_diff``) the largest difference of every gradient and every
parameter after the update. Two modes:

* ``free``: both runs evolve on their own (the curves a user plots). In float64 they stay
  within ~1e-15; in float32 rounding differences grow chaotically (measured here: ~1e-6 in
  loss over the first 1,000 steps, ~5e-3 by step 10,000).
* ``lockstep``: before each step the torch model is re-synchronised to the NumPy weights, so
  every step compares loss, gradients and update computed from identical weights. Rounding
  cannot accumulate, and a real bug shows at every step.

Divergence (:func:`analyse`):

* float64: a fixed tolerance: ``|loss diff| <= 1e-9``; gradients and parameters by
  :data:`harness.compare.DEFAULT_TOLERANCES` (``rtol=1e-9, atol=1e-10 x max|torch|``), judged
  at the element of largest absolute difference.
* float32: the rounding noise floor measured in the same run. Float64 *shadows* of both
  sides (a float64 scratch net and a float64 torch twin, started from the same float32-valued
  weights, fed the same batches) give each framework's own float32-vs-float64 gap. For every
  tensor and step, the triangle inequality gives, for correct code,

      |np32 - t32| <= |np32 - np64| + |np64 - t64| + |t64 - t32| <= 2 * floor + |np64 - t64|

  with ``floor = max(|np32 - np64|, |t32 - t64|, eps32 * max|t32|)`` and ``|np64 - t64|`` at
  float64 rounding (~1e-15). So a NumPy-vs-PyTorch gap above ``2 * floor`` (plus the float64
  tolerance) cannot be rounding: it is a real difference. A bug present in both scratch runs
  (float32 and float64) is *not* part of the floor (``np32 - np64`` cancels it) and shows in
  full; the shadows' own float64 comparison is reported too. Shadows cost two extra float64
  runs, so they run for the first ``shadow_steps`` steps only: all steps in lockstep (cheap:
  one extra forward/backward per side), the first 600 in free mode (one epoch, where a small
  bug still stands far out of the drift). Steps after the window are reported, not judged.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from harness.compare import DEFAULT_TOLERANCES, TensorResult, Tolerance, check_accuracy, compare
from harness.report import LayerReport, RunReport
from reference.nets import (
    TORCH_DTYPE,
    TorchNet,
    clear_injected,
    injected_layers,
    load_from_scratch,
    to_torch,
)

FRAMEWORKS = ("numpy", "torch")
MODES = ("free", "lockstep")
OPTIMIZER_NAMES = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam")
DEFAULT_LR: dict[str, float] = {"sgd": 0.1, "momentum": 0.01, "nesterov": 0.01, "adagrad": 0.01,
                                "rmsprop": 0.001, "adam": 0.001}
"""The learning rate of a named optimizer when none is given: the classic experiment's 0.1
for SGD; the book's defaults (scratch/optimizers.py, "Deep Learning from Scratch" ch. 6) for
the others, except RMSprop: 0.001 (its scratch default 0.01 makes this net's training
chaotic; docs/training.md). With lr 0.1 the adaptive optimizers diverge (Adam: loss 3.7,
accuracy 0.11)."""
LOSS_ATOL_FLOAT64 = 1e-9
"""float64: the largest |loss difference| accepted at any step."""
NOISE_RATIO_LIMIT = 2.0
"""float32: a gap above this many noise floors cannot be rounding (the triangle bound)."""
ROUNDING_OF_DIFF = 2.0 ** -20
"""The limit is ``2 * floor * (1 + ROUNDING_OF_DIFF)``: a float32 difference is itself
rounded (relative 2**-24); this keeps the bound rigorous."""
EPS32 = float(np.finfo(np.float32).eps)
DEFAULT_FREE_SHADOW_STEPS = 600
FLOAT64_FREE_STRICT_STEPS = 600
FLOAT64_FREE_LATE_FACTOR = 1e3
"""float64, free mode: the tolerance above holds for the first FLOAT64_FREE_STRICT_STEPS steps
(a formula bug shows from its first step, at 1e-8 relative or more), then is multiplied by
FLOAT64_FREE_LATE_FACTOR. Free runs amplify float64 rounding chaotically: correct code
(MultiLayerNet 784-100-100-10, Adam, MNIST, 10,000 steps) drifted to 3.6x the strict limit
by step 9,999 (first past it at step 9,638), while a bug that starts late (a wrong learning
rate, a reset moment) moves the weights by ~lr x grad, far above 1e3 x the strict limit."""


def float64_factor(mode: str, step: int | np.ndarray) -> Any:
    """How much the float64 tolerance is widened at ``step`` (1 in lockstep and early on)."""
    if mode != "free":
        return np.ones_like(step, dtype=float) if isinstance(step, np.ndarray) else 1.0
    return np.where(np.asarray(step) >= FLOAT64_FREE_STRICT_STEPS, FLOAT64_FREE_LATE_FACTOR, 1.0)
"""float32 free mode: float64 shadows for the first epoch of MNIST (600 steps of 100)."""
DEFAULT_EVAL_CHUNK = 2000
"""Rows per evaluation chunk; nets with image input (convolutions: im2col is ~25x the input)
use a tenth of it. 2,000 rows were ~10% faster than 10,000 for NumPy and PyTorch alike (the
chunk's activations stay in cache; docs/benchmarks.md)."""


# ---------------------------------------------------------------------------------------
# The classic schedule (pure functions: the self-test mutates copies of these)


def iter_per_epoch(train_size: int, batch: int) -> float:
    """The classic ``max(train_size / batch_size, 1)`` (600.0 for MNIST and batch 100)."""
    return max(train_size / batch, 1)


def evaluation_steps(iters: int, iter_per_epoch: float) -> list[int]:
    """The steps after which both runs are evaluated: the classic ``i % iter_per_epoch == 0``
    (0, 600, ..., 9600: 17 evaluations for 10,000 steps of 600 per epoch)."""
    return [i for i in range(iters) if i % iter_per_epoch == 0]


def batch_indices(rng: np.random.Generator, train_size: int, batch: int) -> np.ndarray:
    """One step's mini-batch: ``batch`` indices drawn with replacement (shared by both sides)."""
    return rng.integers(0, train_size, size=batch)


# ---------------------------------------------------------------------------------------
# Nets and optimizers


def available_nets() -> dict[str, Callable[..., Any]]:
    """``--net`` name -> builder ``(dtype, seed, hidden, input_size, output_size) -> net``,
    for the scratch nets that are importable."""
    out: dict[str, Callable[..., Any]] = {}

    from scratch.two_layer_net import TwoLayerNet

    def two_layer(dtype: Any, seed: int, hidden: Sequence[int], input_size: int = 784,
                  output_size: int = 10) -> Any:
        return TwoLayerNet(input_size, _one_hidden("two-layer", hidden), output_size, dtype=dtype,
                           seed=seed)

    out["two-layer"] = two_layer
    try:
        from scratch.multi_layer_net import MultiLayerNet
    except ImportError:
        MultiLayerNet = None
    if MultiLayerNet is not None:
        def multi_layer(dtype: Any, seed: int, hidden: Sequence[int], input_size: int = 784,
                        output_size: int = 10) -> Any:
            return MultiLayerNet(input_size, list(hidden), output_size, dtype=dtype, seed=seed)

        out["multi-layer"] = multi_layer
    try:
        from scratch.simple_convnet import SimpleConvNet
    except ImportError:
        SimpleConvNet = None
    if SimpleConvNet is not None:
        def convnet(dtype: Any, seed: int, hidden: Sequence[int], input_size: int = 784,
                    output_size: int = 10) -> Any:
            side = round(math.sqrt(input_size))
            return SimpleConvNet((1, side, side), hidden_size=_one_hidden("convnet", hidden),
                                 output_size=output_size, dtype=dtype, seed=seed)

        out["convnet"] = convnet
    return out


NETS_WITH_ONE_HIDDEN = ("two-layer", "convnet")
"""Nets with one hidden (fully connected) layer: they take exactly one hidden size."""


def _one_hidden(name: str, hidden: Sequence[int]) -> int:
    if len(hidden) != 1:
        raise ValueError(f"net {name!r} has one hidden layer: give one hidden size, got "
                         f"{list(hidden)} (--net multi-layer takes one per hidden layer)")
    return int(hidden[0])


def make_net(name: str = "two-layer", *, dtype: Any = np.float64, seed: int = 0,
             hidden: Sequence[int] | int = (50,), input_size: int = 784,
             output_size: int = 10) -> Any:
    nets = available_nets()
    if name not in nets:
        raise ValueError(f"unknown net {name!r}; available: {sorted(nets)}")
    hidden = [hidden] if isinstance(hidden, int) else list(hidden)
    if not hidden or any(int(h) < 1 for h in hidden):
        raise ValueError(f"hidden sizes must be >= 1, got {hidden}")
    return nets[name](np.dtype(dtype), seed, hidden, input_size, output_size)


class _ClassicSGD:
    """``p -= lr * g``: used only when scratch.optimizers is missing."""

    def __init__(self, lr: float) -> None:
        self.lr = lr

    def update(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        for key, p in params.items():
            p -= p.dtype.type(self.lr) * grads[key]


@dataclass
class OptimizerPair:
    """A scratch optimizer and the torch optimizer that computes the same update."""

    name: str
    scratch: Any
    torch: torch.optim.Optimizer | None
    before_step: Callable[[torch.optim.Optimizer, int], None] | None = None
    description: str = ""


# name -> (scratch class name in scratch.optimizers, default keyword arguments)
_SCRATCH_OPTIMIZERS: dict[str, tuple[str, dict[str, Any]]] = {
    "sgd": ("SGD", {}),
    "momentum": ("Momentum", {}),
    # the book's Nesterov is a different optimizer from torch's; the paper's form (bengio)
    # equals SGD(nesterov=True) while lr is constant, as it is here.
    "nesterov": ("Nesterov", {"form": "bengio"}),
    "adagrad": ("AdaGrad", {}),
    "rmsprop": ("RMSprop", {}),
    "adam": ("Adam", {}),
}


def default_lr(optimizer: str) -> float:
    """The learning rate used for the named optimizer when none is given (:data:`DEFAULT_LR`)."""
    return DEFAULT_LR.get(str(optimizer).lower(), DEFAULT_LR["sgd"])


def available_optimizers() -> list[str]:
    try:
        import reference.optimizers  # noqa: F401
        import scratch.optimizers  # noqa: F401
    except ImportError:
        return ["sgd"]
    return list(OPTIMIZER_NAMES)


def optimizer_hyperparameters(opt: Any) -> dict[str, Any]:
    """A scratch optimizer's hyper-parameters (its plain attributes; not its state)."""
    return {k: v for k, v in vars(opt).items()
            if k != "iter" and isinstance(v, (int, float, str, bool)) and not k.startswith("_")}


def _has_twin(cls: type) -> bool:
    """Whether an optimizer class has a torch twin: a scratch optimizer or a subclass of one,
    a class registered with ``reference.register_optimizer``, or one named like a classic
    optimizer (the book's code: ``class Adam`` with ``lr``, ``beta1``, ... attributes)."""
    try:
        from reference.optimizers import classic_for, optimizer_registration
    except ImportError:
        return False
    return optimizer_registration(cls) is not None or classic_for(cls)[0] is not None


NO_OPTIMIZER_TWIN = ("its torch twin is unknown: subclass the scratch optimizer it implements "
                     "(scratch.optimizers SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam), "
                     "name it like one (the book's code as it is), or register it with "
                     "reference.register_optimizer(cls, lambda opt, params: "
                     "torch.optim.X(params, lr=opt.lr, ...))")


def _optimizer_instance(opt: Any, lr: float | None, kwargs: dict[str, Any]) -> Any:
    """An optimizer object from an instance or a class (``lr`` and ``kwargs`` build a
    class; an instance brings its own): a scratch optimizer, a subclass of one, or a user's
    class with a twin (:func:`_has_twin`)."""
    if isinstance(opt, type):
        if not callable(getattr(opt, "update", None)) or not _has_twin(opt):
            raise TypeError(f"optimizer class {opt.__name__}: {NO_OPTIMIZER_TWIN}")
        return opt(**({"lr": lr} if lr is not None else {}), **kwargs)
    if not callable(getattr(opt, "update", None)):
        raise TypeError(f"optimizer must be a name ({', '.join(OPTIMIZER_NAMES)}), a "
                        f"scratch.optimizers optimizer or a subclass of one, or an optimizer "
                        f"of your own with update(params, grads), got {opt!r}")
    if kwargs:
        raise TypeError(f"optimizer_kwargs {sorted(kwargs)} given with an optimizer instance "
                        f"({opt!r}): set them on the instance")
    if not _has_twin(type(opt)):
        raise TypeError(f"optimizer {type(opt).__name__}: {NO_OPTIMIZER_TWIN}")
    if lr is not None and float(lr) != float(getattr(opt, "lr", lr)):
        raise ValueError(f"lr={lr:g} contradicts the optimizer instance's lr={opt.lr:g}: "
                         "give one of them")
    used = [f"{k} ({len(v)} entries)" for k, v in vars(opt).items() if isinstance(v, dict) and v]
    used += [f"iter={opt.iter!r}"] if getattr(opt, "iter", 0) else []
    if used:
        raise ValueError(f"optimizer {opt!r} does not start from a fresh state: "
                         f"{', '.join(used)}. A fresh scratch optimizer has empty state and "
                         "iter 0, as its torch twin starts; an instance already used, or one "
                         "whose constructor sets a step counter to 1 (Adam's bias correction "
                         "would then be a step ahead), would part from PyTorch at step 0")
    return opt


def optimizer_twin(opt: Any) -> Any:
    """The :class:`reference.optimizers.OptimizerTwin` of an optimizer instance: its
    registration's, else its scratch class's (:func:`reference.optimizers.torch_twin`), else,
    for a class named like a classic optimizer, that one's with the instance's
    hyper-parameters (:func:`reference.optimizers.like_classic`)."""
    from reference.optimizers import (
        OptimizerTwin,
        classic_for,
        like_classic,
        optimizer_registration,
        torch_twin,
    )

    reg = optimizer_registration(type(opt))
    if reg is not None:
        before = reg.before_step
        return OptimizerTwin(lambda ps: reg.torch_optimizer(opt, ps),
                             (lambda topt, t: before(opt, topt, t)) if before else None,
                             f"the registered twin of {type(opt).__name__}")
    classic, _ = classic_for(type(opt))
    if classic is None:
        raise TypeError(f"optimizer {type(opt).__name__}: {NO_OPTIMIZER_TWIN}")
    if isinstance(opt, classic):
        return torch_twin(opt)
    like, _ = like_classic(opt, classic)
    twin = torch_twin(like)
    twin.description = f"{twin.description} (as the classic {classic.__name__})"
    return twin


def make_optimizer_pair(name: str | Any, torch_params: Sequence[torch.Tensor] | None,
                        lr: float | None, **kwargs: Any) -> OptimizerPair:
    """The scratch optimizer ``name`` (lr and keyword arguments) and its torch twin over
    ``torch_params`` (None: no torch optimizer). Uses ``reference.optimizers.torch_twin``;
    plain SGD works without it.

    ``name`` may also be a scratch optimizer instance (its own lr and hyper-parameters; each
    call returns an independent copy) or class (built with ``lr`` and ``kwargs``), including
    a user's subclass of one: its twin is the torch optimizer of the nearest scratch class in
    its MRO (``reference.optimizers.torch_twin``), or a user's optimizer of its own that is
    registered or named like a classic one (:func:`optimizer_twin`). An object without a
    twin raises TypeError.
    """
    if not isinstance(name, str):
        instance = _optimizer_instance(name, lr, kwargs)
        scratch_opt = copy.deepcopy(instance)
        twin = optimizer_twin(scratch_opt)
        topt = twin.factory(list(torch_params)) if torch_params is not None else None
        return OptimizerPair(type(instance).__name__, scratch_opt, topt, twin.before_step,
                             twin.description)
    key = name.lower()
    if lr is None:
        lr = default_lr(key)
    if key not in _SCRATCH_OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose from {list(OPTIMIZER_NAMES)}")
    cls_name, defaults = _SCRATCH_OPTIMIZERS[key]
    try:
        import scratch.optimizers as sopt
        from reference.optimizers import torch_twin
    except ImportError:
        if key != "sgd":
            raise ValueError(f"optimizer {name!r} needs scratch.optimizers and "
                             "reference.optimizers, which are not available") from None
        if kwargs:
            raise ValueError(f"sgd takes no options, got {sorted(kwargs)}") from None
        topt = torch.optim.SGD(list(torch_params), lr=lr) if torch_params is not None else None
        return OptimizerPair(key, _ClassicSGD(lr), topt, None, "optim.SGD(lr)")
    scratch_opt = getattr(sopt, cls_name)(lr=lr, **{**defaults, **kwargs})
    twin = torch_twin(scratch_opt)
    topt = twin.factory(list(torch_params)) if torch_params is not None else None
    return OptimizerPair(key, scratch_opt, topt, twin.before_step, twin.description)


# ---------------------------------------------------------------------------------------
# One side of the comparison


def cast_net(net: Any, dtype: Any) -> Any:
    """A deep copy of a scratch net with every float array of its params and layers cast to
    ``dtype``; arrays shared between ``net.params`` and the layers stay shared."""
    from harness.check import clone  # shares what deepcopy rejects (self.xp = np, a lock)

    dtype = np.dtype(dtype)
    work = clone(net, type(net).__name__)
    memo: dict[int, np.ndarray] = {}

    def cast(a: Any) -> Any:
        if isinstance(a, np.ndarray) and a.dtype.kind == "f" and a.dtype != dtype:
            if id(a) not in memo:
                memo[id(a)] = a.astype(dtype)
            return memo[id(a)]
        return a

    for k, v in list(work.params.items()):
        work.params[k] = cast(v)
    layers = work.layers.values() if isinstance(work.layers, dict) else work.layers
    last = getattr(work, "last_layer", None)
    for layer in [*layers, *([last] if last is not None else [])]:
        for attr, val in list(vars(layer).items()):
            if isinstance(val, dict):
                for k2, v2 in list(val.items()):
                    val[k2] = cast(v2)
            else:
                setattr(layer, attr, cast(val))
    if hasattr(work, "dtype"):
        work.dtype = dtype
    return work


def _layer_list(net: Any) -> list[Any]:
    layers = net.layers.values() if isinstance(net.layers, dict) else net.layers
    return list(layers)


def sync_net(dst: Any, src: Any) -> None:
    """Copy (and cast) ``src``'s parameters and layer state arrays into ``dst`` in place."""
    for k, v in src.params.items():
        np.copyto(dst.params[k], v, casting="unsafe")
    for ld, ls in zip(_layer_list(dst), _layer_list(src), strict=True):
        for attr, val in vars(ls).items():
            if attr in ("params", "grads") or not isinstance(val, np.ndarray):
                continue
            target = getattr(ld, attr, None)
            if (isinstance(target, np.ndarray) and target.shape == val.shape
                    and attr.startswith("running_")):
                np.copyto(target, val, casting="unsafe")


class NumpySide:
    """The scratch net, its optimizer, and the loss of its last forward pass.

    A twin with a ``prepare`` hook installs something in its scratch layer before torch's
    forward (Dropout: the mask both sides use); it is cleared after NumPy's forward and
    backward of that step, and by :meth:`close`, so the net never keeps a mask of its own."""

    framework = "numpy"

    def __init__(self, net: Any, optimizer: Any) -> None:
        self.net = net
        self.optimizer = optimizer
        self.dtype = np.dtype(next(iter(net.params.values())).dtype)
        self._loss_box: list[Any] = []
        original = net.loss

        def loss(*args: Any, **kwargs: Any) -> Any:  # records the value gradient() computes
            value = original(*args, **kwargs)
            self._loss_box.append(value)
            return value

        net.loss = loss
        self._own_loss = original
        self._stepped = False
        self._class_state: dict[str, Any] | None = None
        self.grads: dict[str, np.ndarray] = {}
        self._injected = injected_layers(net)

    def forward_backward(self, x: np.ndarray, t: np.ndarray) -> float:
        self._loss_box.clear()
        try:
            self.grads = self.net.gradient(x, t)
            params = self.net.params
            if not isinstance(self.grads, dict) or self.grads.keys() != params.keys():
                self._bad_gradient_keys()
            if not self._loss_box:  # a net whose gradient() does not call self.loss
                self._loss_box.append(self._loss_aside(x, t))
        finally:  # the step's mask has been used: later forwards draw their own
            clear_injected(self._injected)
        return float(self._loss_box[-1])

    def _class_state_check(self, before: dict[str, Any]) -> None:
        """After the first update: state written into a dict or list on the optimizer's
        class is shared by every instance (this side's, the float64 shadow's), so the sides
        would corrupt each other's state: a ValueError naming it."""
        from reference.optimizers import class_state_written

        opt = self.optimizer
        shared = class_state_written(opt, before)
        if shared:
            raise ValueError(
                f"optimizer {type(opt).__name__}.update() keeps its state on the class "
                f"({', '.join(shared)}, a class attribute): every instance shares it, so a new "
                "optimizer starts with the state of earlier ones (and the copies the trainer "
                "runs would share one state); create it per instance, e.g. self.v = {} in "
                "__init__")

    def _loss_aside(self, x: np.ndarray, t: np.ndarray) -> Any:
        """The net's loss on the step's batch for a ``gradient()`` that does not call
        ``self.loss``: in training mode (``train_flg=True`` where ``loss`` takes it, as the
        forward pass of ``gradient()`` ran; the same Dropout masks, installed for the step),
        and without side effects: the layers' state (BatchNorm's running statistics, caches,
        random generators) and NumPy's global random state are as ``gradient()`` left them,
        so the recorded loss never updates the running statistics a second time."""
        import inspect

        try:
            takes_flag = "train_flg" in inspect.signature(self._own_loss).parameters
        except (TypeError, ValueError):
            takes_flag = False
        layers = _layer_list(self.net)
        last = getattr(self.net, "last_layer", None) or getattr(self.net, "lastLayer", None)
        saved = []
        for layer in [*layers, *([last] if last is not None else [])]:
            attrs = getattr(layer, "__dict__", None)
            if attrs is None:
                continue
            saved.append((layer, dict(attrs),
                          {k: v.copy() for k, v in attrs.items() if isinstance(v, np.ndarray)},
                          {k: v.bit_generator.state for k, v in attrs.items()
                           if isinstance(v, np.random.Generator)}))
        # the book's Dropout draws from the legacy global generator: keep it as it was
        global_state = np.random.get_state()  # noqa: NPY002
        try:
            return self._own_loss(x, t, train_flg=True) if takes_flag else self._own_loss(x, t)
        finally:
            np.random.set_state(global_state)  # noqa: NPY002
            for layer, attrs, arrays, gens in saved:
                layer.__dict__.clear()
                layer.__dict__.update(attrs)
                for k, a in arrays.items():  # undo in-place changes (running_mean *= m ...)
                    np.copyto(attrs[k], a)
                for k, state in gens.items():
                    attrs[k].bit_generator.state = state

    def _bad_gradient_keys(self) -> None:
        name = type(self.net).__name__
        if not isinstance(self.grads, dict):
            raise TypeError(f"{name}.gradient() must return a dict of gradients keyed like "
                            f"net.params, got {type(self.grads).__name__}")
        missing = [k for k in self.net.params if k not in self.grads]
        extra = [k for k in self.grads if k not in self.net.params]
        raise ValueError(f"{name}.gradient() returned gradients whose keys do not match "
                         f"net.params: missing {missing or 'none'}, extra {extra or 'none'} "
                         f"(params: {list(self.net.params)}); every parameter needs its "
                         "gradient under the same key")

    def step(self) -> None:
        params = self.net.params
        before = [(k, p) for k, p in params.items()]
        if self._class_state is None and not self._stepped:
            self._stepped = True
            try:
                from reference.optimizers import class_state
            except ImportError:
                pass
            else:
                self._class_state = class_state(self.optimizer)
        try:
            self.optimizer.update(params, self.grads)
        except Exception as exc:
            left = {k: v for k, v in (self._class_state or {}).items() if v}
            if left:  # a first update on state another instance left behind?
                raise ValueError(
                    f"optimizer {type(self.optimizer).__name__}.update() raised at its first "
                    f"update ({type(exc).__name__}: {exc}) while its class holds "
                    f"{', '.join(f'{k} ({len(v)} entries)' for k, v in left.items())}"
                    ": state kept on the class is shared by every instance, so a new optimizer "
                    "starts with the state of earlier ones; create it per instance, e.g. "
                    "self.v = {} in __init__") from exc
            raise
        if self._class_state is not None:  # after the first update
            cls_before, self._class_state = self._class_state, None
            self._class_state_check(cls_before)
        replaced = [k for k, p in before if params.get(k) is not p]
        if replaced:
            raise ValueError(
                f"optimizer {type(self.optimizer).__name__}.update() replaced "
                f"net.params{replaced} with new arrays instead of updating them in place; the "
                "net's layers still hold the old arrays, so the net would not learn what the "
                "optimizer computes. Update in place (p -= lr * g, or p[...] = ...)")

    def close(self) -> None:
        """Give the net its own ``loss`` method back, with no mask left installed."""
        self.net.__dict__.pop("loss", None)
        clear_injected(self._injected)

    def params(self) -> dict[str, np.ndarray]:
        return self.net.params

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.net.predict(x)


def _as_numpy(t: torch.Tensor, copy: bool) -> np.ndarray:
    """A tensor's values as NumPy: shared memory, or (``copy``) a copy in torch's own layout
    (a plain memcpy; the layout conversion is then a view of the copy)."""
    a = t.detach().numpy()
    return a.copy() if copy else a


class TorchSide:
    """The torch twin and its optimizer; gradients and parameters seen in scratch layout."""

    framework = "torch"

    def __init__(self, tnet: TorchNet, pair: OptimizerPair) -> None:
        self.tnet = tnet
        self.pair = pair
        self.dtype = tnet.np_dtype
        self.t = 0
        self._links = [(link.key, tnet.param(link), link.spec.from_torch) for link in tnet.links]

    def forward_backward(self, x: torch.Tensor, t: torch.Tensor) -> float:
        self.pair.torch.zero_grad()
        loss = self.tnet.loss(x, t)
        loss.backward()
        return float(loss.item())

    def step(self) -> None:
        self.t += 1
        if self.pair.before_step is not None:
            self.pair.before_step(self.pair.torch, self.t)
        self.pair.torch.step()

    def grads(self, copy: bool = False, out: dict[str, np.ndarray] | None = None,
              slot: dict[str, np.ndarray] | None = None, prefix: str = "d") -> dict[str, np.ndarray]:
        """Gradients in scratch layout: views of torch's, or (``copy``) of copies of them; with
        ``out`` (a worker's slot: name -> array in torch's layout) written into
        ``out[prefix + key]`` first; with ``slot``, read back from one."""
        return self._read(lambda p: p.grad if p.grad is not None else torch.zeros_like(p),
                          copy, out, slot, prefix)

    def params(self, copy: bool = False, out: dict[str, np.ndarray] | None = None,
               slot: dict[str, np.ndarray] | None = None, prefix: str = "") -> dict[str, np.ndarray]:
        """Parameters in scratch layout, as :meth:`grads`."""
        return self._read(lambda p: p, copy, out, slot, prefix)

    def _read(self, tensor: Callable[[torch.Tensor], torch.Tensor], copy: bool,
              out: dict[str, np.ndarray] | None, slot: dict[str, np.ndarray] | None,
              prefix: str) -> dict[str, np.ndarray]:
        res = {}
        for key, p, from_torch in self._links:
            if slot is not None:
                a = slot[prefix + key]
            else:
                a = _as_numpy(tensor(p), copy and out is None)
                if out is not None:
                    np.copyto(out[prefix + key], a)
                    a = out[prefix + key]
            res[key] = from_torch(a)
        return res

    def layout(self, prefixes: Sequence[str]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Name -> (torch-layout shape, dtype) of what :meth:`grads`/:meth:`params` write
        with these prefixes."""
        return {f"{pre}{key}": (tuple(p.shape), self.dtype)
                for pre in prefixes for key, p, _ in self._links}

    def predict(self, x: np.ndarray) -> np.ndarray:
        self.tnet.eval()
        try:
            with torch.no_grad():
                return self.tnet.forward(torch.from_numpy(x), inject=False).numpy()
        finally:
            self.tnet.train()


@dataclass
class _TorchStep:
    """What the torch side's step produced: its loss, and where recorded the gradients (before
    the update) and parameters (after it) in scratch layout; the same for its float64 shadow."""

    loss: float
    grads: dict[str, np.ndarray] = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)
    shadow_loss: float = math.nan
    shadow_grads: dict[str, np.ndarray] = field(default_factory=dict)
    shadow_params: dict[str, np.ndarray] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------
# Per-step records


@dataclass
class Trace:
    """Per-step largest difference of one tensor between two runs.

    ``abs[s]``: max |a - b| at step s; ``index[s]``: where (flat index into ``shape``);
    ``scale[s]``: max |b| (b is the reference side: torch, or float64); ``ref[s]``: |b| at the
    index; ``rel = abs / scale``. ``recorded[s]`` is False where nothing was compared.
    ``nonfinite[s]``: which side held a NaN/Inf (:data:`NF_NONE`, :data:`NF_A`, ...; set only
    where ``abs[s]`` is not finite); ``nf_info[s]``: (flat index of the first non-finite
    element, a's value there, b's value there) at those steps.
    """

    name: str
    shape: tuple[int, ...]
    abs: np.ndarray
    scale: np.ndarray
    ref: np.ndarray
    index: np.ndarray
    recorded: np.ndarray
    nonfinite: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int8))
    nf_info: dict[int, tuple[int, float, float]] = field(default_factory=dict)

    @classmethod
    def empty(cls, name: str, shape: tuple[int, ...], n: int) -> Trace:
        return cls(name, tuple(shape), np.full(n, np.nan), np.full(n, np.nan),
                   np.full(n, np.nan), np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=bool),
                   np.zeros(n, dtype=np.int8))

    @property
    def rel(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.scale > 0, self.abs / self.scale,
                            np.where(self.abs > 0, np.inf, 0.0))

    def index_at(self, step: int) -> tuple[int, ...]:
        i = int(self.index[step])
        if i < 0 or not self.shape:
            return ()
        return tuple(int(j) for j in np.unravel_index(i, self.shape))


def scale_groups(keys: Sequence[str]) -> list[list[str]]:
    """Parameters of one layer, by the number that ends their name (W1, b1, gamma1, beta1)."""
    groups: dict[str, list[str]] = {}
    for k in keys:
        stem = k.rstrip("0123456789")
        groups.setdefault(k[len(stem):], []).append(k)
    return list(groups.values())


def share_scale(traces: dict[str, Trace], groups: list[list[str]], step: int,
                prefix: str = "") -> None:
    """Judge each tensor at least at the largest magnitude of its layer's tensors.

    A tensor that is ~0 by mathematics keeps only rounding noise: the bias right before a
    BatchNorm has an exact gradient of 0, so it stays at ~1e-17 while its own scale is ~1e-17
    too. That noise is small against the layer (its weights, gamma), not against itself."""
    for group in groups:
        names = [prefix + k for k in group if prefix + k in traces]
        if len(names) < 2:
            continue
        top = max(float(traces[n].scale[step]) for n in names)
        for n in names:
            if traces[n].scale[step] < top:
                traces[n].scale[step] = top


NF_NONE = 0
"""Both sides finite (and so is their difference)."""
NF_A = 1
"""Only the first side (NumPy; float32 in a floor; NumPy's shadow in the shadow gap) holds a
NaN/Inf."""
NF_B = 2
"""Only the second side (PyTorch; float64 in a floor) holds a NaN/Inf."""
NF_BOTH_ALIKE = 3
"""Both hold NaN/Inf at exactly the same elements, of the same kind (NaN, +Inf, -Inf)."""
NF_BOTH_UNLIKE = 4
"""Both hold NaN/Inf, at different elements or of different kinds."""
NF_OVERFLOW = 5
"""Both finite, but their difference overflows to Inf."""


def nonfinite_kind(a: Any, b: Any) -> tuple[int, int]:
    """(one of the ``NF_*`` codes, flat index of the first non-finite element of the side that
    has one, else of the first non-finite difference) for two arrays of one shape."""
    a, b = np.asarray(a), np.asarray(b)
    fa, fb = np.isfinite(a), np.isfinite(b)
    na, nb = not fa.all(), not fb.all()
    if na and nb:
        same = (np.array_equal(np.isnan(a), np.isnan(b))
                and bool(np.all(np.where(np.isinf(a) | np.isinf(b), a == b, True))))
        return (NF_BOTH_ALIKE if same else NF_BOTH_UNLIKE), int(np.argmin(fa & fb))
    if na:
        return NF_A, int(np.argmin(fa))
    if nb:
        return NF_B, int(np.argmin(fb))
    with np.errstate(over="ignore", invalid="ignore"):
        d = np.abs(a.astype(np.result_type(a.dtype, b.dtype)) - b)
    return NF_OVERFLOW, int(np.argmin(np.isfinite(d)))


class _Differ:
    """Fast max-abs-difference of two arrays into a reusable buffer."""

    def __init__(self) -> None:
        self._bufs: dict[tuple[tuple[int, ...], str], np.ndarray] = {}

    def __call__(self, trace: Trace, step: int, a: Any, b: Any, scale: bool = True) -> None:
        """Record max |a - b|, where, and (``scale``) max |b|. The difference is computed in
        the wider dtype of the two (float32 - float32 in float32: 5x faster than casting,
        within a relative 2**-24, which :func:`float32_limit` allows for)."""
        if np.ndim(a) == 0:
            fa, fb = float(a), float(b)
            d = abs(fa - fb)
            trace.abs[step], trace.scale[step], trace.ref[step] = d, abs(fb), abs(fb)
            trace.index[step] = 0
            trace.recorded[step] = True
            if not math.isfinite(d):
                self._nonfinite(trace, step, a, b)
            return
        dt = np.result_type(a.dtype, b.dtype)
        key = (a.shape, dt.str)
        buf = self._bufs.get(key)
        if buf is None:
            buf = self._bufs[key] = np.empty(a.shape, dtype=dt)
        np.subtract(a, b, out=buf, dtype=dt)
        np.abs(buf, out=buf)
        i = int(buf.argmax())
        trace.abs[step] = float(buf.flat[i])
        if scale and b.size:
            # max|b|; read from a instead when only a is contiguous (a torch weight seen
            # transposed is a strided view): the two differ by at most the recorded |diff|
            c = b if b.flags.c_contiguous or not a.flags.c_contiguous else a
            trace.scale[step] = max(float(c.max()), -float(c.min()))
        elif scale:
            trace.scale[step] = 0.0
        trace.ref[step] = abs(float(b.flat[i]))
        trace.index[step] = i
        trace.recorded[step] = True
        if not math.isfinite(trace.abs[step]):
            self._nonfinite(trace, step, a, b)

    @staticmethod
    def _nonfinite(trace: Trace, step: int, a: Any, b: Any) -> None:
        """Which side holds the NaN/Inf (only where the difference is not finite: free)."""
        code, i = nonfinite_kind(a, b)
        trace.nonfinite[step] = code
        trace.nf_info[step] = (i, float(np.ravel(a)[i]), float(np.ravel(b)[i]))


@dataclass
class EvalRecord:
    step: int
    epoch: int
    train_acc: dict[str, float]
    test_acc: dict[str, float]


@dataclass
class Snapshot:
    """Both sides' tensors at one step, with the limit each was judged against."""

    step: int
    reason: str
    numpy: dict[str, np.ndarray]
    torch: dict[str, np.ndarray]
    limits: dict[str, float]
    floors: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class TrainConfig:
    dataset: str = ""
    net: str = ""
    iters: int = 10000
    batch: int = 100
    lr: float = 0.1
    optimizer: str = "sgd"
    optimizer_kwargs: dict[str, Any] = field(default_factory=dict)
    """The optimizer's hyper-parameters besides lr (as given, or an instance's own)."""
    hidden: list[int] | None = None
    """Hidden layer sizes, where known (the CLI's --hidden; a net's ``hidden_size_list``)."""
    param_shapes: dict[str, list[int]] = field(default_factory=dict)
    mode: str = "free"
    dtype: str = "float64"
    seed: int = 0
    frameworks: tuple[str, ...] = FRAMEWORKS
    record_param_diff: bool = True
    record_grad_diff: bool = False
    shadow_steps: int = 0
    threads: int | None = 1
    parallel: bool = False
    eval_chunk: int = DEFAULT_EVAL_CHUNK
    train_size: int = 0
    test_size: int = 0
    iter_per_epoch: float = 0.0
    targets: str = "labels"
    """What the loss gets: integer 'labels', or 'one-hot' float rows in the net's dtype (a
    regression loss such as MeanSquaredError)."""
    optimizer_form: str = ""
    """'book' for a Nesterov in the book's form (a scratch ``Nesterov(form='book')``, or a
    user's class named like it without a ``form``): by design not torch's Nesterov."""


@dataclass
class TrainResult:
    """Everything a side-by-side run recorded. Arrays have one entry per step."""

    config: TrainConfig
    loss: dict[str, np.ndarray]
    evals: list[EvalRecord]
    diffs: dict[str, Trace]
    floors: dict[str, dict[str, Trace]]
    shadow_gap: dict[str, Trace]
    snapshot: Snapshot | None
    timings: dict[str, float]
    threads: dict[str, Any]
    data: dict[str, Any]
    tensor_order: list[str]
    final_diff: dict[str, float] = field(default_factory=dict)
    """max |numpy - torch| of every parameter after the last step."""
    backward_keys: list[str] = field(default_factory=list)
    """The parameter keys in backward order: by layer, the one closest to the loss first
    (within a layer, in ``net.params`` order): the order in which an error in the backward
    pass reaches the gradients."""
    param_layers: dict[str, str] = field(default_factory=dict)
    """Parameter key -> name of the scratch layer that holds it."""
    layer_names: list[str] = field(default_factory=list)
    """The net's layers in forward order."""
    eval_checks: list[TensorResult] = field(default_factory=list)
    """Every evaluation's checks (:class:`EvalProbe`): evaluation-mode output, net.accuracy,
    running statistics."""
    loss_term: dict[str, Any] | None = None
    """Where the losses differ at step 0: the net's ``loss(x, t)`` minus the twin's on step
    0's batch and on another one, from the initial weights (:func:`weights_term`), when the
    difference is the same on both: a term of the weights alone (weight decay stored under
    another name); None otherwise."""

    @property
    def frameworks(self) -> tuple[str, ...]:
        return self.config.frameworks

    @property
    def both(self) -> bool:
        return len(self.config.frameworks) == 2

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.config.dtype)

    def accuracy(self, which: str, framework: str) -> np.ndarray:
        return np.array([getattr(e, f"{which}_acc")[framework] for e in self.evals])

    @property
    def eval_steps(self) -> list[int]:
        return [e.step for e in self.evals]


@dataclass
class TrainEvent:
    """What a callback receives: ``kind`` is 'step', 'eval' or 'end'."""

    kind: str
    step: int
    result: TrainResult
    eval: EvalRecord | None = None


Callback = Callable[[TrainEvent], None]


# ---------------------------------------------------------------------------------------
# Judging one step


def float64_limit(name: str, scale: float, ref: float, loss_atol: float = LOSS_ATOL_FLOAT64,
                  tol: Tolerance | None = None) -> float:
    """The largest accepted difference for a float64 tensor (at its worst element)."""
    if name == "loss":
        return loss_atol
    tol = tol or DEFAULT_TOLERANCES["float64"]
    return tol.atol * scale + tol.rtol * ref


def noise_floor(floor_np: float, floor_t: float, scale: float) -> float:
    """The rounding noise floor of one float32 tensor at one step."""
    return max(floor_np, floor_t, EPS32 * scale)


def float32_limit(floor: float, scale: float) -> float:
    """A gap above this is not rounding: 2 floors (triangle bound) + float64 tolerance."""
    tol = DEFAULT_TOLERANCES["float64"]
    return NOISE_RATIO_LIMIT * (1 + ROUNDING_OF_DIFF) * floor + (tol.atol + tol.rtol) * scale


# ---------------------------------------------------------------------------------------
# The trainer


def _data_arrays(data: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    try:
        return data.x_train, data.t_train, data.x_test, data.t_test
    except AttributeError as exc:
        raise TypeError("data must have x_train, t_train, x_test, t_test (harness.data.Dataset)"
                        ) from exc


def _labels(t: np.ndarray) -> np.ndarray:
    t = np.asarray(t)
    if t.ndim == 2:  # one-hot
        t = t.argmax(axis=1)
    return t.astype(np.int64, copy=False)


def _n_classes(t_train: np.ndarray, t_test: np.ndarray) -> int:
    """The number of classes: the width of one-hot rows, else the largest label + 1."""
    t_train, t_test = np.asarray(t_train), np.asarray(t_test)
    if t_train.ndim == 2:
        return int(t_train.shape[1])
    return int(max(t_train.max(initial=0), t_test.max(initial=0))) + 1


def regression_loss(net: Any, n_classes: int) -> Any | None:
    """The net's loss layer if it is a regression loss, which takes float targets of the
    output's shape instead of labels: scratch's ``MeanSquaredError`` (or a subclass), or a
    layer whose twin is of kind 'loss' and makes float targets shaped like its input
    (``make_target``, tried on a (2, n_classes) input). None otherwise."""
    from reference.nets import last_layer
    from reference.registry import lookup

    try:
        last = last_layer(net)
    except TypeError:
        return None
    try:
        from scratch.layers import MeanSquaredError
    except ImportError:
        MeanSquaredError = None
    if MeanSquaredError is not None and isinstance(last, MeanSquaredError):
        return last
    twin = lookup(type(last))
    if twin is None or twin.kind != "loss" or twin.make_target is None:
        return None
    x = np.zeros((2, n_classes))
    try:
        t = np.asarray(twin.make_target(last, x, np.random.default_rng(0)))
    except Exception:  # a target maker for other inputs: not ours to judge
        return None
    return last if t.dtype.kind == "f" and t.shape == x.shape else None


def _check_input_fits(net: Any, x_row: np.ndarray) -> None:
    """Before training: a copy of the net runs ``predict`` on one row of the data, so that a
    net built for another input size is named here, not by a NumPy or PyTorch shape error
    from inside the first step."""
    try:  # a copy of what predict() runs on, not of whatever else the net holds (a data set)
        parts = {k: v for k, v in vars(net).items()
                 if k in ("params", "layers", "last_layer", "lastLayer")}
        work = copy.copy(net)
        work.__dict__.update(copy.deepcopy(parts))
    except Exception:  # a net that cannot be copied: the first step will tell
        return
    try:
        work.predict(x_row)
    except Exception as exc:
        first = next((f"{k} {tuple(v.shape)}" for k, v in getattr(net, "params", {}).items()
                      if np.ndim(v) >= 2), None)
        raise ValueError(
            f"{type(net).__name__}.predict() cannot take the data: on one row of it, shape "
            f"{x_row.shape}, it raised {type(exc).__name__}: {exc}"
            + (f" (the net's first weight is {first}: was it built for another input size?)"
               if first else "")) from exc


def _one_hot_targets(net: Any, dt: np.dtype, n_classes: int, x_row: np.ndarray
                     ) -> np.ndarray | None:
    """For a net with a regression loss (:func:`regression_loss`), the rows that turn labels
    into its targets: ``eye(n_classes)`` in the net's dtype (both sides then get one-hot float
    targets of the output's shape); None for a net that takes labels. A ValueError, before
    training, names the loss layer and the target shape it needs when one-hot rows cannot
    be its targets (an output that is not one column per class)."""
    last = regression_loss(net, n_classes)
    if last is None:
        return None
    try:  # the output's shape, from the twin: predict() could change a user's net
        tnet = to_torch(net, dt)
    except (LookupError, TypeError, ValueError):
        tnet = None  # no twin (a NumPy-only run): the loss layer checks the shape itself
    if tnet is not None:
        tnet.eval()
        with torch.no_grad():
            shape = tuple(tnet.forward(torch.from_numpy(x_row), inject=False).shape)
        if len(shape) != 2 or shape[1] != n_classes:
            raise ValueError(
                f"{type(net).__name__}.last_layer is {type(last).__name__}, a regression loss: "
                f"it needs float targets of the output's shape (batch, "
                f"{', '.join(map(str, shape[1:]))}); side-by-side training gives it one-hot "
                f"rows of the data's {n_classes} classes, shape (batch, {n_classes}), so the "
                f"net's output must be (batch, {n_classes}): one score per class")
    return np.eye(n_classes, dtype=dt)


def _input_shape(net: Any) -> tuple[int, ...] | None:
    dim = getattr(net, "input_dim", None)
    return tuple(dim) if dim is not None else None


def train_side_by_side(
    net: Any = None,
    data: Any = None,
    *,
    iters: int = 10000,
    batch: int = 100,
    lr: float | None = None,
    optimizer: str | Any = "sgd",
    optimizer_kwargs: dict[str, Any] | None = None,
    mode: str = "free",
    dtype: Any = np.float64,
    seed: int = 0,
    frameworks: Sequence[str] = FRAMEWORKS,
    record_param_diff: bool = True,
    record_grad_diff: bool | None = None,
    shadow_steps: int | None = None,
    callbacks: Sequence[Callback] = (),
    threads: int | None = 1,
    parallel: bool | None = None,
    eval_chunk: int | None = None,
    net_name: str = "",
    hidden: Sequence[int] | None = None,
) -> TrainResult:
    """Train the scratch net and its torch twin side by side; see the module docstring.

    * ``net``: a scratch net, or a factory ``(dtype) -> net`` (e.g. ``lambda dtype:
      TwoLayerNet(dtype=dtype, seed=0)``), or None for the classic TwoLayerNet(784, 50, 10).
      A net instance is used as is (its dtype wins) and is trained in place; it is given back
      with its own ``loss`` and no Dropout mask installed, also when training raises.
    * ``data``: an object with ``x_train, t_train, x_test, t_test`` (``harness.data.Dataset``);
      images (N, 784) in any float dtype, labels integers (or one-hot). A net whose loss
      layer is a regression loss (:func:`regression_loss`: MeanSquaredError) trains on
      one-hot float rows in its dtype, on both sides; a ValueError before the first step
      when its output is not one score per class.
    * ``optimizer``: a name (``OPTIMIZER_NAMES``, with ``lr``, default :data:`DEFAULT_LR`:
      0.1 for SGD, 0.01 for momentum, nesterov and adagrad, 0.001 for rmsprop and adam; and
      ``optimizer_kwargs``), or a scratch optimizer instance (e.g. ``Adam(lr=0.001)``, or an
      instance of a user's subclass: each side gets its own copy; its lr wins) or class;
      the torch twin is that of the nearest scratch.optimizers class in its MRO.
    * ``mode``: 'free' or 'lockstep'; ``frameworks``: ('numpy', 'torch') or one of them.
    * ``record_param_diff``: compare every parameter after every step (always on in
      lockstep); ``record_grad_diff``: every gradient (default: in lockstep only). The loss is
      always compared.
    * ``shadow_steps``: float32 only, how many steps run float64 shadows for the noise floor;
      None: all in lockstep, ``min(iters, 600)`` in free mode; 0: none.
    * ``threads``: limit NumPy's BLAS and PyTorch to this many threads while training
      (:mod:`harness.threads`); None leaves both alone.
    * ``parallel``: free mode with both frameworks: train the torch side in a forked worker
      process while NumPy's side trains in this one, one core each (the two sides are
      independent in free mode; :mod:`harness.torch_worker`). The records are the same as in
      sequential mode, bit for bit. None (the default): parallel when possible and useful:
      free mode, both frameworks, ``threads=1`` (the worker cannot run a second OpenMP thread
      after a fork) and 2 cores or more, Linux, and no twin that installs something in its
      scratch layer before each forward pass (Dropout's mask: torch's forward must then come
      first, in this process). True
      insists (ValueError where it cannot be); False: one side after the other. An exception
      in the worker is raised here as :class:`harness.torch_worker.TorchSideError` with its
      traceback. Callbacks run in this process; the torch twin object here keeps its initial
      weights (the worker's copy trains), and the worker may be a few steps ahead of a 'step'
      callback.
    * ``eval_chunk``: rows per evaluation chunk (None: 2,000, or 200 for image input).
    * ``callbacks``: called with a :class:`TrainEvent` after every step, evaluation and at the
      end.
    """
    from harness.threads import limit_threads

    if data is None:
        raise TypeError("train_side_by_side needs data (harness.data.load_dataset(...))")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    frameworks = tuple(frameworks)
    if not frameworks or any(f not in FRAMEWORKS for f in frameworks) or \
            len(set(frameworks)) != len(frameworks):
        raise ValueError(f"frameworks must be a non-empty subset of {FRAMEWORKS}, got {frameworks}")
    frameworks = tuple(f for f in FRAMEWORKS if f in frameworks)
    both = len(frameworks) == 2
    if iters < 1 or batch < 1:
        raise ValueError(f"iters and batch must be >= 1, got {iters}, {batch}")

    okw = dict(optimizer_kwargs or {})
    if eval_chunk is not None and (isinstance(eval_chunk, bool) or int(eval_chunk) < 1):
        raise ValueError(f"eval_chunk must be >= 1, got {eval_chunk}")
    if lr is not None and not (isinstance(lr, (int, float, np.floating)) and math.isfinite(lr)
                               and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if isinstance(optimizer, str):
        lr = default_lr(optimizer) if lr is None else lr
        opt_name = optimizer
        # the hyper-parameters in effect (the given ones and the defaults): built once
        opt_kwargs = {k: v for k, v in optimizer_hyperparameters(
            make_optimizer_pair(optimizer, None, lr, **okw).scratch).items() if k != "lr"}
    else:  # an instance or class: checked (and built) once here, copied for every side
        optimizer = _optimizer_instance(optimizer, lr, okw)
        okw = {}
        lr, opt_name = float(getattr(optimizer, "lr", math.nan)), type(optimizer).__name__
        opt_kwargs = {k: v for k, v in optimizer_hyperparameters(optimizer).items() if k != "lr"}
    if net is None:
        net = make_net("two-layer", dtype=dtype, seed=seed)
        net_name = net_name or "two-layer"
        hidden = [50] if hidden is None else hidden
    elif callable(net) and not hasattr(net, "params"):
        net = net(np.dtype(dtype))
    dt = np.dtype(next(iter(net.params.values())).dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"the net's parameters must be float32 or float64, got {dt}")
    if mode == "lockstep" and not both:
        raise ValueError("lockstep mode needs both frameworks")

    x_train, t_train, x_test, t_test = _data_arrays(data)
    n_classes = _n_classes(t_train, t_test)
    t_train, t_test = _labels(t_train), _labels(t_test)
    n_train = int(x_train.shape[0])
    ipe = iter_per_epoch(n_train, batch)
    eval_at = set(evaluation_steps(iters, ipe))
    in_shape = _input_shape(net)
    x_row = x_test[:1].astype(dt)
    _check_input_fits(net, x_row.reshape(-1, *in_shape) if in_shape else x_row)
    # a regression loss (MSE) learns one-hot float rows; accuracies still count labels
    one_hot = _one_hot_targets(net, dt, n_classes, x_row.reshape(-1, *in_shape) if in_shape
                               else x_row)
    if eval_chunk is None:
        eval_chunk = DEFAULT_EVAL_CHUNK // 10 if in_shape else DEFAULT_EVAL_CHUNK

    if dt == np.float32 and both:
        if shadow_steps is None:
            shadow_steps = iters if mode == "lockstep" else min(iters, DEFAULT_FREE_SHADOW_STEPS)
        shadow_steps = max(0, min(int(shadow_steps), iters))
    else:
        shadow_steps = 0
    record = record_param_diff or mode == "lockstep"
    record_grads = (mode == "lockstep") if record_grad_diff is None else bool(record_grad_diff)
    parallel = _parallel_mode(parallel, net, both, mode, threads)

    if hidden is None and getattr(net, "hidden_size_list", None) is not None:
        hidden = net.hidden_size_list
    config = TrainConfig(dataset=str(getattr(data, "name", "")), net=net_name or type(net).__name__,
                         iters=iters, batch=batch, lr=lr, optimizer=opt_name,
                         optimizer_kwargs=_jsonable(opt_kwargs),
                         hidden=[int(h) for h in hidden] if hidden is not None else None,
                         param_shapes={k: list(v.shape) for k, v in net.params.items()},
                         mode=mode,
                         dtype=dt.name, seed=seed, frameworks=frameworks,
                         record_param_diff=record, record_grad_diff=record_grads,
                         shadow_steps=shadow_steps, threads=threads, parallel=parallel,
                         eval_chunk=eval_chunk, train_size=n_train,
                         test_size=int(x_test.shape[0]), iter_per_epoch=float(ipe),
                         targets="labels" if one_hot is None else "one-hot",
                         optimizer_form=_nesterov_form(optimizer))

    # --- build the sides (shadows first: cast_net must copy the net before it is wrapped)
    shadow_np = shadow_t = None
    if shadow_steps:
        net64 = cast_net(net, np.float64)
        t64 = to_torch(net64, np.float64)
        shadow_t = TorchSide(t64, make_optimizer_pair(optimizer, list(t64.parameters()), lr, **okw))
        shadow_np = NumpySide(net64, make_optimizer_pair(optimizer, None, lr, **okw).scratch)
    np_side = t_side = None
    if "torch" in frameworks:
        tnet = to_torch(net, dt)
        t_side = TorchSide(tnet, make_optimizer_pair(optimizer, list(tnet.parameters()), lr, **okw))
    probe = None
    if both:  # evaluation checks (free mode: the state before each evaluated step, replayed)
        probe = EvalProbe(net, dt, x_test, t_test, _input_shape(net))
    if "numpy" in frameworks:
        np_side = NumpySide(net, make_optimizer_pair(optimizer, None, lr, **okw).scratch)

    keys = list(net.params)
    shapes = {k: tuple(v.shape) for k, v in net.params.items()}
    order = ["loss"] + ([f"d{k}" for k in keys] if record_grads else []) + (keys if record else [])
    tshape = {"loss": ()} | {f"d{k}": shapes[k] for k in keys} | {k: shapes[k] for k in keys}
    n = iters

    def traces() -> dict[str, Trace]:
        return {name: Trace.empty(name, tshape[name], n) for name in order}

    result = TrainResult(
        config=config,
        loss={f: np.full(n, np.nan) for f in frameworks},
        evals=[],
        diffs=traces() if both else {},
        floors={"numpy": traces(), "torch": traces()} if shadow_steps else {},
        shadow_gap=traces() if shadow_steps else {},
        snapshot=None,
        timings={"numpy_step": 0.0, "torch_step": 0.0, "numpy_eval": 0.0, "torch_eval": 0.0,
                 "compare": 0.0, "shadow": 0.0, "sync": 0.0, "wait": 0.0,
                 "total": 0.0},
        threads={},
        data={"name": config.dataset, "source": str(getattr(data, "source", "")),
              "train": n_train, "test": int(x_test.shape[0])},
        tensor_order=order,
    )
    result.layer_names, result.param_layers, result.backward_keys = _param_layers(net)
    jorder = judge_order(result)
    blown_up = False  # both sides turned non-finite alike: no snapshot after that
    diff = _Differ()
    groups = scale_groups(keys)
    tm = result.timings
    rng = np.random.default_rng(seed)
    judged_last = (shadow_steps - 1) if dt == np.float32 else iters - 1
    torch_dt = TORCH_DTYPE[dt]
    perf = time.perf_counter

    def as_input(xb: np.ndarray, d: np.dtype) -> np.ndarray:
        xb = xb.astype(d, copy=False)
        return xb.reshape(-1, *in_shape) if in_shape else xb

    def limit_for(name: str, s: int) -> float:
        tr = result.diffs[name]
        if dt == np.float64:
            return float64_limit(name, tr.scale[s], tr.ref[s]) * float(float64_factor(mode, s))
        if s >= shadow_steps:
            return math.nan
        fl = noise_floor(result.floors["numpy"][name].abs[s], result.floors["torch"][name].abs[s],
                         tr.scale[s])
        return float32_limit(fl, tr.scale[s])

    def take_snapshot(s: int, reason: str, np_vals: dict[str, Any], t_vals: dict[str, Any],
                      only: Sequence[str] | None = None) -> None:
        names = [k for k in order if k in np_vals and (only is None or k in only)]
        limits = {k: limit_for(k, s) for k in names}
        floors = {}
        if shadow_steps and s < shadow_steps:
            floors = {k: {"numpy": float(result.floors["numpy"][k].abs[s]),
                          "torch": float(result.floors["torch"][k].abs[s])} for k in names}
        result.snapshot = Snapshot(
            step=s, reason=reason,
            numpy={k: np.array(np_vals[k], dtype=dt, copy=True) for k in names},
            torch={k: np.array(t_vals[k], dtype=dt, copy=True) for k in names},
            limits=limits, floors=floors)

    t_start = perf()
    # evaluations run one framework at a time, each with its library's own thread count
    eval_threads = dict(zip(FRAMEWORKS, _current_threads(), strict=True)) if threads else None
    sides = {"shadow_np": shadow_np, "shadow_t": shadow_t}  # freed after the shadow window

    def draw(s: int, gen: np.random.Generator | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Step s's batch: the scratch-dtype input, the targets, the float64 shadow input
        (``gen``: a batch from another generator than the run's)."""
        idx = batch_indices(rng if gen is None else gen, n_train, batch)
        xb, tb = x_train[idx], t_train[idx]
        if one_hot is not None:
            tb = one_hot[tb]
        x64 = as_input(xb, np.dtype(np.float64)) if s < shadow_steps else None
        return as_input(xb, dt), tb, x64

    def torch_work(s: int, xr: np.ndarray, tb: np.ndarray, x64: np.ndarray | None,
                   out: dict[str, np.ndarray] | None = None) -> _TorchStep:
        """The torch side's whole step s (and its shadow's): forward, backward, update. What
        is compared is read as views, or (``out``: a worker's slot, name -> array in torch's
        layout) copied into ``out``: gradients before the update, parameters after it."""
        t0 = perf()
        tt = torch.from_numpy(tb)
        res = _TorchStep(t_side.forward_backward(torch.from_numpy(xr).to(torch_dt), tt))
        if both and record_grads:
            res.grads = t_side.grads(copy=True, out=out, prefix="d")
        t_side.step()
        if both and (record or s == iters - 1):
            res.params = t_side.params(out=out)
        tm["torch_step"] += perf() - t0
        shadow = sides["shadow_t"]
        if x64 is not None and shadow is not None:
            t0 = perf()
            res.shadow_loss = shadow.forward_backward(torch.from_numpy(x64), tt)
            if record_grads:
                res.shadow_grads = shadow.grads(copy=True, out=out, prefix="shadow d")
            shadow.step()
            if record:
                res.shadow_params = shadow.params(out=out, prefix="shadow ")
            tm["shadow"] += perf() - t0
        return res

    worker = None
    if parallel:
        from harness.torch_worker import TorchProcess

        def child_step(s: int, out: dict[str, np.ndarray]) -> tuple[float, float]:
            # in the worker process: its own copy of the batch generator draws step s's batch
            res = torch_work(s, *draw(s), out=out)
            return res.loss, res.shadow_loss

        def child_evaluate(s: int) -> tuple[float, float]:
            return _side_accuracy(t_side, x_train, t_train, x_test, t_test, dt, in_shape,
                                  eval_chunk)

        tensors = t_side.layout(["d"] if record_grads else []) | t_side.layout([""])
        if shadow_steps:
            tensors |= shadow_t.layout(["shadow d"] if record_grads else []) | \
                shadow_t.layout(["shadow "] if record else [])
        worker = TorchProcess(iters, eval_at, tensors, child_step, child_evaluate, timings=tm)

    def worker_step(s: int) -> _TorchStep:
        slot, loss, shadow_loss = worker.result(s)
        return _TorchStep(loss, t_side.grads(slot=slot, prefix="d") if record_grads else {},
                          t_side.params(slot=slot), shadow_loss,
                          sides["shadow_t"].grads(slot=slot, prefix="shadow d")
                          if record_grads and s < shadow_steps else {},
                          sides["shadow_t"].params(slot=slot, prefix="shadow ")
                          if record and s < shadow_steps else {})

    if parallel:
        result.threads["parallel"] = "process"
    # given back however the run ends: the net's own loss(), and no mask left in a layer
    # (a torch-only run's twin installs masks in the net's layers too)
    owned = [side for side in (np_side, shadow_np) if side is not None]
    masked = injected_layers(net)
    try:
        with (limit_threads(threads, threads) if threads else _null_threads()) as thread_info:
            result.threads.update(thread_info)
            if eval_threads and not parallel:
                result.threads.update({f"eval_{k}_threads": v for k, v in eval_threads.items()})
            for s in range(iters):
                xr, tb, x64 = draw(s)
                shadows = x64 is not None and sides["shadow_np"] is not None
                shadow_np = sides["shadow_np"]
                if mode == "lockstep":
                    t0 = perf()
                    load_from_scratch(t_side.tnet, net)
                    tm["sync"] += perf() - t0
                if shadows and mode == "lockstep":
                    t0 = perf()
                    sync_net(shadow_np.net, net)
                    load_from_scratch(sides["shadow_t"].tnet, shadow_np.net)
                    tm["shadow"] += perf() - t0
                # sequential: torch's step first (a Dropout twin installs its mask in the
                # scratch layer before NumPy's forward pass)
                tout = None
                if t_side is not None and worker is None:
                    tout = torch_work(s, xr, tb, x64)
                if probe is not None and mode == "free" and s in eval_at:
                    # the state NumPy's step s starts from (with the step's Dropout masks,
                    # installed by torch's forward), to replay its running statistics update
                    probe.remember(s, xr)
                if np_side is not None:
                    t0 = perf()
                    ln = np_side.forward_backward(xr, tb)
                    tm["numpy_step"] += perf() - t0
                    result.loss["numpy"][s] = ln
                if shadows:
                    t0 = perf()
                    l64n = shadow_np.forward_backward(x64, tb)
                    tm["shadow"] += perf() - t0
                if worker is not None:
                    t0 = perf()
                    tout = worker_step(s)
                    tm["wait"] += perf() - t0
                if tout is not None:
                    lt = tout.loss
                    result.loss["torch"][s] = lt
                t_vals: dict[str, Any] = {}
                np_vals: dict[str, Any] = {}
                if both:
                    t0 = perf()
                    np_vals["loss"], t_vals["loss"] = ln, lt
                    diff(result.diffs["loss"], s, ln, lt)
                    if shadows:
                        fl_n, fl_t, gap = result.floors["numpy"], result.floors["torch"], result.shadow_gap
                        diff(fl_n["loss"], s, ln, l64n)
                        diff(fl_t["loss"], s, lt, tout.shadow_loss)
                        diff(gap["loss"], s, l64n, tout.shadow_loss)
                    if record_grads:
                        tg = tout.grads
                        for k in keys:
                            name = f"d{k}"
                            np_vals[name], t_vals[name] = np_side.grads[k], tg[k]
                            diff(result.diffs[name], s, np_side.grads[k], tg[k])
                        share_scale(result.diffs, groups, s, "d")
                        if shadows:
                            sg = tout.shadow_grads
                            for k in keys:
                                name = f"d{k}"
                                diff(fl_n[name], s, np_side.grads[k], shadow_np.grads[k], False)
                                diff(fl_t[name], s, tg[k], sg[k], False)
                                diff(gap[name], s, shadow_np.grads[k], sg[k])
                            share_scale(gap, groups, s, "d")
                    tm["compare"] += perf() - t0
                    if s == 0 and np_side is not None and \
                            not result.diffs["loss"].abs[0] <= limit_for("loss", 0):
                        # before the update: the net still holds its initial weights
                        x1, t1, _ = draw(0, np.random.default_rng([seed, 1]))
                        result.loss_term = weights_term(net, ((xr, tb), (x1, t1)), ln - lt)
                # NumPy's update (torch's is part of its step above)
                if np_side is not None:
                    t0 = perf()
                    np_side.step()
                    tm["numpy_step"] += perf() - t0
                if shadows:
                    t0 = perf()
                    shadow_np.step()
                    tm["shadow"] += perf() - t0
                if probe is not None and s in eval_at:
                    probe.stepped(s)  # the running statistics before the evaluation runs
                if both:
                    t0 = perf()
                    final = s == judged_last and result.snapshot is None
                    npp = np_side.params()
                    if record:
                        tp = tout.params
                        for k in keys:
                            np_vals[k], t_vals[k] = npp[k], tp[k]
                            diff(result.diffs[k], s, npp[k], tp[k])
                        share_scale(result.diffs, groups, s)
                        if shadows:
                            sp, snp = tout.shadow_params, shadow_np.params()
                            for k in keys:
                                diff(result.floors["numpy"][k], s, npp[k], snp[k], False)
                                diff(result.floors["torch"][k], s, tp[k], sp[k], False)
                                diff(result.shadow_gap[k], s, snp[k], sp[k])
                            share_scale(result.shadow_gap, groups, s)
                    if result.snapshot is None and s <= judged_last and not blown_up:
                        alike = False
                        for name in jorder:
                            tr = result.diffs[name]
                            if not tr.recorded[s]:
                                continue
                            if tr.nonfinite[s] == NF_BOTH_ALIKE:
                                alike = True
                            elif not tr.abs[s] <= limit_for(name, s):
                                take_snapshot(s, f"first step where {name} exceeds its limit",
                                              np_vals, t_vals)
                                break
                        else:
                            # both blew up alike: NaN == NaN is no comparison; no snapshot
                            blown_up = alike
                            if final and not alike:
                                take_snapshot(s, "last judged step (no step exceeded)",
                                              np_vals, t_vals)
                    elif both and s > judged_last and not blown_up and (
                            result.snapshot is None or (
                                result.snapshot.step == judged_last
                                and result.snapshot.reason.startswith("last judged"))):
                        # after the shadow window: a NaN/Inf on one side is still a failure
                        bad = [name for name in jorder if result.diffs[name].recorded[s]
                               and result.diffs[name].nonfinite[s] not in (NF_NONE,
                                                                           NF_BOTH_ALIKE)]
                        blown_up = any(result.diffs[name].recorded[s] and
                                       result.diffs[name].nonfinite[s] == NF_BOTH_ALIKE
                                       for name in jorder)
                        if bad:
                            take_snapshot(s, f"first step where {bad[0]} is NaN/Inf on one "
                                          "side only (after the shadow window)", np_vals, t_vals,
                                          only=bad)
                    if s == iters - 1:
                        result.final_diff = {
                            k: float(np.max(np.abs(npp[k].astype(np.float64)
                                                   - tout.params[k].astype(np.float64))))
                            for k in keys}
                    tm["compare"] += perf() - t0
                if worker is not None:
                    worker.release(s)  # the slot's arrays are not read after this
                if s == shadow_steps - 1:  # the window ends: free the shadows
                    sides["shadow_np"] = None
                    if worker is None:
                        sides["shadow_t"] = None
                if s in eval_at:
                    if worker is None:
                        rec = _evaluate(result, s, ipe, np_side, t_side, x_train, t_train,
                                        x_test, t_test, dt, in_shape, eval_chunk, eval_threads)
                    else:  # the worker evaluates the torch side meanwhile
                        t0 = perf()
                        acc_n = _side_accuracy(np_side, x_train, t_train, x_test, t_test, dt,
                                               in_shape, eval_chunk)
                        tm["numpy_eval"] += perf() - t0
                        t0 = perf()
                        acc_t = worker.accuracy(s)
                        tm["wait"] += perf() - t0
                        rec = EvalRecord(step=s, epoch=int(s // ipe),
                                         train_acc={"numpy": acc_n[0], "torch": acc_t[0]},
                                         test_acc={"numpy": acc_n[1], "torch": acc_t[1]})
                    result.evals.append(rec)
                    if probe is not None:
                        t0 = perf()
                        result.eval_checks += probe.check(s, t_side if worker is None else None,
                                                          mode == "lockstep")
                        tm["compare"] += perf() - t0
                    for cb in callbacks:
                        cb(TrainEvent("eval", s, result, rec))
                for cb in callbacks:
                    cb(TrainEvent("step", s, result))
            if worker is not None:
                for k, v in worker.close().items():
                    tm[k] = tm.get(k, 0.0) + v
                worker = None
    finally:
        if worker is not None:  # stopped early: an error here, or Ctrl-C
            worker.kill()
        for side in owned:
            side.close()
        clear_injected(masked)
    tm["total"] = perf() - t_start
    for cb in callbacks:
        cb(TrainEvent("end", iters - 1, result))
    return result


def weights_term(net: Any, batches: Sequence[tuple[np.ndarray, np.ndarray]],
                 seen: float) -> dict[str, Any] | None:
    """How much ``net.loss(x, t)`` exceeds its twin's loss, in float64 from the net's current
    weights, on two batches, when that is the same on both (a term of the weights alone, like
    weight decay stored under another name than ``weight_decay_lambda``) and is the
    difference ``seen`` in training: {'batch0', 'batch1', 'weight_decay_lambda'}. None
    otherwise, or when the losses cannot be computed this way (as harness.check's
    ``_loss_row`` judges ``net.loss`` in check_net)."""
    from harness.check import _loss_pair

    name = type(net).__name__
    try:
        work = cast_net(net, np.float64)
        work.__dict__.pop("loss", None)  # the trainer's recorder: the net's own loss()
        clear_injected(injected_layers(work))
        tnet = to_torch(work, np.float64)
        pairs = [_loss_pair(work, tnet, name, x.astype(np.float64), t) for x, t in batches]
    except Exception:  # a loss() that needs more than (x, t), say: no hint, no harm
        return None
    (ours, theirs), (ours2, theirs2) = pairs
    if not all(map(math.isfinite, (ours, theirs, ours2, theirs2, seen))):
        return None
    d1, d2 = ours - theirs, ours2 - theirs2
    scale = max(1.0, abs(theirs), abs(theirs2), abs(d1))
    same = abs(d1 - d2) <= 1e-9 * scale
    # the difference training saw (float32: rounded) must be this one
    if not same or abs(d1) <= 1e-9 * scale or abs(seen - d1) > 1e-4 * scale:
        return None
    return {"batch0": d1, "batch1": d2,
            "weight_decay_lambda": getattr(net, "weight_decay_lambda", None)}


def _param_layers(net: Any) -> tuple[list[str], dict[str, str], list[str]]:
    """(layer names in forward order, key -> layer name, keys in backward order), from the
    twin's parameter links; without links (a net the twin cannot map), ``net.params``
    reversed."""
    from reference.nets import link_params, net_layers

    try:
        names = [n for n, _ in net_layers(net)]
        links = link_params(net)
    except (LookupError, TypeError):
        return [], {}, list(reversed(list(net.params)))
    pos = {link.key: i for i, link in enumerate(links)}
    order = sorted(links, key=lambda link: (-link.index, pos[link.key]))
    return names, {link.key: names[link.index] for link in links}, [link.key for link in order]


def _parallel_mode(parallel: bool | None, net: Any, both: bool, mode: str,
                   threads: int | None) -> bool:
    """Whether the torch side runs in a worker process (see ``train_side_by_side``)."""
    from harness import torch_worker
    from reference.nets import _twin, net_layers

    why_not = None
    if not both:
        why_not = "needs both frameworks"
    elif mode != "free":
        why_not = "needs free mode (lockstep copies NumPy's weights into torch before each step)"
    elif any(_twin(layer).prepare is not None for _, layer in net_layers(net)):
        why_not = ("needs layers whose twin prepares nothing in the scratch layer (a Dropout "
                   "twin installs its mask there, so torch's forward must come first)")
    elif not torch_worker.available():
        why_not = "needs Linux (the torch side runs in a forked process)"
    elif threads != 1:
        why_not = ("needs --threads 1 (threads=1): the forked worker runs torch on one thread, "
                   "as OpenMP's thread pool does not survive a fork (a second thread hangs)")
    if parallel is None:
        return why_not is None and (os.cpu_count() or 1) >= 2
    if parallel and why_not:
        raise ValueError(f"parallel training {why_not}")
    return bool(parallel)


def _current_threads() -> tuple[int | None, int]:
    """(NumPy's BLAS, PyTorch) thread counts right now."""
    from harness.threads import numpy_threads

    return numpy_threads(), torch.get_num_threads()


class _null_threads:
    def __enter__(self) -> dict[str, Any]:
        from harness.threads import numpy_threads

        return {"numpy_threads": numpy_threads(), "torch_threads": torch.get_num_threads()}

    def __exit__(self, *exc: object) -> None:
        return None


def _side_accuracy(side: NumpySide | TorchSide, x_train: np.ndarray, t_train: np.ndarray,
                   x_test: np.ndarray, t_test: np.ndarray, dt: np.dtype,
                   in_shape: tuple[int, ...] | None, chunk: int) -> tuple[float, float]:
    """(train, test) accuracy of one side on all of both sets, in chunks of ``chunk`` rows
    (the argmax of the scores: no softmax)."""
    accs = []
    for x, t in ((x_train, t_train), (x_test, t_test)):
        correct = 0
        for i in range(0, x.shape[0], chunk):
            xc = x[i:i + chunk].astype(dt, copy=False)
            if in_shape:
                xc = xc.reshape(-1, *in_shape)
            if side.framework == "numpy":  # often a view of the data set: never written
                xc = xc.view()
                xc.flags.writeable = False
            try:
                y = side.predict(xc)
            except Exception as exc:  # a user's net: say where, keep the cause
                why = (" (predict() writes into its input x: the rows of the data set, given "
                       "read-only so that evaluating never changes the data set; copy x "
                       "before changing it)" if "read-only" in str(exc) else "")
                raise RuntimeError(f"evaluating the {side.framework} side: predict() on rows "
                                   f"{i}-{i + xc.shape[0] - 1} {xc.shape} raised "
                                   f"{type(exc).__name__}: {exc}{why}") from exc
            correct += int(np.count_nonzero(y.argmax(axis=1) == t[i:i + chunk]))
        accs.append(correct / float(x.shape[0]))
    return accs[0], accs[1]


EVAL_PROBE_ROWS = 1000
"""Test images the evaluation check runs through both nets at every evaluation."""


def net_buffers(tnet: TorchNet, side: str) -> dict[str, np.ndarray]:
    """``'<layer>.<attr>'`` -> a state array that is not a parameter (BatchNorm's running
    statistics), in scratch layout: the scratch layers' (``side="numpy"``) or the torch
    modules' (``"torch"``), through each twin's ``buffer_map``."""
    out: dict[str, np.ndarray] = {}
    for name, twin, layer, mod in zip(tnet.names, tnet.twins, tnet.scratch_layers, tnet.body,
                                      strict=True):
        for attr, spec in twin.buffer_map.items():
            if side == "numpy":
                value = getattr(layer, attr, None)
                if value is not None:
                    out[f"{name}.{attr}"] = np.asarray(value)
            else:
                buf = mod.get_buffer(spec.torch_name).detach().cpu().numpy()
                out[f"{name}.{attr}"] = np.asarray(spec.from_torch(buf))
    return out


class EvalProbe:
    """What the evaluations compare besides the accuracies, which drift apart with the
    weights in free mode and so cannot be judged on their own:

    * ``eval output``: the NumPy net's ``predict`` (evaluation mode: no dropout, BatchNorm's
      running statistics) on the first :data:`EVAL_PROBE_ROWS` test images against a torch
      twin loaded with NumPy's current weights and running statistics, so no drift enters
      (the default tolerance of the dtype);
    * ``eval state``: that ``predict`` leaves the net's state (parameters, running
      statistics) exactly as it found it (evaluation must not update running statistics);
    * ``net.accuracy``: the net's own ``accuracy(x, labels)``, where it has one, against the
      argmax of its ``predict`` on the same images (exactly);
    * running statistics after the evaluated step's update, against PyTorch's after the same
      update from the same state: in lockstep the torch side itself (it starts every step
      from NumPy's state); in free mode, where the two states drift apart, a twin built from
      NumPy's state before the step (:meth:`remember`) replays the step's forward pass in
      training mode, at every evaluation (a running statistic that goes wrong after step 0
      is caught too).
    """

    def __init__(self, net: Any, dt: np.dtype, x: np.ndarray, t: np.ndarray,
                 in_shape: tuple[int, ...] | None) -> None:
        self.net = net
        self.name = type(net).__name__
        self.tnet = to_torch(net, dt)
        n = min(EVAL_PROBE_ROWS, x.shape[0])
        xp = np.array(x[:n], dtype=dt)  # a copy: the data set is never handed to predict()
        self.x = xp.reshape(-1, *in_shape) if in_shape else xp
        self.t = t[:n]
        self.dt = dt
        # twins with state that is not a parameter (BatchNorm's running statistics)
        self.has_buffers = any(twin.buffer_map for twin in self.tnet.twins)
        self.before: tuple[int, Any, np.ndarray] | None = None  # (step, net copy, batch)
        self.after: tuple[int, dict[str, np.ndarray]] | None = None  # (step, buffers)

    def remember(self, step: int, batch: np.ndarray) -> None:
        """Keep a copy of the net as NumPy's step ``step`` starts (and the step's batch), for
        the replay of its running statistics update in free mode."""
        if self.has_buffers:
            from harness.check import clone

            # only what the twin is built from (one copy: shared arrays stay shared), not
            # whatever else the net holds (a data set kept as an attribute, say)
            parts = {k: v for k, v in vars(self.net).items()
                     if k in ("params", "layers", "last_layer", "lastLayer",
                              "weight_decay_lambda")}
            work = copy.copy(self.net)
            work.__dict__.update(clone(parts, self.name))
            self.before = (step, work, batch.copy())  # as it was before NumPy's step

    def stepped(self, step: int) -> None:
        """Keep NumPy's running statistics right after step ``step`` (the evaluation that
        follows may change them if ``predict`` is wrong: that is judged on its own)."""
        if self.has_buffers:
            self.after = (step, {k: np.array(v, copy=True)
                                 for k, v in net_buffers(self.tnet, "numpy").items()})

    def check(self, step: int, t_side: TorchSide | None, lockstep: bool) -> list[TensorResult]:
        state = self._state()
        out = [self._output(step)]
        changed = self._state_change(step, state)
        if changed is not None:
            out.append(changed)
        acc = self._accuracy(step)
        if acc is not None:
            out.append(acc)
        out += self._buffers(step, t_side if lockstep else None)
        return out

    def _state(self) -> dict[str, np.ndarray]:
        state = {k: np.array(v, copy=True) for k, v in self.net.params.items()}
        state.update({k: np.array(v, copy=True)
                      for k, v in net_buffers(self.tnet, "numpy").items()})
        return state

    def _state_change(self, step: int, before: dict[str, np.ndarray]) -> TensorResult | None:
        """A FAIL naming the first array that ``predict`` (evaluation mode) changed."""
        after = self._state()
        for key, old in before.items():
            new = after.get(key)
            if new is not None and new.shape == old.shape and np.array_equal(
                    new, old, equal_nan=old.dtype.kind in "fc" and new.dtype.kind in "fc"):
                continue
            what = "running statistics" if "." in key else "weights"
            if new is None or new.shape != old.shape:
                detail = (f"from shape {old.shape} to "
                          f"{'nothing' if new is None else new.shape}")
            else:
                with np.errstate(invalid="ignore"):
                    d = np.abs(new.astype(np.float64) - old.astype(np.float64))
                bad = ~(d == 0) & ~(np.isnan(new) & np.isnan(old))
                d = np.where(np.isnan(d), np.inf, d)  # NaN on one side: the largest change
                i = np.unravel_index(int(np.argmax(np.where(bad, d, -1))), d.shape)
                detail = (f"{int(bad.sum())} of {d.size} values, greatest change "
                          f"{float(d[i]):.3g} at index {tuple(int(j) for j in i)}")
            return TensorResult(
                layer=self.name, tensor=f"{key} (step {step}, evaluation)", status="FAIL",
                dtype=self.dt.name, shape=old.shape, total=int(old.size),
                message=f"{self.name}.predict() in evaluation mode changed {key} ({detail}): "
                        f"evaluation must leave the {what} as they are"
                        + (" (a BatchNorm that updates its running statistics when train_flg "
                           "is False?)" if what == "running statistics" else ""),
                extra={"check": "eval state", "step": step})
        return None

    def _output(self, step: int) -> TensorResult:
        self._pred = None
        blown = [k for k, v in self.net.params.items() if not np.isfinite(v).all()]
        if blown:  # both sides compute with the same NaN/Inf weights: nothing to compare
            return TensorResult(layer=self.name, tensor=f"eval output (step {step})",
                                status="VACUOUS", dtype=self.dt.name,
                                message=f"the weights are NaN/Inf ({', '.join(blown)}): "
                                        "nothing compared",
                                extra={"check": "eval output", "step": step})
        load_from_scratch(self.tnet, self.net)
        self.tnet.eval()
        try:
            with torch.no_grad():
                expected = self.tnet.forward(torch.from_numpy(self.x), inject=False).numpy()
        finally:
            self.tnet.train()
        try:
            actual = self.net.predict(self.x)
        except Exception as exc:
            raise RuntimeError(f"step {step}: evaluating the NumPy net: {self.name}.predict() on "
                               f"{self.x.shape[0]} test images {self.x.shape} raised "
                               f"{type(exc).__name__}: {exc}") from exc
        self._pred = np.asarray(actual)
        huge = float(np.sqrt(np.finfo(self.dt).max))
        with np.errstate(invalid="ignore"):
            blew_up = not np.isfinite(expected).all() or float(np.abs(expected).max()) > huge
        if blew_up:  # PyTorch's own output overflows: the run has blown up, not the code
            return TensorResult(layer=self.name, tensor=f"eval output (step {step})",
                                status="VACUOUS", dtype=self.dt.name, shape=expected.shape,
                                message=f"PyTorch's output is NaN/Inf or beyond {huge:.3g} (the "
                                        "weights have blown up): nothing compared",
                                extra={"check": "eval output", "step": step})
        r = compare(actual, expected, tensor=f"eval output (step {step})", layer=self.name,
                    dtype=self.dt)
        r.extra.update(check="eval output", step=step, input_shape=list(self.x.shape))
        if r.status != "PASS" and not r.message:
            r.message = (f"{self.name}.predict() in evaluation mode differs from the torch twin "
                         f"with the same weights and running statistics, on the first "
                         f"{self.x.shape[0]} test images")
        return r

    def _accuracy(self, step: int) -> TensorResult | None:
        fn = getattr(self.net, "accuracy", None)
        if not callable(fn) or self._pred is None or self._pred.ndim != 2:
            return None
        r = check_accuracy(fn, self.x, self.t, self._pred, layer=self.name,
                           tensor=f"accuracy (step {step})",
                           extra={"check": "net.accuracy", "step": step})
        if r.message:
            r.message = f"{self.name}.{r.message.replace('these', 'the first', 1)}".replace(
                " rows ", " test images ", 1)
        return r

    def _buffers(self, step: int, t_side: TorchSide | None) -> list[TensorResult]:
        """NumPy's running statistics after step ``step`` against PyTorch's after the same
        update from the same state: ``t_side``'s (lockstep), else a replay of the step from
        the state :meth:`remember` kept."""
        if self.after is not None and self.after[0] == step:
            ours = self.after[1]
        else:
            ours = net_buffers(self.tnet, "numpy")
        if not ours:
            return []
        if t_side is not None:  # lockstep: the torch side started the step from NumPy's state
            theirs = net_buffers(t_side.tnet, "torch")
        elif self.before is not None and self.before[0] == step:
            # replay the step's forward pass on a twin built from NumPy's state before it
            # (state not set yet, e.g. running statistics of None, starts as the twin's
            # defaults, as the torch side's did); Dropout twins take the step's masks, which
            # the copy holds
            _, net_before, batch = self.before
            self.before = None
            replay = to_torch(net_before, self.dt)
            with torch.no_grad():
                replay.forward(torch.from_numpy(batch), inject=False)
            theirs = net_buffers(replay, "torch")
        else:
            return []
        out = []
        for key, value in ours.items():
            r = compare(value, theirs[key], tensor=f"{key} (step {step})", layer=self.name,
                        dtype=self.dt)
            r.extra["check"] = "running statistics"
            r.extra["step"] = step
            if r.status != "PASS" and not r.message:
                r.message = (f"{key} after step {step} differs from PyTorch's after the same "
                             f"update from the same state")
            out.append(r)
        return out


def _evaluate(result: TrainResult, step: int, ipe: float, np_side: NumpySide | None,
              t_side: TorchSide | None, x_train: np.ndarray, t_train: np.ndarray,
              x_test: np.ndarray, t_test: np.ndarray, dt: np.dtype,
              in_shape: tuple[int, ...] | None, chunk: int,
              threads: dict[str, int | None] | None = None) -> EvalRecord:
    """Accuracy of both sides (:func:`_side_accuracy`), one framework after the other.

    Not chunk by chunk: with ``threads`` (framework -> thread count, the libraries' own
    counts outside the trainer's limit) each side's large products use every core while the
    other library's pool is on one thread, so the two pools never run at the same time
    (docs/benchmarks.md)."""
    from harness.threads import limit_threads

    # torch first: OpenBLAS's workers spin for a while after NumPy's last product (~0.1 s)
    # and would hold the core PyTorch's second thread needs; PyTorch's OpenMP team goes to
    # sleep within milliseconds.
    sides = [s for s in (t_side, np_side) if s is not None]
    accs: dict[str, dict[str, float]] = {"train": {}, "test": {}}
    for side in sides:
        f = side.framework
        n = (threads or {}).get(f)
        ctx = (limit_threads(numpy=n if f == "numpy" else 1, torch=n if f == "torch" else 1)
               if n else contextlib.nullcontext())
        t0 = time.perf_counter()
        with ctx:
            accs["train"][f], accs["test"][f] = _side_accuracy(side, x_train, t_train, x_test,
                                                               t_test, dt, in_shape, chunk)
        result.timings[f"{f}_eval"] += time.perf_counter() - t0
    accs = {w: {f: a[f] for f in FRAMEWORKS if f in a} for w, a in accs.items()}  # numpy first
    return EvalRecord(step=step, epoch=int(step // ipe), train_acc=accs["train"],
                      test_acc=accs["test"])


# ---------------------------------------------------------------------------------------
# Divergence analysis


@dataclass
class TensorSummary:
    """One tensor over the whole run (NumPy vs PyTorch in the run's dtype)."""

    name: str
    max_abs: float
    max_abs_step: int
    max_abs_index: tuple[int, ...]
    max_rel: float
    judged_steps: int
    exceeded_steps: int
    first_step: int | None
    first_index: tuple[int, ...] | None
    max_ratio: float  # largest gap / limit-unit (float32: gap / noise floor; float64: gap / limit)
    max_ratio_step: int | None
    floor_numpy: float | None = None  # float32: the largest float32-vs-float64 gap, numpy
    floor_torch: float | None = None
    shadow_gap: float | None = None  # float64 shadows: numpy vs torch
    unjudged_max_abs: float | None = None  # after the shadow window
    nonfinite_step: int | None = None  # first step with a NaN/Inf on one side only (or unlike)
    floor_asymmetry: float | None = None  # float32: typical numpy/torch noise-floor ratio (>= 1)
    floor_asymmetry_side: str | None = None  # the framework with the larger floor


@dataclass
class NonFinite:
    """The first NaN/Inf of the run: where, on which side, and what the other side had."""

    step: int
    tensor: str
    side: str
    """'numpy' or 'torch' (that side only), 'both' (both alike: same elements, same kind),
    'both-unlike' (both, at different elements or of different kinds), 'difference' (both
    finite, the difference overflows)."""
    index: tuple[int, ...]
    numpy_value: float
    torch_value: float


@dataclass
class Analysis:
    agree: bool | None
    criterion: str
    mode: str
    dtype: str
    judged_steps: int
    first_step: int | None
    first_tensor: str | None
    first_index: tuple[int, ...] | None
    first_abs: float | None
    first_limit: float | None
    first_ratio: float | None
    tensors: dict[str, TensorSummary]
    shadow_ok: bool | None
    shadow_first: tuple[int, str] | None
    verdict: str
    nonfinite: NonFinite | None = None
    """The first NaN/Inf (either side), if any; a one-sided one is a disagreement."""
    stopped_at: int | None = None
    """Both runs turned non-finite alike at this step: nothing after it is judged."""
    floor_asymmetry: dict[str, Any] | None = None
    """float32: the tensor where NumPy's noise floor is typically the most times PyTorch's
    (see :func:`floor_asymmetry`): tensor, ratio, side, steps, the limits, failed; None when
    NumPy's floor is nowhere the larger."""
    warnings: list[str] = field(default_factory=list)
    eval_failure: dict[str, Any] | None = None
    """The first evaluation check that failed (:class:`EvalProbe`): step, check, tensor,
    message (its full report: the run report's evaluation rows); a disagreement."""
    hint: str | None = None
    """Free mode, a disagreement, and the training itself unstable (:func:`instability`):
    chaotic training amplifies rounding differences; ``--mode lockstep`` tells a bug from
    chaos. Part of the verdict; the exit code stays that of the disagreement."""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return _jsonable(d)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return v if math.isfinite(v) else str(v)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def _limits(result: TrainResult, name: str, loss_atol: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-step limit and the unit of the ratio (float64: the limit; float32: the floor);
    NaN where a step is not judged."""
    tr = result.diffs[name]
    n = tr.abs.shape[0]
    if result.dtype == np.float64:
        tol = DEFAULT_TOLERANCES["float64"]
        lim = np.full(n, loss_atol) if name == "loss" else tol.atol * tr.scale + tol.rtol * tr.ref
        lim = lim * float64_factor(result.config.mode, np.arange(n))
        return np.where(tr.recorded, lim, np.nan), np.where(tr.recorded, lim, np.nan)
    k = result.config.shadow_steps
    unit = np.full(n, np.nan)
    if k:
        fn, ft = result.floors["numpy"][name], result.floors["torch"][name]
        floor = np.maximum(np.maximum(fn.abs, ft.abs), EPS32 * tr.scale)
        ok = tr.recorded & fn.recorded & ft.recorded
        unit = np.where(ok, floor, np.nan)
        unit[k:] = np.nan
    tol = DEFAULT_TOLERANCES["float64"]
    lim = NOISE_RATIO_LIMIT * (1 + ROUNDING_OF_DIFF) * unit + (tol.atol + tol.rtol) * tr.scale
    return lim, unit


def judge_order(result: TrainResult) -> list[str]:
    """The compared tensors in the order an error reaches them within one step: the loss
    (forward), then the gradients in backward order (the layer closest to the loss first),
    then the parameters after the update (same order). Of two tensors that part at the same
    step, the one earlier here is named: for a backward-pass bug, the first wrong gradient
    below the layers whose gradients still agree."""
    if not result.backward_keys:
        return list(result.tensor_order)
    present = set(result.tensor_order)
    bk = result.backward_keys
    order = ["loss"] + [f"d{k}" for k in bk if f"d{k}" in present] + [k for k in bk if k in present]
    return order + [k for k in result.tensor_order if k not in order]


_NF_SIDE = {NF_A: "numpy", NF_B: "torch", NF_BOTH_ALIKE: "both", NF_BOTH_UNLIKE: "both-unlike",
            NF_OVERFLOW: "difference"}


def _nonfinite_codes(tr: Trace) -> np.ndarray:
    n = tr.abs.shape[0]
    return tr.nonfinite if tr.nonfinite.shape[0] == n else np.zeros(n, dtype=np.int8)


def find_nonfinite(result: TrainResult, order: Sequence[str] | None = None) -> NonFinite | None:
    """The first step (and, within it, the first tensor in :func:`judge_order`) where either
    side holds a NaN/Inf in a compared tensor. When the first one is on both sides alike,
    every tensor of that step is checked: a one-sided or unlike one there wins."""
    order = list(order or judge_order(result))
    hits: list[tuple[int, int, str]] = []
    for pos, name in enumerate(order):
        tr = result.diffs[name]
        m = tr.recorded & (_nonfinite_codes(tr) != NF_NONE)
        if m.any():
            hits.append((int(np.argmax(m)), pos, name))
    if not hits:
        return None
    step = min(hits)[0]
    at_step = sorted(h for h in hits if h[0] == step)
    chosen = at_step[0]
    for h in at_step:
        if result.diffs[h[2]].nonfinite[step] != NF_BOTH_ALIKE:
            chosen = h
            break
    name = chosen[2]
    tr = result.diffs[name]
    i, a, b = tr.nf_info.get(step, (0, math.nan, math.nan))
    index = tuple(int(j) for j in np.unravel_index(i, tr.shape)) if tr.shape else ()
    return NonFinite(step=step, tensor=name, side=_NF_SIDE[int(tr.nonfinite[step])],
                     index=index, numpy_value=a, torch_value=b)


FLOOR_ASYMMETRY_LIMIT = 10.0
"""float32: a WARNING when NumPy's noise floor is typically this many times PyTorch's (see
:func:`floor_asymmetry`): the scratch code's float32 path loses precision PyTorch's does not.
Correct code, 76 runs on MNIST and Fashion-MNIST (docs/training.md): NumPy's floor at most
5.8x PyTorch's in free mode (AdaGrad), 1.7x in lockstep; a float16 product in one Affine:
17x to 5,600x. Only NumPy's side is judged: PyTorch is the reference, and its floor is
legitimately the larger one in places (up to 9.6x: a convolution's bias gradient, summed
over batch x height x width in one float32 pass)."""
FLOOR_ASYMMETRY_FAIL_LOCKSTEP = 30.0
"""float32 lockstep: NumPy's floor typically this many times PyTorch's is a failure
(DISAGREE), not only a warning. In lockstep each floor is one step's rounding from identical
weights, so a ratio at the median step cannot be a ReLU-kink spike; correct code stays
within 1.7x (18x below), a float16 product in one Affine gives 49x (40 steps) to 3,200x."""
FREE_ASYMMETRY_STEPS = 50
"""Free mode judges the floor asymmetry over the first this many steps only: later, a ReLU
kink that one framework's float32 run takes differently from its float64 shadow moves that
run onto another trajectory for good, which raises its floor alone (measured: up to 1e6x
in one tensor, for correct code)."""


def floor_asymmetry(result: TrainResult, judged: Sequence[int] | None = None
                    ) -> dict[str, dict[str, Any]]:
    """float32, per tensor: the typical ratio of the two frameworks' noise floors.

    Per step, ``r = max(floor_numpy, eps32 * scale) / max(floor_torch, eps32 * scale)``; the
    typical ratio is ``10 ** median(log10 r)`` over the steps of the window: every judged step
    in lockstep (where each floor is one step's rounding: a ReLU-kink flip is a spike at one
    step, which the median ignores), the first :data:`FREE_ASYMMETRY_STEPS` in free mode. Returns
    name -> {'ratio' (>= 1), 'side' (the framework with the larger floor), 'steps'}."""
    out: dict[str, dict[str, Any]] = {}
    if result.dtype != np.float32 or not result.floors:
        return out
    k = result.config.shadow_steps
    if result.config.mode == "free":
        k = min(k, FREE_ASYMMETRY_STEPS)
    for name in result.tensor_order:
        fn, ft = result.floors["numpy"][name], result.floors["torch"][name]
        tr = result.diffs[name]
        m = fn.recorded & ft.recorded & tr.recorded
        m[k:] = False
        if judged is not None and len(judged) == m.shape[0]:
            m &= np.asarray(judged, dtype=bool)
        e = EPS32 * tr.scale
        with np.errstate(divide="ignore", invalid="ignore"):
            lr = np.log10(np.maximum(fn.abs, e) / np.maximum(ft.abs, e))
        m &= np.isfinite(lr)
        if not m.any():
            continue
        med = float(np.median(lr[m]))
        out[name] = {"ratio": 10.0 ** abs(med), "side": "numpy" if med > 0 else "torch",
                     "steps": int(m.sum())}
    return out


def analyse(result: TrainResult, *, loss_atol: float = LOSS_ATOL_FLOAT64) -> Analysis:
    """Where, when and by how much the NumPy and PyTorch runs part; a verdict with numbers.

    Besides the limits (float64 tolerance, float32 noise floor), a NaN/Inf is judged on its
    own, at every recorded step (inside the shadow window or not): a NaN/Inf on one side only,
    or on both at different elements, or a difference that overflows, is a disagreement at
    the step where it first appears. NaN/Inf on both sides at exactly the same elements, of
    the same kind, in every tensor compared at that step, is the same behaviour (both runs
    blew up alike, e.g. a learning rate too large for both): it does not count as a
    difference, and nothing after that step is judged (every later value is NaN on both)."""
    cfg = result.config
    if not result.both:
        return Analysis(None, "none", cfg.mode, cfg.dtype, 0, None, None, None, None, None, None,
                        {}, None, None,
                        f"NOT COMPARED: only {cfg.frameworks[0]} ran: nothing to compare "
                        f"(final test accuracy {_final_acc(result, cfg.frameworks[0])}).")
    f32 = result.dtype == np.float32
    criterion = ("float32 noise floor (float64 shadows, triangle bound 2x)" if f32
                 else f"float64 tolerance (|loss diff| <= {loss_atol:g}; "
                      f"rtol={DEFAULT_TOLERANCES['float64'].rtol:g}, "
                      f"atol={DEFAULT_TOLERANCES['float64'].atol:g} x max|torch|"
                      + (f"; x{FLOAT64_FREE_LATE_FACTOR:g} from step {FLOAT64_FREE_STRICT_STEPS}"
                         " on: free runs amplify rounding" if cfg.mode == "free"
                         and cfg.iters > FLOAT64_FREE_STRICT_STEPS else "") + ")")
    order = judge_order(result)
    nf = find_nonfinite(result, order)
    stopped_at = nf.step if nf is not None and nf.side == "both" else None
    n = cfg.iters
    alive = np.ones(n, dtype=bool)
    if stopped_at is not None:
        alive[stopped_at:] = False  # the step itself: judged by its NaN/Inf (alike) only
    tensors: dict[str, TensorSummary] = {}
    first: tuple[int, int, str] | None = None
    judged_any = 0
    judged_mask = np.zeros(n, dtype=bool)
    for pos, name in enumerate(order):
        tr = result.diffs[name]
        codes = _nonfinite_codes(tr)
        lim, unit = _limits(result, name, loss_atol)
        finite = codes == NF_NONE
        judged = ~np.isnan(lim) & finite & alive
        bad_nf = tr.recorded & ~finite & (codes != NF_BOTH_ALIKE)
        if stopped_at is not None:
            bad_nf[stopped_at + 1:] = False
        exceed = (judged & ~(tr.abs <= lim)) | bad_nf
        judged_all = judged | bad_nf
        if stopped_at is not None and tr.recorded[stopped_at]:
            judged_all[stopped_at] = True
        judged_mask |= judged_all
        # NaN/Inf alike on both sides (a run that blew up the same way) is not a difference
        counted = tr.recorded & (codes != NF_BOTH_ALIKE)
        absv = np.where(counted, tr.abs, -np.inf)
        absv = np.where(np.isnan(absv), np.inf, absv)
        s_max = int(np.argmax(absv)) if counted.any() else 0
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(judged, tr.abs / unit, np.nan)
        ratio = np.where(judged & np.isnan(ratio) & ~(tr.abs <= lim), np.inf, ratio)
        ratio = np.where(judged & (unit == 0) & (tr.abs == 0), 0.0, ratio)
        ratio = np.where(bad_nf, np.inf, ratio)
        r_step = int(np.nanargmax(ratio)) if np.any(~np.isnan(ratio)) else None
        fs = int(np.argmax(exceed)) if exceed.any() else None
        ts = TensorSummary(
            name=name, max_abs=float(tr.abs[s_max]) if counted.any() else 0.0,
            max_abs_step=s_max, max_abs_index=tr.index_at(s_max),
            max_rel=float(np.nanmax(np.where(counted & finite, tr.rel, np.nan)))
            if (counted & finite).any() else (math.nan if counted.any() else 0.0),
            judged_steps=int(judged_all.sum()), exceeded_steps=int(exceed.sum()),
            first_step=fs, first_index=tr.index_at(fs) if fs is not None else None,
            max_ratio=float(ratio[r_step]) if r_step is not None else math.nan,
            max_ratio_step=r_step,
            nonfinite_step=int(np.argmax(bad_nf)) if bad_nf.any() else None)
        if fs is not None and bad_nf[fs] and tr.shape:
            i = tr.nf_info.get(fs, (-1,))[0]
            ts.first_index = tuple(int(j) for j in np.unravel_index(i, tr.shape)) if i >= 0 \
                else ts.first_index
        judged_any = max(judged_any, ts.judged_steps)
        if f32 and result.floors:
            fn, ft = result.floors["numpy"][name], result.floors["torch"][name]
            sg = result.shadow_gap[name]
            ts.floor_numpy, ts.floor_torch, ts.shadow_gap = (
                _finite_max(t.abs[t.recorded]) if t.recorded.any() else None for t in (fn, ft, sg))
        if f32:
            after = tr.recorded & np.isnan(lim) & finite & alive
            ts.unjudged_max_abs = float(np.nanmax(tr.abs[after])) if after.any() else None
        tensors[name] = ts
        if fs is not None and (first is None or (fs, pos) < first[:2]):
            first = (fs, pos, name)
    tensors = {name: tensors[name] for name in result.tensor_order if name in tensors}

    # the float64 shadows must agree with each other (float64 tolerance); NaN/Inf alike on
    # both (lockstep copies NumPy's non-finite weights into both shadows) is no disagreement
    shadow_ok: bool | None = None
    shadow_first: tuple[int, str] | None = None
    if f32 and result.shadow_gap:
        shadow_ok = True
        tol = DEFAULT_TOLERANCES["float64"]
        best: tuple[int, int, str] | None = None
        for pos, name in enumerate(order):
            sg = result.shadow_gap[name]
            lim = np.full_like(sg.abs, loss_atol) if name == "loss" else \
                tol.atol * sg.scale + tol.rtol * sg.ref
            bad = sg.recorded & ~(sg.abs <= lim) & (_nonfinite_codes(sg) != NF_BOTH_ALIKE)
            if stopped_at is not None:  # the float32 runs are over: nothing more is judged
                bad[stopped_at:] = False
            if bad.any():
                shadow_ok = False
                s = int(np.argmax(bad))
                if best is None or (s, pos) < best[:2]:
                    best = (s, pos, name)
        shadow_first = (best[0], best[2]) if best else None

    # float32: does one framework's float32 path lose precision the other's does not?
    asym = floor_asymmetry(result, judged_mask) if f32 else {}
    for name, a in asym.items():
        tensors[name].floor_asymmetry = a["ratio"]
        tensors[name].floor_asymmetry_side = a["side"]
    # only NumPy's side is judged: PyTorch is the reference (see FLOOR_ASYMMETRY_LIMIT)
    worst_asym = max(((k, a) for k, a in asym.items() if a["side"] == "numpy"),
                     key=lambda kv: kv[1]["ratio"], default=None)

    fa = first is not None
    asym_fail = (cfg.mode == "lockstep" and worst_asym is not None
                 and worst_asym[1]["ratio"] >= FLOOR_ASYMMETRY_FAIL_LOCKSTEP)
    bad_eval = next((r for r in result.eval_checks if r.status in ("FAIL", "ERROR") and (
        stopped_at is None or r.extra.get("step", 0) < stopped_at)), None)
    agree: bool | None
    if judged_any == 0:
        agree = None if bad_eval is None else False
    else:
        agree = not fa and shadow_ok is not False and not asym_fail and bad_eval is None
    an = Analysis(
        agree=agree, criterion=criterion, mode=cfg.mode, dtype=cfg.dtype, judged_steps=judged_any,
        first_step=first[0] if fa else None, first_tensor=first[2] if fa else None,
        first_index=tensors[first[2]].first_index if fa else None,
        first_abs=float(result.diffs[first[2]].abs[first[0]]) if fa else None,
        first_limit=None, first_ratio=None, tensors=tensors, shadow_ok=shadow_ok,
        shadow_first=shadow_first, verdict="", nonfinite=nf, stopped_at=stopped_at)
    if bad_eval is not None:
        an.eval_failure = {"step": bad_eval.extra.get("step"), "check": bad_eval.extra.get("check"),
                           "tensor": bad_eval.name, "message": _eval_text(bad_eval)}
    if worst_asym is not None:
        an.floor_asymmetry = {"tensor": worst_asym[0], **worst_asym[1],
                              "warn_limit": FLOOR_ASYMMETRY_LIMIT,
                              "fail_limit": FLOOR_ASYMMETRY_FAIL_LOCKSTEP
                              if cfg.mode == "lockstep" else None,
                              "failed": asym_fail}
    if fa:
        lim, unit = _limits(result, first[2], loss_atol)
        an.first_limit = float(lim[first[0]])
        u = float(unit[first[0]])
        if not math.isfinite(an.first_abs):
            an.first_ratio = math.inf
        else:
            an.first_ratio = an.first_abs / u if u > 0 else math.inf
    an.warnings = _warnings(result, an)
    hints = [h for h in (_loss_term_hint(result, an), _optimizer_hint(result, an),
                         _chaos_hint(result, an)) if h]
    an.hint = " ".join(hints) or None
    an.verdict = _verdict_text(result, an)
    return an


UNSTABLE_END_RATIO = 1.0
"""The loss over the last steps above this many times the first step's loss: unstable."""
UNSTABLE_PEAK_RATIO = 1.5
"""A loss peak above this many times the first step's loss: unstable. Stable runs of the
classic net stay below the first step's loss (2.30 on MNIST; every optimizer at its default
lr); Adam at lr 0.1 jumps to 4.15 at step 2 (1.8x), RMSprop at lr 0.1 to 14.3 at step 1, at
lr 0.01 to 5.7 (that one agrees in float64 over 600 steps: the hint is only given with a
disagreement)."""


def instability(result: TrainResult) -> dict[str, Any] | None:
    """Whether the training itself is unstable, on either side: its loss ends above where it
    started (the mean of the last tenth of the steps, at most 100, above the first step's
    loss), peaks above :data:`UNSTABLE_PEAK_RATIO` times it, or turns non-finite. The
    first such framework, with its start, end and peak losses; None for a stable run."""
    for f in result.frameworks:
        loss = np.asarray(result.loss[f], dtype=np.float64)
        if loss.size < 2 or not math.isfinite(loss[0]) or loss[0] <= 0:
            continue
        k = max(1, min(100, loss.size // 10))
        finite = np.isfinite(loss)
        end = float(np.mean(loss[-k:])) if finite[-k:].all() else math.inf
        peak_step = int(np.argmax(np.where(finite, loss, np.inf)))
        peak = float(loss[peak_step])
        start = float(loss[0])
        if end > UNSTABLE_END_RATIO * start or not (peak <= UNSTABLE_PEAK_RATIO * start):
            return {"framework": f, "start": start, "end": end, "last_steps": k,
                    "peak": peak, "peak_step": peak_step}
    return None


def _loss_term_hint(result: TrainResult, an: Analysis) -> str | None:
    """The runs part at step 0 in the loss, by the same amount on two batches: the net's
    loss has a term of the weights alone that the twin does not know, or not as the twin
    has it (:func:`weights_term`)."""
    lt = result.loss_term
    if lt is None or an.agree is not False or an.first_step != 0 or an.first_tensor != "loss":
        return None
    d, lam = lt["batch0"], lt.get("weight_decay_lambda")
    if lam:
        return (f"HINT: the net's loss differs from the twin's by a term of the weights alone "
                f"({d:.6g} on two batches): the twin adds 0.5 * weight_decay_lambda * "
                f"sum(W**2) with the net's weight_decay_lambda={lam:g}; does loss() add "
                "exactly that?")
    return (f"HINT: the net's loss adds a term of the weights alone that the twin does not "
            f"know ({d:.6g} on two batches): weight decay stored as something other than "
            "weight_decay_lambda? The twin adds 0.5 * weight_decay_lambda * sum(W**2) (over "
            "the weights named W...) when the net has a weight_decay_lambda attribute.")


def _nesterov_form(opt: Any) -> str:
    """'book' when ``opt`` is a Nesterov in the book's form (see TrainConfig.optimizer_form)."""
    if isinstance(opt, str):
        return ""  # the named optimizers use torch's forms
    try:
        from reference.optimizers import classic_for, like_classic, optimizer_registration
        from scratch.optimizers import Nesterov
    except ImportError:
        return ""
    if optimizer_registration(type(opt)) is not None:
        return ""
    classic, _ = classic_for(type(opt))
    if classic is not Nesterov:
        return ""
    like = opt if isinstance(opt, Nesterov) else like_classic(opt, Nesterov)[0]
    return "book" if getattr(like, "form", "") == "book" else ""


def _optimizer_hint(result: TrainResult, an: Analysis) -> str | None:
    if an.agree is not False or an.first_step is None or result.config.optimizer_form != "book":
        return None
    return ("HINT: the optimizer is Nesterov in the book's form (form='book'), which steps "
            "with the updated velocity: by design another optimizer than torch's "
            "SGD(nesterov=True), from its first update on, so the runs part even for correct "
            "code. Nesterov(form='bengio') (the paper's formula, equal while lr is constant) or "
            "form='torch' is torch's; docs/conventions.md.")


def _chaos_hint(result: TrainResult, an: Analysis) -> str | None:
    if result.config.mode != "free" or an.agree is not False:
        return None
    ins = instability(result)
    if ins is None:
        return None
    return (f"HINT: the training itself is unstable ({_side_name(ins['framework'])}'s loss "
            f"{ins['start']:.3g} at step 0, {ins['end']:.3g} over the last {ins['last_steps']} "
            f"steps, peak {ins['peak']:.3g} at step {ins['peak_step']}): chaotic training "
            "amplifies rounding differences until free-running runs part, even for correct "
            "code. Run --mode lockstep (PyTorch re-synchronised to NumPy's weights before "
            "every step) to tell a code bug from chaos, or lower --lr.")


def _finite_max(a: np.ndarray) -> float:
    """The largest value that is not NaN (NaN where there is none): no All-NaN warning."""
    a = a[~np.isnan(a)]
    return float(a.max()) if a.size else math.nan


def _side_name(f: str) -> str:
    return {"numpy": "NumPy", "torch": "PyTorch"}.get(f, f)


def _warnings(result: TrainResult, an: Analysis) -> list[str]:
    out = []
    fa = an.floor_asymmetry
    blown = an.nonfinite is not None and an.nonfinite.side != "both"
    if fa is not None and fa["ratio"] >= FLOOR_ASYMMETRY_LIMIT and not blown \
            and not fa["failed"]:
        out.append("WARNING: " + _asymmetry_text(result, an) + " The verdict's noise floor "
                   "absorbs such an error, so it cannot see it: look at the float32 code path "
                   "(a float32-only difference is not a failure in free mode, where a ReLU kink "
                   "taken differently by one float32 run raises its floor for good; run "
                   "--mode lockstep to judge it).")
    if an.stopped_at is not None and an.nonfinite is not None:
        nf = an.nonfinite
        where = _stage(nf.tensor, result) + \
            (f" ({_where(nf.tensor, nf.index)})" if nf.tensor != "loss" else "")
        out.append(f"WARNING: both runs turn non-finite alike at step {an.stopped_at} (first in "
                   f"{where}: NaN/Inf at the same elements, of the same kind, in every tensor "
                   "compared at that step): both frameworks blew up the same way (e.g. a "
                   "learning rate too large for either). Judged up to that step; nothing after "
                   "it is.")
    return out


def _asymmetry_text(result: TrainResult, an: Analysis) -> str:
    fa = an.floor_asymmetry or {}
    ts = an.tensors[fa["tensor"]]
    big, small = fa["side"], "torch" if fa["side"] == "numpy" else "numpy"
    window = ("every judged step" if result.config.mode == "lockstep" else
              f"the first {fa['steps']} steps")
    others = sorted((n for n, t in an.tensors.items() if t.floor_asymmetry is not None
                     and t.floor_asymmetry >= FLOOR_ASYMMETRY_LIMIT and n != fa["tensor"]
                     and t.floor_asymmetry_side == big),
                    key=lambda n: -(an.tensors[n].floor_asymmetry or 0))
    return (f"{_side_name(big)}'s float32 noise floor (its own float32-vs-float64 gap) is "
            f"{fa['ratio']:.3g}x {_side_name(small)}'s in {fa['tensor']} (median over {window}; "
            f"largest: NumPy {ts.floor_numpy:.3g}, PyTorch {ts.floor_torch:.3g})"
            + (f", and {FLOOR_ASYMMETRY_LIMIT:g}x or more in {', '.join(others)}" if others
               else "")
            + f". Correct code stays within a few x (warning at {FLOOR_ASYMMETRY_LIMIT:g}x): "
            f"{_side_name(big)}'s float32 arithmetic loses precision that {_side_name(small)}'s "
            "does not (a float32-only error, e.g. a float16 or other low-precision step).")


def _final_acc(result: TrainResult, f: str) -> str:
    if not result.evals:
        return "n/a"
    return f"{result.evals[-1].test_acc[f]:.4f} at step {result.evals[-1].step}"


def _where(name: str, index: tuple[int, ...] | None) -> str:
    return f"{name}[{', '.join(map(str, index))}]" if index else name


def first_nonfinite(result: TrainResult) -> dict[str, dict[str, Any]]:
    """Per framework, the first step whose loss is NaN/Inf, and the first parameter (in
    judging order) that had already gone non-finite on either side, with its index."""
    out: dict[str, dict[str, Any]] = {}
    for f in result.frameworks:
        bad = ~np.isfinite(result.loss[f])
        if not bad.any():
            continue
        step = int(np.argmax(bad))
        info: dict[str, Any] = {"step": step, "tensor": "loss", "value": float(result.loss[f][step])}
        for name in judge_order(result):
            tr = result.diffs.get(name)
            if name == "loss" or tr is None:
                continue
            hits = tr.recorded[: step + 1] & ~np.isfinite(tr.abs[: step + 1])
            if hits.any():
                s0 = int(np.argmax(hits))
                info.update(param=name, param_step=s0, index=tr.index_at(s0))
                break
        out[f] = info
    return out


def _stage(name: str, result: TrainResult) -> str:
    if name == "loss":
        return "the loss"
    keys = result.backward_keys
    if name.startswith("d") and name[1:] in keys and name not in keys:
        return f"the gradient {name}"
    return f"the parameter {name} after the update"


def _nonfinite_text(result: TrainResult, an: Analysis) -> str:
    nf = an.nonfinite
    if nf is None:
        return ""
    what = _stage(nf.tensor, result)
    if nf.tensor != "loss":
        what += f" ({_where(nf.tensor, nf.index)})"
    lock = result.config.mode == "lockstep"
    if nf.side in ("numpy", "torch"):
        bad, good = nf.side, "torch" if nf.side == "numpy" else "numpy"
        vb = nf.numpy_value if bad == "numpy" else nf.torch_value
        vg = nf.torch_value if bad == "numpy" else nf.numpy_value
        text = (f"DISAGREE: NaN/Inf on the {_side_name(bad)} side only, first at step {nf.step} in "
                f"{what}: {_side_name(bad)} {vb:.6g}, {_side_name(good)} {vg:.6g}. The non-finite "
                f"value first appears in {_side_name(bad)}'s run.")
        if lock and bad == "numpy":
            text += (" (Lockstep copies NumPy's weights into PyTorch before each step, so from "
                     "then on PyTorch's values are non-finite too: that is not PyTorch's doing.)")
    elif nf.side == "both-unlike":
        text = (f"DISAGREE: both sides turn non-finite at step {nf.step} in {what}, but at "
                f"different elements or of a different kind (NumPy {nf.numpy_value:.6g}, "
                f"PyTorch {nf.torch_value:.6g} at that element).")
    elif nf.side == "difference":
        text = (f"DISAGREE: at step {nf.step} the difference in {what} overflows (NumPy "
                f"{nf.numpy_value:.6g}, PyTorch {nf.torch_value:.6g}).")
    else:  # both alike: said by the warning
        return ""
    found = first_nonfinite(result)
    if lock and nf.side in ("numpy", "torch"):  # the other side's NaN loss is inherited
        found = {f: v for f, v in found.items() if f == nf.side}
    if found:
        text += " Non-finite loss: " + "; ".join(
            f"{_side_name(f)} from step {v['step']}" for f, v in found.items()) + "."
    return text


def _verdict_text(result: TrainResult, an: Analysis) -> str:
    nf = an.nonfinite
    if nf is not None and nf.side != "both" and an.first_step == nf.step and \
            an.first_tensor == nf.tensor:
        parts = [_nonfinite_text(result, an)]
        rest = [t.name for t in an.tensors.values()
                if t.first_step is not None and t.name != an.first_tensor]
        if rest:
            parts.append(f"Also beyond the limit or non-finite: {', '.join(rest)}.")
        text = " ".join(parts)
    else:
        body = _verdict_body(result, an)
        pre = _nonfinite_text(result, an)
        if nf is not None and nf.side != "both":  # a NaN/Inf after an earlier difference
            pre = pre.replace("DISAGREE: ", "Later: ", 1)
            text = body + " " + pre
        else:
            text = body + (" " + pre if pre else "")
    return " ".join([text, *([an.hint] if an.hint else []), *an.warnings])


def _eval_text(r: TensorResult) -> str:
    """One line for a failed evaluation check: its message and, for values, the largest
    difference and where."""
    text = r.message.rstrip(".") if r.message else f"{r.name} differs"
    if r.total and r.max_abs_index is not None and r.worst_index is not None:
        text += (f": {r.mismatched} of {r.total} values beyond the tolerance, greatest |diff| "
                 f"{r.max_abs:.3g} at index {r.max_abs_index} ({r.tolerance_text})")
    return text + "."


def _eval_verdict(an: Analysis) -> str:
    ev = an.eval_failure
    assert ev is not None
    what = {"eval output": "the evaluation-mode output disagrees",
            "net.accuracy": "net.accuracy() disagrees",
            "running statistics": "the running statistics disagree",
            "eval state": "evaluation changes the net's state"}.get(ev["check"],
                                                                         f"{ev['check']} disagrees")
    return f"{what} at the evaluation of step {ev['step']}: {ev['message']}"


def _verdict_body(result: TrainResult, an: Analysis) -> str:
    cfg = result.config
    head = f"({cfg.dtype}, {cfg.mode}, {cfg.iters} steps"
    f32 = cfg.dtype == "float32"
    if f32:
        last = an.judged_steps - 1 if an.stopped_at is None else an.stopped_at
        head += f", judged over steps 0-{last} against float64 shadows)" \
            if an.judged_steps else ", no float64 shadows: nothing judged)"
    else:
        head += ")" if an.stopped_at is None else f", judged up to step {an.stopped_at})"
    loss = an.tensors.get("loss")
    if an.eval_failure is not None and an.first_step is None and an.shadow_ok is not False \
            and not (an.floor_asymmetry or {}).get("failed"):
        return (f"DISAGREE {head}: the training steps agree, but "
                + _eval_verdict(an))
    if an.agree is None:
        return (f"NOT JUDGED {head}: float32 needs float64 shadows for its noise floor "
                f"(shadow_steps=0). Max |loss diff| {loss.max_abs:.3g}." if loss else
                f"NOT JUDGED {head}.")
    parts: list[str] = []
    if an.agree:
        if f32:
            worst = max((t for t in an.tensors.values() if not math.isnan(t.max_ratio)),
                        key=lambda t: t.max_ratio, default=None)
            parts.append(f"AGREE within rounding noise {head}: the NumPy-PyTorch gap stays within "
                         f"{NOISE_RATIO_LIMIT:g}x the float32 noise floor (each framework's own "
                         "float32-vs-float64 gap) at every judged step; it is rounding noise.")
            if worst is not None:
                parts.append(f"Largest gap/floor ratio {worst.max_ratio:.2f} ({worst.name}, step "
                             f"{worst.max_ratio_step}).")
            if loss is not None and loss.floor_numpy is not None:
                parts.append(f"Loss: max gap {_judged_max(result, 'loss'):.3g}; noise floor "
                             f"numpy {loss.floor_numpy:.3g}, torch {loss.floor_torch:.3g}.")
            if loss is not None and loss.unjudged_max_abs is not None:
                parts.append(f"After the shadow window (steps {an.judged_steps}-{cfg.iters - 1}, "
                             f"not judged) the free-running loss gap reaches "
                             f"{loss.unjudged_max_abs:.3g} (chaotic float32 drift).")
        else:
            parts.append(f"AGREE {head}: no step exceeds the float64 tolerance.")
            if loss is not None:
                loss_limit = LOSS_ATOL_FLOAT64 * float(float64_factor(cfg.mode,
                                                                      loss.max_abs_step or 0))
                parts.append(f"Max |loss diff| {loss.max_abs:.3g} (step {loss.max_abs_step}, "
                             f"limit {loss_limit:g}).")
            worst = max((t for t in an.tensors.values() if t.name != "loss"),
                        key=lambda t: t.max_rel, default=None)
            if worst is not None:
                parts.append(f"Largest parameter/gradient difference: {worst.name} "
                             f"{worst.max_abs:.3g} (relative {worst.max_rel:.3g}, step "
                             f"{worst.max_abs_step}).")
    else:
        if an.first_step is not None:
            ts = an.tensors[an.first_tensor]
            where = _where(an.first_tensor, an.first_index)
            if f32:
                fl = result.floors
                fn = float(fl["numpy"][an.first_tensor].abs[an.first_step]) if fl else math.nan
                ft = float(fl["torch"][an.first_tensor].abs[an.first_step]) if fl else math.nan
                parts.append(
                    f"DISAGREE {head}: NumPy and PyTorch part at step {an.first_step}, in "
                    f"{where}: |diff| {an.first_abs:.3g} is {an.first_ratio:.3g}x the rounding "
                    f"noise floor (numpy f32-vs-f64 {fn:.3g}, torch f32-vs-f64 {ft:.3g}); "
                    f"rounding can explain at most {NOISE_RATIO_LIMIT:g}x: a real difference.")
            else:
                parts.append(
                    f"DISAGREE {head}: NumPy and PyTorch part at step {an.first_step}, in "
                    f"{where}: |diff| {an.first_abs:.3g} > limit {an.first_limit:.3g} "
                    f"({an.first_ratio:.3g}x).")
            located = _backward_location(result, an)
            if located:
                parts.append(located)
            parts.append(f"{an.first_tensor} exceeds its limit at {ts.exceeded_steps} of "
                         f"{ts.judged_steps} judged steps; largest ratio {ts.max_ratio:.3g} at "
                         f"step {ts.max_ratio_step}.")
            others = [t.name for t in an.tensors.values()
                      if t.first_step is not None and t.name != an.first_tensor]
            if others:
                parts.append(f"Also beyond the limit: {', '.join(others)}.")
        fa = an.floor_asymmetry
        if fa is not None and fa.get("failed"):
            text = _asymmetry_text(result, an)
            if an.first_step is None:
                parts.append(
                    f"DISAGREE {head}: the NumPy-PyTorch gap stays within the noise floor, but "
                    f"the floors themselves part: {text} In lockstep each floor is one step's "
                    f"rounding from identical weights; a ratio of {FLOOR_ASYMMETRY_FAIL_LOCKSTEP:g}x "
                    "or more at the median step is not rounding: a real float32 difference.")
            else:
                parts.append("The float32 noise floors part too: " + text)
        if an.shadow_ok is False and an.shadow_first is not None:
            s, name = an.shadow_first
            sg = result.shadow_gap[name]
            where = f"{_where(name, sg.index_at(s))} at step {s} (|diff| {sg.abs[s]:.3g})"
            if an.first_step is None:
                parts.append(
                    f"DISAGREE {head}: the float32 runs stay within the noise floor, but the "
                    f"float64 shadows (NumPy's and PyTorch's float64 runs from the same weights "
                    f"on the same batches) disagree beyond the float64 tolerance: {where}.")
            else:
                parts.append(f"The float64 shadows disagree too: {where}.")
        if an.eval_failure is not None:
            parts.append("Also: " + _eval_verdict(an))
    return " ".join(parts)


def _backward_location(result: TrainResult, an: Analysis) -> str:
    """For a gradient that parts first: where in the backward pass the error enters (the
    gradients above it, closer to the loss, agree at that step)."""
    name, step = an.first_tensor, an.first_step
    if name is None or step is None or not name.startswith("d") or \
            name[1:] not in result.param_layers:
        return ""
    layers, owner = result.layer_names, result.param_layers[name[1:]]
    grads = [n for n in judge_order(result) if n.startswith("d") and n[1:] in result.param_layers]
    above = grads[:grads.index(name)]
    ok_above = [n for n in above if an.tensors[n].first_step is None
                or an.tensors[n].first_step > step]
    if len(ok_above) != len(above):
        return ""
    text = (f"In backward order (from the loss down) {name} is the first gradient that parts "
            f"at step {step}")
    if not above:
        return text + f": the error enters at or above {owner} (the layer closest to the loss)."
    last_ok = result.param_layers[above[-1][1:]]
    if owner == last_ok:
        return text + (f"; {', '.join(above)} agree: the error enters inside {owner}'s "
                       f"backward (its gradient for {name[1:]}).")
    if owner in layers and last_ok in layers:
        i, j = layers.index(owner), layers.index(last_ok)
        between = layers[i:j + 1]
        return text + (f"; {', '.join(above)} above it agree: the error enters below "
                       f"{last_ok}, at {name} (in the backward pass "
                       f"{' -> '.join(reversed(between))}).")
    return text + f"; {', '.join(above)} above it agree."


def _judged_max(result: TrainResult, name: str) -> float:
    lim, _ = _limits(result, name, LOSS_ATOL_FLOAT64)
    tr = result.diffs[name]
    m = ~np.isnan(lim) & tr.recorded
    return float(np.nanmax(tr.abs[m])) if m.any() else math.nan


# ---------------------------------------------------------------------------------------
# RunReport for the CLI


def snapshot_results(result: TrainResult) -> list[TensorResult]:
    """TensorResults (via :func:`harness.compare.compare`) for the snapshot step's tensors,
    each against the limit it was judged by (float32: 2x the noise floor)."""
    snap = result.snapshot
    if snap is None:
        return []
    out = []
    f32 = result.dtype == np.float32
    for name in result.tensor_order:
        if name not in snap.numpy:
            continue
        limit = snap.limits.get(name, math.nan)
        if f32:
            tol = Tolerance(rtol=0.0, atol=limit if math.isfinite(limit) else 0.0, scaled=False)
        elif name == "loss":
            tol = Tolerance(rtol=0.0, atol=LOSS_ATOL_FLOAT64, scaled=False)
        else:
            tol = DEFAULT_TOLERANCES["float64"]
        r = compare(snap.numpy[name], snap.torch[name], tensor=name, layer=f"step {snap.step}",
                    tol=tol, dtype=result.dtype, vacuous_check=False)
        if f32:
            fl = snap.floors.get(name, {})
            r.tolerance_text = (f"|diff| <= {NOISE_RATIO_LIMIT:g} x noise floor + f64 tol = "
                                f"{limit:.3g} (floor: numpy f32-vs-f64 {fl.get('numpy', math.nan):.3g}"
                                f", torch {fl.get('torch', math.nan):.3g})")
        r.extra["step"] = snap.step
        r.extra["reason"] = snap.reason
        out.append(r)
    return out


def summary_dict(result: TrainResult, an: Analysis) -> dict[str, Any]:
    """The report summary: scalars and small dicts, plus two tables (lists of flat dicts):
    ``evaluations`` (one row per evaluation) and ``divergence`` (one row per tensor). The
    per-step curves go to a CSV file instead (:func:`write_curves`)."""
    cfg = result.config
    fr = result.frameworks
    first, last = (result.evals[0], result.evals[-1]) if result.evals else (None, None)
    summary: dict[str, Any] = {
        "verdict": an.verdict,
        "agree": an.agree,
        "criterion": an.criterion,
        "config": {k: v for k, v in asdict(cfg).items()
                   if k != "optimizer_form" or v},  # the form only where it matters
        "data": result.data,
        # "final" is the last evaluation: with fewer steps than one epoch that is step 0
        "accuracy": {
            f: {"first_test": first.test_acc[f] if first else None,
                "first_step": first.step if first else None,
                "final_train": last.train_acc[f] if last else None,
                "final_test": last.test_acc[f] if last else None,
                "final_step": last.step if last else None}
            for f in fr},
        "timings_s": {k: round(v, 4) for k, v in result.timings.items()},
        "threads": result.threads,
        "evaluations": [
            {"step": e.step, "epoch": e.epoch,
             **{f"{f}_train_acc": e.train_acc[f] for f in fr},
             **{f"{f}_test_acc": e.test_acc[f] for f in fr}} for e in result.evals],
    }
    if result.both:
        summary["warnings"] = list(an.warnings)
        summary["hint"] = an.hint
        summary["nonfinite"] = asdict(an.nonfinite) if an.nonfinite is not None else None
        summary["stopped_at"] = an.stopped_at
        summary["judged_steps"] = an.judged_steps
        summary["first_step_exceeding"] = (
            {"step": an.first_step, "tensor": an.first_tensor,
             "index": list(an.first_index or ()), "abs": an.first_abs, "limit": an.first_limit,
             "ratio": an.first_ratio} if an.first_step is not None else None)
        summary["max_abs_diff"] = {k: t.max_abs for k, t in an.tensors.items()}
        summary["final_param_diff"] = result.final_diff
        summary["eval_checks"] = {
            "run": len(result.eval_checks),
            "failed": sum(r.status in ("FAIL", "ERROR") for r in result.eval_checks),
            "not_compared": [f"{r.name}: {r.message}" for r in result.eval_checks
                             if r.status == "VACUOUS"][:5],
            "kinds": sorted({str(r.extra.get("check")) for r in result.eval_checks}),
            "first_failure": an.eval_failure}
        if result.dtype == np.float32:
            summary["ratio_to_noise_floor"] = {k: t.max_ratio for k, t in an.tensors.items()}
            summary["shadow_float64_agree"] = an.shadow_ok
            summary["floor_asymmetry"] = an.floor_asymmetry
        summary["divergence"] = [
            {"tensor": t.name, "max_abs": t.max_abs, "max_abs_step": t.max_abs_step,
             "max_abs_index": list(t.max_abs_index), "max_rel": t.max_rel,
             "judged_steps": t.judged_steps, "exceeded_steps": t.exceeded_steps,
             "first_step": t.first_step,
             "first_index": list(t.first_index) if t.first_index is not None else None,
             "max_ratio": t.max_ratio, "floor_numpy": t.floor_numpy,
             "floor_torch": t.floor_torch, "shadow_gap_float64": t.shadow_gap,
             "max_abs_after_window": t.unjudged_max_abs,
             "first_nonfinite_step": t.nonfinite_step,
             "floor_asymmetry": t.floor_asymmetry, "floor_asymmetry_side": t.floor_asymmetry_side,
             "status": "PASS" if t.first_step is None else "FAIL"}
            for t in an.tensors.values()]
    out = _jsonable(summary)
    # nested values read as text in the Markdown and HTML reports (still dicts in the JSON)
    return {k: ReadableDict(v) if isinstance(v, dict) else v for k, v in out.items()}


def readable(v: Any) -> str:
    """A summary value as text for people: ``dataset mnist, hidden [50], lr 0.1, ...``;
    true/false for booleans and ``-`` for None (not Python's True/None)."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, dict):
        return ", ".join(f"{k} {_readable_nested(x)}" for k, x in v.items()) or "-"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(readable(x) for x in v) + "]"
    return str(v)


def _readable_nested(v: Any) -> str:
    return f"({readable(v)})" if isinstance(v, dict) and v else readable(v)


class ReadableDict(dict):  # type: ignore[type-arg]
    """A plain dict (JSON unchanged) whose ``str()`` is :func:`readable`: the report writers
    show a nested summary value by its ``str()``."""

    def __str__(self) -> str:
        return readable(dict(self))


def write_curves(result: TrainResult, path: str | Any) -> Any:
    """Write the per-step records as CSV: step, each framework's loss, and for each compared
    tensor its max |diff| (and, in float32, both noise floors). Empty cells: not recorded.

    Written atomically (:func:`harness.reports.atomic_write_text`: a temp file beside it,
    then a rename), so a failed write never leaves a half-written file; OSError if it cannot
    be written."""
    import csv
    import io
    from pathlib import Path

    from harness.reports import atomic_write_text

    path = Path(path)
    cols: list[tuple[str, np.ndarray, np.ndarray | None]] = []
    for f in result.frameworks:
        cols.append((f"loss_{f}", result.loss[f], None))
    for name in result.tensor_order if result.both else []:
        tr = result.diffs[name]
        cols.append((f"absdiff_{name}", tr.abs, tr.recorded))
        if result.floors:
            for side in ("numpy", "torch"):
                fl = result.floors[side][name]
                cols.append((f"floor_{side}_{name}", fl.abs, fl.recorded))
    fh = io.StringIO(newline="")
    w = csv.writer(fh)
    w.writerow(["step", *(c[0] for c in cols)])
    for s in range(result.config.iters):
        w.writerow([s, *("" if (m is not None and not m[s]) or np.isnan(a[s]) else repr(float(a[s]))
                         for _, a, m in cols)])
    atomic_write_text(path, fh.getvalue())
    return path


def to_run_report(result: TrainResult, an: Analysis | None = None,
                  figures: Sequence[Any] = ()) -> RunReport:
    """The CLI's report: one LayerReport with the snapshot step's tensors, the summary, the
    figures; ``ok_override`` carries the verdict (no comparison: ok)."""
    from pathlib import Path

    an = an or analyse(result)
    cfg = result.config
    lr = LayerReport(layer=f"train {cfg.net or 'net'}", dtype=cfg.dtype,
                     input_shape=(cfg.batch,), seed=cfg.seed, results=snapshot_results(result),
                     info={"mode": cfg.mode, "step": result.snapshot.step if result.snapshot else None,
                           "reason": result.snapshot.reason if result.snapshot else None})
    layers = [lr] if lr.results else []
    if result.eval_checks:  # every failed evaluation check, and the last one of each kind
        last = {r.extra.get("check"): r for r in result.eval_checks}
        rows = [r for r in result.eval_checks
                if r.status in ("FAIL", "ERROR") or last[r.extra.get("check")] is r]
        layers.append(LayerReport(layer=f"evaluation {cfg.net or 'net'}", dtype=cfg.dtype,
                                  input_shape=tuple(result.eval_checks[0].extra.get(
                                      "input_shape", (min(EVAL_PROBE_ROWS, cfg.test_size),))),
                                  seed=cfg.seed, results=rows,
                                  info={"checks": len(result.eval_checks)}))
    report = RunReport(command="train", layers=layers,
                       summary=summary_dict(result, an), figures=[Path(f) for f in figures],
                       ok_override=True if an.agree is None else bool(an.agree),
                       verdict=an.verdict)
    return report


__all__ = [
    "Analysis",
    "EvalRecord",
    "OptimizerPair",
    "TensorSummary",
    "Trace",
    "TrainConfig",
    "TrainEvent",
    "TrainResult",
    "analyse",
    "available_nets",
    "available_optimizers",
    "batch_indices",
    "cast_net",
    "evaluation_steps",
    "iter_per_epoch",
    "make_net",
    "make_optimizer_pair",
    "to_run_report",
    "train_side_by_side",
    "write_curves",
]
