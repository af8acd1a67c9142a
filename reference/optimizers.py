"""Torch twins of the scratch optimizers, and the checks that run both side by side.

:func:`check_optimizer` gives a scratch optimizer and its torch twin the same parameters and
the same sequence of gradients (random, from a seed) for several steps, and compares the
parameters after every step. The twins (:func:`torch_twin`):

============  ====================================================================
scratch       torch
============  ====================================================================
SGD           ``optim.SGD(lr)``
Momentum      ``optim.SGD(lr, momentum, dampening=0)``; classic form: equal only while
              ``lr`` is constant (``form="torch"``: always)
Nesterov      ``optim.SGD(lr, momentum, nesterov=True)``; ``form="bengio"``: equal while
              ``lr`` is constant, ``form="torch"``: always, the book's form: never
AdaGrad       ``optim.Adagrad(lr, eps=1e-7)`` (torch's default eps is 1e-10)
RMSprop       ``optim.RMSprop(lr, alpha=decay_rate, eps=1e-7)`` (torch's eps is 1e-8)
Adam          ``optim.Adam(lr, betas, eps=eps_t)`` with ``eps_t = 1e-7 / sqrt(1 - beta2**t)``
              set before step t: the stock torch Adam computes the classic update exactly
============  ====================================================================

:func:`check_weight_decay` shows the classic L2 weight decay (``0.5*lambda*sum W**2`` in the
loss, weights only) against its torch equivalent (the same explicit term) and against
``optim.SGD(weight_decay=lambda)`` (every parameter, not in the loss).

Importing this module adds the optimizer cases to ``nn-parity check``.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

import reference.extra_layers  # noqa: F401  (registers the layer twins and their cases)
from harness.check import TORCH_DTYPE, CheckError, as_float_dtype
from harness.compare import (
    ERROR,
    FAIL,
    PASS,
    VACUOUS,
    TensorResult,
    Tolerance,
    compare,
    default_tolerance,
)
from harness.report import LayerReport
from scratch.optimizers import SGD, AdaGrad, Adam, Momentum, Nesterov, Optimizer, RMSprop

TorchFactory = Callable[[list[torch.Tensor]], torch.optim.Optimizer]
BeforeStep = Callable[[torch.optim.Optimizer, int], None]


@dataclass
class OptimizerTwin:
    """How to build the torch optimizer for a scratch one, and what to do before step t."""

    factory: TorchFactory
    before_step: BeforeStep | None = None
    description: str = ""


def adam_eps_schedule(eps: float, beta2: float) -> BeforeStep:
    """Set torch Adam's eps to ``eps / sqrt(1 - beta2**t)`` before step t.

    Classic: ``p -= lr*sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps)``.
    torch:   ``p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps_t)``.
    Multiplying the torch denominator by ``sqrt(1-b2^t)`` shows they are equal exactly when
    ``eps_t = eps / sqrt(1-b2^t)``.
    """

    def before(opt: torch.optim.Optimizer, t: int) -> None:
        for group in opt.param_groups:
            group["eps"] = eps / math.sqrt(1.0 - beta2 ** t)

    return before


def torch_twin(opt: Optimizer) -> OptimizerTwin:
    """The torch optimizer with the scratch optimizer's hyper-parameters and conventions."""
    if isinstance(opt, SGD):
        return OptimizerTwin(lambda ps: torch.optim.SGD(ps, lr=opt.lr), None, "optim.SGD(lr)")
    if isinstance(opt, Momentum):
        return OptimizerTwin(
            lambda ps: torch.optim.SGD(ps, lr=opt.lr, momentum=opt.momentum, dampening=0.0),
            None, "optim.SGD(lr, momentum, dampening=0)")
    if isinstance(opt, Nesterov):
        return OptimizerTwin(
            lambda ps: torch.optim.SGD(ps, lr=opt.lr, momentum=opt.momentum, dampening=0.0,
                                       nesterov=True),
            None, "optim.SGD(lr, momentum, nesterov=True)")
    if isinstance(opt, AdaGrad):
        return OptimizerTwin(lambda ps: torch.optim.Adagrad(ps, lr=opt.lr, eps=opt.eps),
                             None, f"optim.Adagrad(lr, eps={opt.eps:g})")
    if isinstance(opt, RMSprop):
        return OptimizerTwin(
            lambda ps: torch.optim.RMSprop(ps, lr=opt.lr, alpha=opt.decay_rate, eps=opt.eps),
            None, f"optim.RMSprop(lr, alpha=decay_rate, eps={opt.eps:g})")
    if isinstance(opt, Adam):
        return OptimizerTwin(
            lambda ps: torch.optim.Adam(ps, lr=opt.lr, betas=(opt.beta1, opt.beta2), eps=opt.eps),
            adam_eps_schedule(opt.eps, opt.beta2),
            "optim.Adam(lr, betas, eps=eps/sqrt(1-beta2**t) per step)")
    raise TypeError(
        f"no torch twin for optimizer {type(opt).__name__}: pass torch_optimizer=lambda params: "
        f"torch.optim.X(params, lr=..., ...) (and before_step= where its conventions differ, e.g. "
        f"adam_eps_schedule), subclass the scratch optimizer it implements, or register it with "
        f"reference.register_optimizer and check it with nn-parity check --module or the pytest "
        f"plugin")


