"""Checking a user's own optimizers: ``nn-parity check --module my_optimizers.py``.

An optimizer class is a class with an ``update(params, grads)`` method (and no ``forward``:
that is a layer). It is checked against PyTorch, in this order of precedence, when it is

* **registered** with :func:`reference.optimizers.register_optimizer` (its own twin);
* a **subclass of a scratch optimizer** (``class Adam(scratch.Adam)``): that one's twin;
* **named like a classic optimizer** (``SGD``, ``Momentum``, ``Nesterov``, ``AdaGrad``,
  ``RMSprop``, ``Adam``; ``MyAdam``, ``AdamOptimizer`` too): checked as the scratch one
  with the class's hyper-parameters (its ``lr``, ``momentum``, ``beta1``, ... attributes;
  :func:`reference.optimizers.like_classic`), with a note saying so. An ``Adam`` that is not
  the book's but torch's own form (eps added to the bias-corrected ``sqrt(v_hat)``) passes
  against ``optim.Adam`` with its eps, with a note.

Each is built with its zero-argument constructor (a registration's ``example()``; arguments
without defaults come from the classic optimizer's), and checked in up to three runs: the 20
steps of :func:`reference.optimizers.check_optimizer` (the learning rate changed at step 7
where the twin stays the same optimizer under a schedule), 300 steps on a tiny tensor, where
state that goes wrong late (a step counter that wraps) shows, and, for an optimizer with an
eps, gradients of about 1e-7, where the place of eps shows.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from harness.check import CheckError
from harness.report import LayerReport
from reference.optimizers import error_report, shapes_for
from scratch.optimizers import SGD, Adam, Momentum, Nesterov

LONG_STEPS = 300
"""Steps of the long check (on one 3-element tensor): Adam's step counter in uint8 wraps at
256."""


def is_optimizer_class(obj: Any) -> bool:
    """A class with an ``update(params, grads)`` method that is not a layer or a net."""
    update = getattr(obj, "update", None) if isinstance(obj, type) else None
    if not callable(update) or hasattr(obj, "forward") or hasattr(obj, "gradient"):
        return False
    try:
        inspect.signature(update).bind(None, {}, {})  # self, params, grads
    except TypeError:
        return False  # update() of something else (a trainer's update(), a counter's)
    except ValueError:
        return True  # no signature to read (a builtin): take it at its word
    return True


@dataclass
class OptimizerSpec:
    """A user's optimizer class to check, and how its twin was found."""

    name: str
    cls: type
    how: str  # "registered", "subclass of Adam", "named like the classic Adam"
    classic: type | None = None
    registration: Any = None
    steps: int = 20
    notes: list[str] = field(default_factory=list)

    instance: Any = None  # check this object (the pytest plugin's parity(opt)), not a new one
    long_run: bool = False  # the 300-step run of a spec: its notes are the main run's
    grad_scale: float = 1.0

    def build(self) -> Any:
        from harness.user_modules import _required_args, construct_like

        if self.instance is not None:
            return copy.deepcopy(self.instance)
        reg = self.registration
        if reg is not None and reg.example is not None:
            return reg.example()
        required = _required_args(self.cls)
        if not required:
            return self.cls()
        if self.classic is None:
            raise CheckError(f"{self.name}: cannot build it: its constructor needs {required}; "
                             f"pass example=lambda: {self.cls.__name__}(...) to "
                             f"register_optimizer")
        return construct_like(self.cls, self.classic(), self.notes)

    def _note(self, line: str) -> None:
        if line not in self.notes:
            self.notes.append(line)

    def _twin_kwargs(self, opt: Any) -> dict[str, Any]:
        """check_optimizer's arguments that pick the twin, and this spec's note on it."""
        from reference.optimizers import like_classic

        reg, kwargs = self.registration, {}
        if reg is not None:
            kwargs["torch_optimizer"] = lambda ps: reg.torch_optimizer(opt, ps)
            if reg.before_step is not None:
                kwargs["before_step"] = lambda topt, t: reg.before_step(opt, topt, t)
            if not reg.lr_schedule:
                kwargs["lr_schedule"] = None
            return kwargs
        like, assumed = like_classic(opt, self.classic)
        if issubclass(self.cls, self.classic):
            for line in assumed:  # an attribute the twin does not take (a weight decay)
                self._note(line)
            return kwargs
        kwargs["like"] = like
        note = (f"checked as the classic {self.classic.__name__} ({self.how}) against its "
                f"PyTorch twin")
        if assumed:
            note += f", with {'; '.join(assumed)}"
        note += "; reference.register_optimizer gives it a twin of your choosing"
        if note not in self.notes:
            self.notes.insert(0, note)
        return kwargs

    def check(self, dtype: Any = np.float64, seed: int = 0, batch: int = 3,
              **options: Any) -> LayerReport:
        """:func:`reference.optimizers.check_optimizer` on a fresh instance; ``options`` go to
        it (``steps``, ``shapes``, ``lr_schedule``, ``grad_scale``). An exception raised by
        building or updating is an ERROR result naming where it was raised."""
        from reference.optimizers import check_optimizer

        unknown = sorted(set(options) - CHECK_OPTIONS)
        if unknown:
            raise CheckError(f"{self.name}: {unknown} do not apply to an optimizer check "
                             f"(it takes {sorted(CHECK_OPTIONS)})")
        dtype = np.dtype(dtype)
        steps = int(options.pop("steps", self.steps))
        kwargs: dict[str, Any] = {"steps": steps, "shapes": {"w": (3,)} if self.steps > 20
                                  else shapes_for(batch)}
        if self.grad_scale != 1.0:
            kwargs["grad_scale"] = self.grad_scale
        try:
            opt = self.build()
            kwargs.update(self._twin_kwargs(opt))
            kwargs.update(options)
            if self._momentum_of_unknown_form(kwargs, options):
                report = self._momentum_forms(opt, kwargs, dtype, seed)
            else:
                report = check_optimizer(opt, dtype=dtype, seed=seed, name=self.name, **kwargs)
            if report.status != "PASS" and "like" in kwargs and self.classic is Adam:
                report = self._torch_form_adam(opt, kwargs, dtype, seed) or report
        except CheckError:
            raise
        except Exception as exc:
            report = error_report(self.name, dtype, seed, exc, what="the check raised")
        if self.notes and not self.long_run:
            notes = report.info.setdefault("notes", [])
            notes += [n for n in self.notes if n not in notes]
        return report


    def _momentum_of_unknown_form(self, kwargs: dict[str, Any], options: dict[str, Any]) -> bool:
        return ("like" in kwargs and self.classic is Momentum and "lr_schedule" not in options
                and not isinstance(getattr(self.instance or self.cls, "form", None), str))

    def _momentum_forms(self, opt: Any, kwargs: dict[str, Any], dtype: np.dtype,
                        seed: int) -> LayerReport:
        """A Momentum of the user's own, form unknown, under an lr change at step 7: torch's
        form against ``optim.SGD(lr, momentum)``, else the classic form against its exact
        twin under a schedule (:func:`reference.optimizers.classic_momentum_twin`); if
        neither, at a constant lr (where both forms are torch's) to tell a wrong update from
        one that mishandles the lr change."""
        from reference.optimizers import check_optimizer, classic_momentum_twin

        like = kwargs["like"]
        steps = kwargs["steps"]
        schedule = {7: 0.3 * float(like.lr)} if steps >= 7 else None
        run = {**kwargs, "like": None, "lr_schedule": schedule}
        torch_form = copy.copy(like)
        torch_form.form = "torch"
        report = check_optimizer(opt, dtype=dtype, seed=seed, name=self.name,
                                 **{**run, "like": torch_form})
        if report.status == "PASS":
            self._note("torch's form (lr outside the velocity buffer): also checked under an lr "
                       "change at step 7")
            return report
        factory, before = classic_momentum_twin(like.lr, like.momentum)
        classic = check_optimizer(opt, dtype=dtype, seed=seed, name=self.name,
                                  **{**run, "torch_optimizer": factory, "before_step": before})
        if classic.status == "PASS":
            self._note("the classic form (v = momentum*v - lr*g; p += v): checked under an lr "
                       "change at step 7 against optim.SGD(lr=1, momentum) fed lr*g, its exact "
                       "twin under a schedule")
            return classic
        constant = check_optimizer(opt, dtype=dtype, seed=seed, name=self.name,
                                   **{**kwargs, "lr_schedule": None})
        if constant.status != "PASS" or schedule is None:
            return constant
        for r in classic.results:
            if r.status != "PASS":
                r.message = (f"{r.message} It passes at a constant lr, and after the change "
                             f"matches neither torch's form nor the classic one.").strip()
        return classic

    def _torch_form_adam(self, opt: Any, kwargs: dict[str, Any], dtype: np.dtype,
                         seed: int) -> LayerReport | None:
        """An Adam of the user's own that is not the book's may be torch's: eps added to the
        bias-corrected ``sqrt(v_hat)``. The report of that twin if it passes, with a note."""
        import torch

        from reference.optimizers import check_optimizer

        like = kwargs["like"]
        torch_form = {**kwargs, "torch_optimizer": lambda ps: torch.optim.Adam(
            ps, lr=like.lr, betas=(like.beta1, like.beta2), eps=like.eps), "before_step": None}
        report = check_optimizer(opt, dtype=dtype, seed=seed, name=self.name, **torch_form)
        if report.status != "PASS":
            return None
        self._note(
            f"the form of torch.optim.Adam (eps={like.eps:g} added to the bias-corrected "
            f"sqrt(v_hat)), not the book's (eps added to sqrt(v)): checked against "
            f"optim.Adam(lr, betas, eps={like.eps:g})")
        return report