def compare_steps(ours: list[np.ndarray], theirs: list[np.ndarray], *, tensor: str, layer: str,
                  dtype: np.dtype, tol: Tolerance | None = None) -> TensorResult:
    """Compare two trajectories (one array per step) as one stacked tensor (index 0 = after
    step 1); a FAIL says the first step at which they differ."""
    r = compare(np.stack(ours), np.stack(theirs), tensor=tensor, layer=layer, dtype=dtype, tol=tol)
    if not r.ok:
        bad = [i for i, (a, e) in enumerate(zip(ours, theirs, strict=True))
               if not compare(a, e, tensor=tensor, dtype=dtype, tol=tol, vacuous_check=False).ok]
        if bad:
            r.message = (f"{tensor} first differs after step {bad[0] + 1} of {len(ours)} "
                         f"(index 0 = after step 1). {r.message}").strip()
    return r


DEFAULT_SHAPES: dict[str, tuple[int, ...]] = {"W1": (5, 4), "b1": (4,), "W2": (4, 4), "b2": (4,),
                                              "W3": (4, 3), "b3": (3,)}
"""A three-layer net's parameters (hidden sizes 4 and 4): b1 and b2, and W2 with W1 where a
batch size makes W1 square, have the same shape, so state kept per shape (or one array shared
by every parameter of a size) instead of per parameter name is caught too."""


def _schedule(lr_schedule: dict[int, float] | Callable[[int], float | None] | None,
              t: int) -> float | None:
    if lr_schedule is None:
        return None
    if callable(lr_schedule):
        return lr_schedule(t)
    return lr_schedule.get(t)


def check_optimizer(
    optimizer: Optimizer,
    torch_optimizer: TorchFactory | None = None,
    *,
    before_step: BeforeStep | None = None,
    dtype: Any = np.float64,
    seed: int = 0,
    steps: int = 20,
    shapes: dict[str, tuple[int, ...]] | None = None,
    lr_schedule: dict[int, float] | Callable[[int], float | None] | str | None = "auto",
    grad_scale: float = 1.0,
    name: str | None = None,
    like: Optimizer | None = None,
) -> LayerReport:
    """Run ``optimizer`` (a fresh copy of it) and its torch twin on the same parameters and
    gradients for ``steps`` steps; compare every parameter after every step.

    * ``torch_optimizer``: ``params -> torch.optim.Optimizer``; default :func:`torch_twin`.
      ``before_step(torch_opt, t)`` runs before torch's step t (1-based), e.g. Adam's eps.
    * ``steps``: 20 by default: state that goes wrong only later (a velocity reset every 10
      steps) shows too.
    * ``lr_schedule``: ``{step: lr}`` or ``t -> lr | None``: the learning rate set on both
      sides (``opt.lr`` and every param group's ``lr``) before step t. ``"auto"`` (the
      default): ``lr`` drops to 0.3x before step 7 (an optimizer that caches its lr on the
      first call is caught), wherever the scratch optimizer and its twin are the same
      optimizer under a schedule: not the classic Momentum/Nesterov forms, whose velocity
      keeps the old lr in its history (docs/conventions.md); None: a constant lr.
    * ``grad_scale``: gradients are ``grad_scale * standard normal``; a small scale shows
      where eps matters.
    * ``like``: the scratch optimizer whose conventions ``optimizer`` follows, for an optimizer
      of the user's own that is no subclass of one (:func:`like_classic`): its twin, whether a
      schedule applies and the note on a FAIL come from ``like``.

    One result per parameter, named like the parameter, comparing the stacked trajectory
    (shape ``(steps, *param.shape)``; index 0 = after step 1); a FAIL says the first step at
    which it differs. A last result checks that ``update`` changed the arrays in place.
    """
    dtype = as_float_dtype(dtype)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise CheckError(f"check_optimizer: steps must be a positive integer, got {steps!r}")
    opt = copy.deepcopy(optimizer)
    class_state_before = class_state(opt)
    conv = opt if like is None else like
    label = name or type(opt).__name__
    if isinstance(lr_schedule, str):
        if lr_schedule != "auto":
            raise ValueError(f"lr_schedule must be a dict, a function, None or 'auto', got "
                             f"{lr_schedule!r}")
        safe = schedule_safe(conv) and hasattr(opt, "lr")
        lr_schedule = {7: 0.3 * float(opt.lr)} if safe and steps >= 7 else None
    rng = np.random.default_rng(seed)
    shapes = dict(shapes or DEFAULT_SHAPES)
    params = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
    originals = dict(params)
    tparams = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    if torch_optimizer is None:
        twin = torch_twin(conv)
        torch_optimizer, before_step = twin.factory, before_step or twin.before_step
    try:
        topt = torch_optimizer(list(tparams.values()))
    except Exception as exc:  # a registration to fix: a setup error, not a finding
        raise CheckError(f"{label}: the torch twin could not be built: {type(exc).__name__}: "
                         f"{exc} (the registration's torch_optimizer(opt, params))") from exc
    ours: dict[str, list[np.ndarray]] = {k: [] for k in params}
    theirs: dict[str, list[np.ndarray]] = {k: [] for k in params}
    for t in range(1, steps + 1):
        lr = _schedule(lr_schedule, t)
        if lr is not None:
            opt.lr = lr
            for group in topt.param_groups:
                group["lr"] = lr
        grads = {k: (grad_scale * rng.standard_normal(s)).astype(dtype) for k, s in shapes.items()}
        for k, p in tparams.items():
            p.grad = torch.from_numpy(grads[k].copy()).to(TORCH_DTYPE[dtype])
        try:
            opt.update(params, grads)
        except Exception as exc:  # the user's update() raised: an ERROR naming where
            return error_report(label, dtype, seed, exc, steps=steps,
                                what=f"at step {t}, update(params, grads) raised")
        if before_step is not None:
            before_step(topt, t)
        topt.step()
        for k in params:
            ours[k].append(np.array(params[k], copy=True))
            theirs[k].append(tparams[k].detach().numpy().copy())
    report = LayerReport(layer=label, dtype=dtype.name, input_shape=(steps,), seed=seed)
    report.info["steps"] = steps
    for k in params:
        r = compare_steps(ours[k], theirs[k], tensor=k, layer=label, dtype=dtype)
        if r.status == PASS and _unmoved(theirs[k], originals[k], dtype):
            r.status = VACUOUS
            r.message = (f"torch's {k} never moves from its start by more than the tolerance "
                         f"in {steps} steps: an update() that does nothing would pass too "
                         f"(raise lr or grad_scale, or check in float64)")
        report.results.append(r)
    if not params:
        report.results.append(TensorResult(
            layer=label, tensor="parameters", status=VACUOUS, dtype=dtype.name,
            message="no parameters to update (shapes is empty): nothing was compared"))
    rebound = [k for k in params if params[k] is not originals[k]]
    res = TensorResult(layer=label, tensor="params updated in place", status="PASS",
                       total=len(params))
    if rebound:
        res.status, res.mismatched = FAIL, len(rebound)
        res.message = (f"update() replaced {rebound} with new arrays: layers sharing the old "
                       "arrays never see the update")
    report.results.append(res)
    if report.status != "PASS":
        note = _class_state_note(opt, class_state_before)
        if not note:
            note = form_note(conv, lr_schedule is not None)
        changed = _schedule_steps(lr_schedule, steps)
        if not note and changed and any(
                r.status == FAIL and _first_step(r) is not None and _first_step(r) >= changed[0]
                for r in report.results):
            note = (f"(the learning rate was changed on both sides before step {changed[0]} "
                    f"(lr_schedule {report_schedule(lr_schedule, steps)}), where they part: an "
                    f"update() that caches lr, or a form that keeps the old lr in its state "
                    f"(the classic Momentum), differs there; lr_schedule=None checks at a "
                    f"constant lr)")
        if not note:
            note = _shared_shape_note(report, shapes)
        if note:
            report.info["note"] = note
            for r in report.results:
                if r.status == FAIL:
                    r.message = f"{r.message} {note}".strip()
    shown = ("lr", "momentum", "dampening", "nesterov", "alpha", "betas", "eps", "weight_decay")
    hyper = ", ".join(f"{k}={topt.defaults[k]!r}" for k in shown if k in topt.defaults)
    report.info["torch"] = f"{type(topt).__name__}({hyper})"  # its settings at the start
    report.info["lr_schedule"] = (repr(lr_schedule) if isinstance(lr_schedule, dict) else
                                  "function" if lr_schedule is not None else None)
    return report