CHECK_OPTIONS = {"steps", "shapes", "lr_schedule", "grad_scale"}
SMALL_GRADS = 1e-7
"""The gradient scale of the third run, for optimizers with an eps: where eps is placed (inside
or outside the square root, before or after the bias correction) shows only when ``sqrt(v)``
is as small as eps."""


def spec_for_optimizer(cls: type, name: str | None = None) -> OptimizerSpec | None:
    """How to check an optimizer class, or None if it has no twin."""
    from reference.optimizers import classic_for, optimizer_registration

    name = name or cls.__name__
    reg = optimizer_registration(cls)
    classic, how = classic_for(cls)
    if reg is not None:
        return OptimizerSpec(name, cls, "registered", classic, reg)
    if classic is None:
        return None
    return OptimizerSpec(name, cls, how, classic)


def with_long_run(spec: OptimizerSpec) -> list[OptimizerSpec]:
    """The spec and its other runs: ``<name> (300 steps)`` and, for an optimizer with an eps
    (AdaGrad, RMSprop, Adam and registered ones), ``<name> (grads ~1e-7)``."""
    from dataclasses import replace

    runs = [spec, replace(spec, name=f"{spec.name} ({LONG_STEPS} steps)", steps=LONG_STEPS,
                          notes=spec.notes, long_run=True)]
    if spec.classic not in (SGD, Momentum, Nesterov) or spec.registration is not None:
        runs.append(replace(spec, name=f"{spec.name} (grads ~{SMALL_GRADS:g})", notes=spec.notes,
                            long_run=True, grad_scale=SMALL_GRADS))
    return runs