def class_containers(opt: Any) -> dict[str, Any]:
    """The dicts and lists an optimizer's class (or a base class of the user's) holds as class
    attributes that the instance does not shadow, as ``{'Class.attr': container}``: state
    written there is shared by every instance."""
    out: dict[str, Any] = {}
    own = vars(opt) if hasattr(opt, "__dict__") else {}
    for c in type(opt).__mro__[:-1]:
        if c.__module__ in ("scratch.optimizers", __name__):
            continue
        for k, v in vars(c).items():
            name = f"{c.__name__}.{k}"
            if isinstance(v, (dict, list)) and not k.startswith("__") and k not in own \
                    and name not in out:
                out[name] = v
    return out


def class_state(opt: Any) -> dict[str, Any]:
    """A copy of :func:`class_containers`, to tell later whether ``update`` wrote there."""
    try:
        return {k: copy.deepcopy(v) for k, v in class_containers(opt).items()}
    except Exception:  # something that cannot be copied: not state of ours to judge
        return {}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape
                and bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")))
    try:
        return bool(a == b)
    except Exception:
        return a is b


def class_state_written(opt: Any, before: dict[str, Any]) -> list[str]:
    """The class attributes of :func:`class_containers` that changed since ``before``
    (:func:`class_state`): ``update`` keeps its state on the class."""
    return [k for k, v in class_containers(opt).items() if k in before and not _same(v, before[k])]


def _class_state_note(opt: Any, before: dict[str, Any]) -> str:
    """Why a fresh optimizer that keeps its state on the class parts from its twin."""
    used = class_state_written(opt, before)
    if not used:
        return ""
    return (f"(the state is kept on the class ({', '.join(used)}, a class attribute, "
            f"{', '.join(str(len(before[k])) for k in used)} entries before this check): "
            "every instance shares it, so a new optimizer starts with the state of earlier "
            "ones; create it per instance, e.g. self.v = {} in __init__)")


def _shared_shape_note(report: LayerReport, shapes: dict[str, tuple[int, ...]]) -> str:
    """When exactly the parameters that share their shape with another fail (and at least one
    of a shape of its own passes): the optimizer keeps its state per shape or size."""
    failed = {r.tensor for r in report.results if r.status == FAIL}
    if not failed or not failed <= set(shapes):
        return ""
    by_shape: dict[tuple[int, ...], list[str]] = {}
    for k, s in shapes.items():
        by_shape.setdefault(tuple(s), []).append(k)
    shared = {k for ks in by_shape.values() if len(ks) > 1 for k in ks}
    if not failed <= shared or not set(shapes) - shared:
        return ""
    groups = "; ".join(f"{', '.join(ks)} {s}" for s, ks in by_shape.items()
                       if len(ks) > 1 and set(ks) & failed)
    return (f"(only parameters that share their shape with another fail ({groups}); those "
            "of a shape of their own pass: is the state (velocity, accumulators) keyed by "
            "shape or size, or one array reused for several parameters, instead of one per "
            "parameter name?)")


def _unmoved(theirs: list[np.ndarray], start: np.ndarray, dtype: np.dtype) -> bool:
    """Whether torch's trajectory stays within the tolerance of its starting point, so that
    a parameter that never moves would pass the comparison."""
    if not theirs or start.size == 0:
        return True
    still = np.broadcast_to(start, (len(theirs), *start.shape))
    return compare(np.stack(theirs), still, tensor="moved", dtype=dtype,
                   vacuous_check=False).status == PASS


def _schedule_steps(lr_schedule: Any, steps: int) -> list[int]:
    if lr_schedule is None:
        return []
    return [t for t in range(1, steps + 1) if _schedule(lr_schedule, t) is not None]


def report_schedule(lr_schedule: Any, steps: int) -> str:
    return ", ".join(f"step {t}: lr={_schedule(lr_schedule, t):g}"
                     for t in _schedule_steps(lr_schedule, steps)[:3])


def _first_step(r: TensorResult) -> int | None:
    m = re.match(r".*first differs after step (\d+)", r.message or "")
    return int(m.group(1)) if m else None


def error_report(label: str, dtype: np.dtype, seed: int, exc: BaseException, *,
                 what: str = "update(params, grads) raised", steps: int | None = None
                 ) -> LayerReport:
    """An ERROR report for an exception in an optimizer check, naming where it was raised: the
    deepest frame outside the harness (the user's line), else the last one."""
    import traceback
    from pathlib import Path

    frames = traceback.extract_tb(exc.__traceback__)
    root = Path(__file__).resolve().parents[1]
    ours = (str(root / "harness"), str(root / "reference"))
    where = next((f for f in reversed(frames) if not f.filename.startswith(ours)),
                 frames[-1] if frames else None)
    at = f" (at {where.filename}:{where.lineno}, in {where.name})" if where else ""
    res = TensorResult(layer=label, tensor="update", status=ERROR, dtype=dtype.name,
                       message=f"{what} {type(exc).__name__}: {exc}{at}")
    return LayerReport(layer=label, dtype=dtype.name, seed=seed, results=[res],
                       input_shape=(steps,) if steps else ())


def form_note(opt: Optimizer, scheduled: bool) -> str:
    """Why a correct optimizer of a form that is not torch's twin can still part from it."""
    form = getattr(opt, "form", None)
    if isinstance(opt, Nesterov) and form == "book":
        return ("(Nesterov(form='book') is the book's code, which uses the updated velocity: "
                "a different optimizer from torch's nesterov=True from step 1 on, by design; "
                "form='bengio' or form='torch' is torch's; docs/conventions.md)")
    if isinstance(opt, (Momentum, Nesterov)) and form != "torch" and scheduled:
        return (f"({type(opt).__name__}(form={form!r}) keeps the old lr in its velocity after "
                "the lr changes, torch's buffer does not: under a schedule only form='torch' "
                "is torch's optimizer; docs/conventions.md)")
    return ""


def schedule_safe(opt: Optimizer) -> bool:
    """Whether the scratch optimizer and its torch twin stay the same optimizer when the
    learning rate changes: all but the classic Momentum/Nesterov forms."""
    if isinstance(opt, (Momentum, Nesterov)):
        return getattr(opt, "form", "classic") == "torch"
    return True


# ---------------------------------------------------------------------------------------
# A user's own optimizer classes: registered, subclasses of a scratch one, or named like one


@dataclass
class OptimizerRegistration:
    """How a user's optimizer class is checked: ``torch_optimizer(opt, params)`` builds the
    torch twin of an instance ``opt``; ``before_step(opt, torch_opt, t)`` runs before torch's
    step t; ``example()`` builds an instance (default: the class's zero-argument constructor);
    ``lr_schedule``: whether the two stay the same optimizer when the learning rate changes
    (then ``check_optimizer`` changes it at step 7)."""

    cls: type
    torch_optimizer: Callable[[Any, list[torch.Tensor]], torch.optim.Optimizer]
    before_step: Callable[[Any, torch.optim.Optimizer, int], None] | None = None
    example: Callable[[], Any] | None = None
    lr_schedule: bool = True


_OPTIMIZER_REGISTRY: dict[type, OptimizerRegistration] = {}


def register_optimizer(
    cls: type,
    torch_optimizer: Callable[[Any, list[torch.Tensor]], torch.optim.Optimizer],
    *,
    before_step: Callable[[Any, torch.optim.Optimizer, int], None] | None = None,
    example: Callable[[], Any] | None = None,
    lr_schedule: bool = True,
) -> OptimizerRegistration:
    """Pair an optimizer class of yours with its torch twin, for ``nn-parity check --module``
    and the pytest plugin::

        register_optimizer(AdamW, lambda opt, ps: torch.optim.AdamW(
            ps, lr=opt.lr, betas=(opt.beta1, opt.beta2), eps=opt.eps, weight_decay=opt.wd))
    """
    if not isinstance(cls, type) or not callable(getattr(cls, "update", None)):
        raise TypeError(f"register_optimizer: expected an optimizer class with an "
                        f"update(params, grads) method, got {cls!r}")
    if not callable(torch_optimizer):
        raise TypeError("register_optimizer: torch_optimizer must be a function "
                        "(opt, params) -> torch.optim.Optimizer")
    if isinstance(torch_optimizer, type) and issubclass(torch_optimizer, torch.optim.Optimizer):
        raise TypeError(f"register_optimizer: pass a function (opt, params) -> "
                        f"{torch_optimizer.__name__}(params, lr=opt.lr, ...), not the class "
                        f"{torch_optimizer.__name__} itself: the harness cannot guess which of "
                        f"your attributes are its hyper-parameters")
    reg = OptimizerRegistration(cls, torch_optimizer, before_step, example, lr_schedule)
    _OPTIMIZER_REGISTRY[cls] = reg
    return reg