def discover_optimizers(module: ModuleType,
                        prefix: str | None = None) -> tuple[list[OptimizerSpec], list[str]]:
    """The optimizer classes defined in ``module`` that can be checked, and the names of those
    that cannot (an ``update`` method but no twin)."""
    from harness.user_modules import display_name

    prefix = display_name(module) if prefix is None else prefix
    found, unmatched = [], []
    for attr, obj in vars(module).items():
        if (not is_optimizer_class(obj) or obj.__module__ != module.__name__
                or attr.startswith("_")):
            continue
        name = f"{prefix}.{obj.__name__}" if prefix else obj.__name__
        spec = spec_for_optimizer(obj, name)
        if spec is None:
            unmatched.append(name)
        else:
            found.append(spec)
    return found, unmatched


NO_TWIN_NOTE = ("has update(params, grads) but no PyTorch twin, so it was not checked: "
                "subclass the scratch optimizer it implements (class MyAdam(scratch.Adam)), name "
                "it like one (SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam) or register it "
                "with reference.register_optimizer(cls, lambda opt, params: "
                "torch.optim.X(params, lr=opt.lr, ...))")


def optimizer_spec(target: Any) -> OptimizerSpec:
    """The spec of an optimizer class or instance (an instance is checked as it is: a deep
    copy of it, with its hyper-parameters); a CheckError says how to give it a twin."""
    cls = target if isinstance(target, type) else type(target)
    spec = spec_for_optimizer(cls)
    if spec is None:
        raise CheckError(f"{cls.__name__} {NO_TWIN_NOTE}")
    if not isinstance(target, type):
        spec.instance = target
    return spec