def unregister_optimizer(cls: type) -> None:
    _OPTIMIZER_REGISTRY.pop(cls, None)


def optimizer_registration(cls: type) -> OptimizerRegistration | None:
    """The registration of ``cls`` or of its nearest registered base class."""
    return next((_OPTIMIZER_REGISTRY[b] for b in cls.__mro__ if b in _OPTIMIZER_REGISTRY), None)


def registered_optimizers() -> dict[type, OptimizerRegistration]:
    return dict(_OPTIMIZER_REGISTRY)


CLASSIC_NAMES: dict[str, type[Optimizer]] = {
    "sgd": SGD, "momentum": Momentum, "momentumsgd": Momentum, "sgdmomentum": Momentum,
    "nesterov": Nesterov, "nag": Nesterov, "adagrad": AdaGrad, "rmsprop": RMSprop, "adam": Adam,
}
"""Class names (lower case, letters only, without a leading ``my`` or a trailing
``optimizer``) taken as the classic optimizer of that name."""

_CLASSIC = (SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam)


def classic_for(cls: type) -> tuple[type[Optimizer] | None, str]:
    """The scratch optimizer ``cls`` is checked as, and how it was found: its nearest classic
    base class (``"subclass of Adam"``) or, for a class of its own, its name (``"named like
    the classic Adam"``); ``(None, "")`` when neither."""
    base = next((b for b in cls.__mro__ if b in _CLASSIC), None)
    if base is not None:
        return base, f"subclass of {base.__name__}"
    for i, c in enumerate(cls.__mro__[:-1]):  # the class's name, else a base class's
        key = "".join(ch for ch in c.__name__.lower() if ch.isalpha())
        key = key.removeprefix("my").removesuffix("optimizer") or key
        classic = CLASSIC_NAMES.get(key)
        if classic is not None:
            how = "matched by its class name" if i == 0 else \
                f"matched by the name of its base class {c.__name__}"
            return classic, how
    return None, ""


def classic_momentum_twin(lr: float, momentum: float) -> tuple[TorchFactory, BeforeStep]:
    """A torch twin of the classic Momentum form (``v = m*v - lr*g; p += v``) under any
    learning-rate schedule: ``optim.SGD(lr=1, momentum=m)`` fed ``lr_t * g``, so that its
    buffer is ``-v`` at every step (the stock ``SGD(lr, momentum)`` is the classic form only
    while lr is constant). The schedule's lr, set on the param groups before step t, is read
    and replaced by 1 before torch's step."""
    current = {"lr": float(lr)}

    def factory(ps: list[torch.Tensor]) -> torch.optim.Optimizer:
        return torch.optim.SGD(ps, lr=1.0, momentum=momentum, dampening=0.0)

    def before(topt: torch.optim.Optimizer, t: int) -> None:
        for group in topt.param_groups:
            if group["lr"] != 1.0:  # the schedule set a new lr before this step
                current["lr"], group["lr"] = float(group["lr"]), 1.0
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.mul_(current["lr"])

    return factory, before


def like_classic(opt: Any, classic: type[Optimizer]) -> tuple[Optimizer, list[str]]:
    """A scratch ``classic`` optimizer with ``opt``'s hyper-parameters (its attributes of the
    same names: ``lr``, ``momentum``, ``beta1``, ``eps``, ...) and the classic defaults for the
    ones ``opt`` does not have, listed as notes (the book's AdaGrad, RMSprop and Adam write
    their ``1e-7`` inline)."""
    template = classic()
    notes = []
    known = set(vars(template))
    extra = sorted(k for k, v in vars(opt).items()
                   if k not in known and not k.startswith("_") and k not in ("t", "step", "iter")
                   and isinstance(v, (int, float, np.floating, np.integer))
                   and not isinstance(v, (bool, np.bool_)))
    if extra:
        notes.append(f"its attribute{'s' if len(extra) > 1 else ''} "
                     f"{', '.join(f'{k}={getattr(opt, k)!r}' for k in extra)} "
                     f"{'have' if len(extra) > 1 else 'has'} no counterpart in the classic "
                     f"{classic.__name__} and its twin (a weight decay? register_optimizer "
                     f"with a twin that takes it, e.g. torch.optim.AdamW)")
    for key, default in vars(template).items():
        if isinstance(default, (dict, list)) or key == "iter":
            continue
        value = getattr(opt, key, None)
        if key == "form" and value is None:  # a form is not a hyper-parameter: not noted
            continue
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, str, np.number)):
            notes.append(f"{key}={default!r} (no {key} attribute: the classic value)")
            continue
        if key == "form" and value not in getattr(template, "FORMS", (value,)):
            notes.append(f"form={default!r} (its form {value!r} is not one of "
                         f"{template.FORMS}: the classic value)")
            continue
        setattr(template, key, value.item() if isinstance(value, np.generic) else value)
    return template, notes


# ---------------------------------------------------------------------------------------
# Weight decay: the classic L2 term vs torch's weight_decay


WEIGHT_DECAY_CONVENTIONS = ("explicit_l2", "sgd_weight_decay")


def check_weight_decay(
    net: Any,
    *,
    convention: str = "explicit_l2",
    lr: float = 0.1,
    steps: int = 2,
    seed: int = 0,
    batch: int = 4,
    name: str | None = None,
) -> LayerReport:
    """The classic weight decay of ``net`` (``weight_decay_lambda``) against torch, over
    ``steps`` SGD steps on one batch.

    ``convention="explicit_l2"``: the torch twin (``reference.nets.TorchNet``) adds the same
    ``0.5 * lambda * sum ||W||^2`` over the weights to its loss and takes plain SGD steps:
    loss, every gradient and every parameter agree.
    ``convention="sgd_weight_decay"``: the twin's loss has no L2 term and the step is
    ``optim.SGD(lr, weight_decay=lambda)``: the ``loss`` and the weight gradients ``dW*``
    differ (torch adds lambda*W inside the optimizer, not to the loss); the weights after each
    step agree; biases (and gamma/beta) differ from step 2 on (torch decays them too; they
    start at 0, where decay is invisible for one step).

    Results, each stacked over the steps: ``loss``, ``d<key>`` per parameter and
    ``<key> after step`` per parameter.
    """
    if convention not in WEIGHT_DECAY_CONVENTIONS:
        raise ValueError(f"convention must be one of {WEIGHT_DECAY_CONVENTIONS}, got {convention!r}")
    from reference.nets import TorchNet

    work = copy.deepcopy(net)  # deepcopy keeps params and layers sharing their arrays
    dtype = np.dtype(work.dtype)
    lam = float(getattr(work, "weight_decay_lambda", 0.0))
    label = name or f"{type(net).__name__} weight decay ({convention})"
    rng = np.random.default_rng(seed)
    n_in = next(iter(work.params.values())).shape[0]
    x = rng.standard_normal((batch, n_in)).astype(dtype)
    t = rng.integers(0, work.output_size, size=batch)
    xt, tt = torch.from_numpy(x), torch.from_numpy(t)
    tnet = TorchNet(work)
    if convention == "sgd_weight_decay":
        tnet.weight_decay_lambda = 0.0
    tnet.train(True)
    wd = lam if convention == "sgd_weight_decay" else 0.0
    topt = torch.optim.SGD(tnet.parameters(), lr=lr, weight_decay=wd)
    opt = SGD(lr)
    keys = list(work.params)
    hist: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {
        name: ([], []) for name in ["loss", *(f"d{k}" for k in keys), *(f"{k} after step" for k in keys)]}
    for _ in range(steps):
        topt.zero_grad()
        loss_t = tnet.loss(xt, tt)  # installs the same dropout masks in the scratch layers
        loss_t.backward()
        loss_s = work.loss(x, t, train_flg=True)
        grads = work.gradient(x, t)
        tgrads = tnet.grads()
        hist["loss"][0].append(np.asarray(loss_s))
        hist["loss"][1].append(loss_t.detach().numpy().copy())
        for k in keys:
            hist[f"d{k}"][0].append(np.array(grads[k], copy=True))
            hist[f"d{k}"][1].append(np.array(tgrads[k], copy=True))
        opt.update(work.params, grads)
        topt.step()
        after = tnet.params_numpy()
        for k in keys:
            hist[f"{k} after step"][0].append(np.array(work.params[k], copy=True))
            hist[f"{k} after step"][1].append(np.array(after[k], copy=True))  # not a view
    # Gradients and parameters are judged against the scale of the whole net (atol x the
    # largest torch gradient / parameter anywhere), not of each tensor alone: the bias of an
    # Affine right before a BatchNorm has a gradient of exactly 0 in exact arithmetic, and
    # both sides return rounding noise for it that a per-tensor scale would call a mismatch.
    base = default_tolerance(dtype)

    def net_scale(prefix: str, suffix: str) -> Tolerance:
        peak = max(float(np.max(np.abs(a))) for name, (_, theirs) in hist.items()
                   if name.startswith(prefix) and name.endswith(suffix) for a in theirs)
        return Tolerance(base.rtol, base.atol * peak, scaled=False)

    tols = {"grad": net_scale("d", ""), "param": net_scale("", " after step")}
    report = LayerReport(layer=label, dtype=dtype.name, input_shape=x.shape, seed=seed)
    for tensor, (ours, theirs) in hist.items():
        tol = None if tensor == "loss" else tols["param" if tensor.endswith(" after step") else "grad"]
        report.results.append(compare_steps(ours, theirs, tensor=tensor, layer=label, dtype=dtype,
                                            tol=tol))
    return report


# ---------------------------------------------------------------------------------------
# Cases for `nn-parity check`


def shapes_for(batch: int) -> dict[str, tuple[int, ...]]:
    """The parameters an optimizer check updates: :data:`DEFAULT_SHAPES` with W1's rows
    growing with ``batch``, so that the suite's batch sizes give other shapes."""
    return {**DEFAULT_SHAPES, "W1": (batch + 2, 4)}


def _register_cases() -> None:
    from harness.suite import add_case

    def case(name: str, make: Callable[[], Optimizer], **kw: Any) -> None:
        def run(dtype: np.dtype, seed: int, batch: int) -> LayerReport:
            opts = {"shapes": shapes_for(batch), **kw}
            return check_optimizer(make(), dtype=dtype, seed=seed, name=name, **opts)

        add_case(name, run, group="optimizer")

    # check_optimizer's defaults: 20 steps, lr 0.3x from step 7 where both sides define the
    # same optimizer under a schedule; one long Adam run on tiny tensors for its step counter
    # (a uint8 counter wraps at 256)
    case("SGD", lambda: SGD(lr=0.1))
    case("Momentum", lambda: Momentum(lr=0.1, momentum=0.9))
    case("Momentum (form='torch', lr schedule)", lambda: Momentum(lr=0.1, form="torch"),
         lr_schedule={4: 0.03})
    case("Nesterov (form='bengio')", lambda: Nesterov(lr=0.1, form="bengio"))
    case("Nesterov (form='torch', lr schedule)", lambda: Nesterov(lr=0.1, form="torch"),
         lr_schedule={4: 0.03})
    case("AdaGrad", lambda: AdaGrad(lr=0.1))
    case("AdaGrad (grads ~1e-7: eps matters)", lambda: AdaGrad(lr=0.1), grad_scale=1e-7)
    case("RMSprop", lambda: RMSprop(lr=0.01))
    case("RMSprop (grads ~1e-7: eps matters)", lambda: RMSprop(lr=0.01), grad_scale=1e-7)
    case("Adam", lambda: Adam(lr=0.01))
    case("Adam (grads ~1e-7: eps matters)", lambda: Adam(lr=0.01), grad_scale=1e-7)
    case("Adam (300 steps)", lambda: Adam(lr=0.01), steps=300, shapes={"w": (3,)})

    def weight_decay(dtype: np.dtype, seed: int, batch: int) -> LayerReport:
        from scratch.multi_layer_net import MultiLayerNet

        net = MultiLayerNet(6, [5, 4], 3, weight_init_std="he", weight_decay_lambda=0.1,
                            use_batchnorm=True, use_dropout=True, dropout_ratio=0.3, dtype=dtype,
                            seed=seed)
        return check_weight_decay(net, seed=seed, batch=max(batch, 3),
                                  name="MultiLayerNet weight decay (explicit L2, SGD step)")

    add_case("MultiLayerNet weight decay (explicit L2, SGD step)", weight_decay, group="optimizer")


_register_cases()
