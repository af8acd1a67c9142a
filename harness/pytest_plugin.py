"""pytest plugin ``nn_parity`` (entry point ``pytest11``): parity tests as one-liners.

Installed with the package, it gives every test session:

* :func:`assert_parity` ``(layer, module=None, **check_layer_kwargs)``: check one layer (or a
  net with ``.layers``, or a layer class) against its PyTorch twin; on a mismatch it raises
  :class:`ParityError` (an ``AssertionError``) whose message is the harness's report of the
  failing tensors and a verdict, with the harness's own frames hidden from the traceback.
* the ``parity`` fixture: ``assert_parity``, with defaults from a ``@pytest.mark.parity(...)``
  marker; ``@pytest.mark.parity(dtypes=[...], seeds=[...])`` also parametrises the test.
* :func:`parity_cases` ``(*targets, dtypes=..., seeds=...)``: ``pytest.param`` cases with ids
  like ``Affine-float32-seed0``, and :func:`parity_test` which wraps them in a ready test.

A whole test file for a user's layers::

    import my_layers
    from harness.pytest_plugin import parity_test
    test_my_layers = parity_test(my_layers)

tinygrad-style one-liners::

    def test_affine(parity): parity(Affine(W, b))
    def test_relu32(parity): parity(Relu(), dtype="float32", input_shape=(5, 9))

``targets`` may be layer instances, layer classes (built like ``nn-parity check`` builds
them: the registration's ``example`` or the registered base's example), modules (every layer
class found in them, see :mod:`harness.user_modules`) or nets.

Not installed? ``pytest -p harness.pytest_plugin`` or ``pytest_plugins = ["harness.pytest_plugin"]``.
(PYTEST_DONT_REWRITE: this module has no asserts; the marker spares a warning when a test
module imports it before listing it in ``pytest_plugins``.)
"""

from __future__ import annotations

import difflib
import functools
import inspect
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np
import pytest

DEFAULT_DTYPES = ("float32", "float64")
DEFAULT_SEEDS = range(3)
DEFAULT_BATCHES = (1, 3, 8)
"""The batch sizes of ``nn-parity check`` (``harness.suite.BATCHES``): a bug that shows only
at batch 1 (a squeezed batch axis) or only above it (a sum not divided by the batch) fails."""


class ParityError(AssertionError):
    """A scratch layer computes something other than its PyTorch twin. ``.report`` has it all."""

    def __init__(self, message: str, report: Any = None) -> None:
        super().__init__(message)
        self.report = report


def failure_message(report: Any) -> str:
    """The failing tensors' reports and a verdict line (passing tensors are only named), and
    what was not compared and why (``dx`` of an integer-index input)."""
    bad = report.failures

    def label(r: Any) -> str:  # a net's results name their layer: Affine1(Affine).dW
        return r.tensor if r.layer in ("", report.layer) else f"{r.layer}.{r.tensor}"

    good = [label(r) for r in report.results if r.ok]
    lines = [report.headline()]
    first = report.first_divergence
    if first is not None:
        lines.append(f"first divergence: {first.name}")
    lines.extend(str(r) for r in bad)
    lines.append(f"verdict: {len(bad)} of {len(report.results)} tensors not passing "
                 f"({', '.join(label(r) for r in bad) or 'no tensors compared'})"
                 + (f"; passed: {', '.join(good)}" if good else ""))
    for tensor, why in (getattr(report, "info", {}).get("not_compared") or {}).items():
        lines.append(f"not compared: {tensor} ({why})")  # e.g. dx of integer indices
    shown = "\n".join(lines)
    for note in dict.fromkeys(getattr(report, "info", {}).get("notes") or ()):
        if str(note) not in shown:  # how the layer was read and checked: context for the FAIL
            lines.append(f"note: {note}")
    return "\n".join(lines)


def is_autoloaded() -> bool:
    """Whether pytest loads this plugin by itself (the package is installed, with its pytest11
    entry point, and plugin autoloading is on). If not, enable it with ``-p harness.pytest_plugin``
    or ``pytest_plugins = ["harness.pytest_plugin"]``."""
    import os
    from importlib.metadata import entry_points

    if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        return False
    return any(ep.value.strip() == __name__ for ep in entry_points(group="pytest11"))


def _is_net(obj: Any) -> bool:
    return hasattr(obj, "layers") and not hasattr(obj, "backward")


def check_any(target: Any, module: Any = None, **kwargs: Any) -> Any:
    """A :class:`~harness.report.LayerReport` for a layer, layer class, LayerSpec or net."""
    from harness.check import check_layer, check_net
    from harness.user_modules import LayerSpec, is_net_class, spec_for_class
    from harness.user_modules import _net_factory as net_factory
    from harness.user_optimizers import OptimizerSpec, is_optimizer_class, optimizer_spec

    if is_optimizer_class(target if isinstance(target, type) else type(target)):
        if module is not None:
            from harness.check import CheckError

            raise CheckError("an optimizer's twin is not a module: register it with "
                             "reference.register_optimizer(cls, lambda opt, params: "
                             "torch.optim.X(params, ...))")
        target = optimizer_spec(target)
    if isinstance(target, OptimizerSpec):
        return target.check(**kwargs)
    if isinstance(target, type):
        spec = spec_for_class(target)
        if spec is None and module is None and is_net_class(target):  # parity(TwoLayerNet)
            build, how = net_factory(target, target.__name__)
            if build is None:
                from harness.check import CheckError

                raise CheckError(f"{target.__name__}: {how}")
            report = check_net(build(int(kwargs.get("seed", 0))), **kwargs)
            report.info.setdefault("notes", []).append(f"the net {how}")
            return report
        if spec is None:
            if module is None:
                from harness.check import CheckError

                raise CheckError(f"{target.__name__}: no PyTorch twin registered for it or its "
                                 f"base classes; pass an instance and module=<torch module>")
            target = target()
        else:
            target = spec
    if isinstance(target, InstanceSetting):
        return target.check(**kwargs)
    if isinstance(target, LayerSpec) and kwargs.get("name"):  # the caller's, with the setting
        from dataclasses import replace

        own, name = target.cls.__name__, kwargs.pop("name")
        target = replace(target, name=name + target.name[len(own):]
                         if target.name.startswith(own) else name)
    if isinstance(target, LayerSpec):
        if module is not None:
            return check_layer(target.build(kwargs.get("dtype", "float64"), kwargs.get("seed", 0)),
                               module, **{"name": target.name, **kwargs})
        return target.check(**kwargs)
    if _is_net(target) and module is None:
        return check_net(target, **kwargs)
    return check_layer(target, module, **kwargs)


def assert_parity(layer: Any, module: Any = None, *, batches: Iterable[int] | None = None,
                  **kwargs: Any) -> Any:
    """Check ``layer`` against its twin (``module`` if given); raise :class:`ParityError` with
    the precise report unless every tensor passes. Returns the LayerReport when it does (of
    the last dtype and batch size).

    A layer class is checked in its own configuration and in each of the built-in's other
    settings that ``nn-parity check --module`` checks it in (stride and padding, eval mode,
    large inputs, ...); an instance of a class the user registered also on large inputs and,
    if its forward takes ``train_flg``, at test time, as ``check --module`` checks it. It runs
    in float64 and float32 (as ``nn-parity check`` does; ``dtype=`` picks one) at
    each of ``batches`` (default :data:`DEFAULT_BATCHES`, those of ``nn-parity check``),
    unless ``batch``, ``input_shape`` or ``x`` fixes the input (a given ``dout`` or ``t``
    fixes the batch size to its first dimension). A FAIL or ERROR at any dtype and batch
    size fails; a batch that proves nothing (VACUOUS: BatchNorm on a batch of 1) only fails
    when no batch size of that dtype passes. A mistake in the call or the registration is a
    :class:`~harness.check.CheckError` raised from here, without the harness's own frames.

    ``kwargs`` go to :func:`harness.check_layer` (``dtype``, ``seed``, ``batch``,
    ``input_shape``, ``x``, ``t``, ``tol``, ``weight_map``, ``numerical``...) or, for a net,
    :func:`harness.check_net`.
    """
    __tracebackhide__ = True
    # a given input fits the layer's own configuration only (the settings have other shapes)
    settings = [layer] if "x" in kwargs or "input_shape" in kwargs else (
        _class_settings(layer, module) if isinstance(layer, type)
        else _instance_settings(layer, module))
    report = None
    for setting in settings:  # a class or a registered layer in each setting check --module runs
        report = _assert_one(setting, module if setting is layer else None, batches, dict(kwargs))
    return report


def _assert_one(layer: Any, module: Any, batches: Iterable[int] | None,
                kwargs: dict[str, Any]) -> Any:
    """:func:`assert_parity` for one target in one setting."""
    __tracebackhide__ = True
    from harness.check import CheckError

    fixed = any(k in kwargs for k in ("batch", "input_shape", "x"))
    given = next((kwargs[k] for k in ("dout", "t") if kwargs.get(k) is not None), None)
    if not fixed and batches is None and np.ndim(given) >= 1:
        batches = [int(np.shape(given)[0])]  # a given dout or t fixes the batch size
    sizes = [None] if fixed else list(DEFAULT_BATCHES if batches is None else batches)
    if not sizes:
        raise CheckError("assert_parity: batches is empty")
    if any(isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1
           for b in sizes if b is not None):
        raise CheckError(f"assert_parity: batches must be positive integers, got {list(sizes)}")
    # float64 first: a bug of every dtype is reported with float64's clean numbers, one of
    # the float32 path alone (a float16 product) by the float32 run
    dtypes = [kwargs.pop("dtype")] if "dtype" in kwargs else ["float64", "float32"]
    looped = len(sizes) > 1
    passed = None
    for dtype in dtypes:
        passed_here, vacuous = None, None
        for size in sizes:
            try:
                report = check_any(layer, module, dtype=dtype, **kwargs,
                                   **({} if size is None else {"batch": size}))
            except CheckError as exc:  # what to fix, told once, without our frames
                raise CheckError(str(exc)) from None
            except TypeError as exc:  # a keyword the check does not take: name it
                wrong = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
                if wrong is None:
                    raise
                raise CheckError(_unknown_keyword(wrong.group(1))) from None
            if report.ok:
                passed_here = report
            elif report.status == "VACUOUS":
                vacuous = vacuous or report
            else:
                msg = failure_message(report)
                optimizer = "steps" in report.info  # its batch only sizes W1's rows
                raise ParityError(msg + ("\n" + _BATCHES_NOTE.format(size=size, sizes=sizes)
                                         if looped and not optimizer else ""), report)
        if passed_here is None:
            raise ParityError(failure_message(vacuous), vacuous)
        passed = passed_here
    return passed


@dataclass
class InstanceSetting:
    """A user's registered layer instance in one of the settings ``nn-parity check --module``
    adds to its own: inputs large enough to overflow a naive formula, or test time."""

    layer: Any
    spec: Any  # the class's harness.user_modules.LayerSpec for that setting

    def check(self, dtype: Any = "float64", seed: int = 0, batch: int = 4, **kwargs: Any) -> Any:
        from dataclasses import replace

        from harness.check import check_layer

        spec = self.spec
        name = kwargs.pop("name", None)
        if name:  # the caller's name, with the setting: "mine (large inputs)"
            spec = replace(spec, name=f"{name} ({'large inputs' if spec.large else 'eval'})")
        if spec.large:
            return spec._check_large(self.layer, np.dtype(dtype), seed, batch, None, **kwargs)
        from harness.user_modules import EVAL_HOW, _note_failures

        kwargs = {**kwargs, "train": False, "name": spec.name}
        report = check_layer(self.layer, dtype=dtype, seed=seed, batch=batch, **kwargs)
        _note_failures(report, f"the eval setting: {type(self.layer).__name__} {EVAL_HOW}")
        return report


def _instance_settings(target: Any, module: Any) -> list[Any]:
    """An instance of a layer class the user registered, in its own configuration and in the
    settings ``check --module`` adds for such a class (large inputs, eval): ``parity(Swish())``
    fails a softmax with no max shift as ``parity_test(module)`` does. Anything else (a
    built-in's subclass, whose other settings are other instances): ``[target]``."""
    from harness.user_modules import BUILTIN, spec_for_class, variant_specs
    from harness.user_optimizers import is_optimizer_class

    cls = type(target)
    if module is not None or _is_net(target) or is_optimizer_class(cls) \
            or cls.__module__.split(".")[0] in BUILTIN:
        return [target]
    try:
        spec = spec_for_class(cls)
    except Exception:  # the check itself reports what is wrong with the class
        return [target]
    if spec is None or spec.how != "registered":
        return [target]
    return [target, *(InstanceSetting(target, v) for v in variant_specs(spec)
                      if v.large or v.eval_mode)]


def _class_settings(target: Any, module: Any) -> list[Any]:
    """A layer class given alone, as :class:`~harness.user_modules.LayerSpec` s: its own
    configuration and each of the built-in's other settings that ``nn-parity check --module``
    and :func:`parity_test` check a subclass in (``MyConv (stride 2, pad 1)``), so that
    ``parity(MyConv)`` fails a padding bug as they do. Anything else: ``[target]``."""
    if not isinstance(target, type) or module is not None:
        return [target]
    from harness.user_modules import spec_for_class, variant_specs
    from harness.user_optimizers import is_optimizer_class

    if is_optimizer_class(target):
        return [target]
    spec = spec_for_class(target)
    return [target] if spec is None else [spec, *variant_specs(spec)]


def _unknown_keyword(name: str) -> str:
    """What to say about a keyword that parity() passed on and the check did not take."""
    if name in ("dtypes", "seeds"):
        return (f"parity() got {name}=: it checks one dtype and seed per call (dtype=, seed=; "
                f"both dtypes by default); {name}=[...] parametrises a test through "
                f"@pytest.mark.parity({name}=[...]) or parity_test(..., {name}=[...])")
    from harness.check import check_layer

    known = sorted(k for k in inspect.signature(check_layer).parameters
                   if k not in ("layer", "module"))
    close = difflib.get_close_matches(name, [*known, "batches"], n=1)
    return (f"parity() got an unknown keyword {name}="
            + (f" (did you mean {close[0]}=?)" if close else "")
            + f"; it takes {', '.join([*known, 'batches'])}")


_BATCHES_NOTE = ("(batch size {size}: parity runs batch sizes {sizes} by default, as "
                 "nn-parity check does; pass batch=N or batches=[...] to choose)")


# ---------------------------------------------------------------------------------------
# Parametrisation


@dataclass
class ParityCase:
    """One parametrised check: ``case.check()`` asserts parity."""

    target: Any
    name: str
    dtype: str
    seed: int
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{id_word(self.name)}-{self.dtype}-seed{self.seed}"

    def check(self) -> Any:
        __tracebackhide__ = True
        return assert_parity(self.target, dtype=self.dtype, seed=self.seed, **self.kwargs)

    def __repr__(self) -> str:
        return f"ParityCase({self.id})"


def id_word(name: str) -> str:
    """A display name as one word for a pytest id: ``"MyConv (stride 2, pad 1)"`` ->
    ``"MyConv_stride_2_pad_1"``, so that ``pytest -k stride_2_pad_1`` (or ``-k MyConv_stride``)
    selects it; ``-k`` cannot name spaces, commas or parentheses. Word characters (letters of
    any script, digits, ``_``), ``.`` and ``-`` are kept; every other run of characters is one
    ``_``."""
    word = re.sub(r"[^\w.\-]+", "_", name).strip("_")
    return word or "layer"


def _expand(target: Any) -> list[tuple[str, Any]]:
    """(name, what to check) for a target. A layer class that subclasses a built-in (found in
    a module, or given itself) also comes in each of the built-in's other settings that
    ``nn-parity check --module`` runs it in (``"MyConv (stride 2, pad 1)"``:
    :func:`harness.user_modules.variant_specs`), so the plugin and the CLI check the same."""
    from harness.user_modules import discover, spec_for_class, variant_specs
    from harness.user_optimizers import is_optimizer_class, optimizer_spec

    def with_variants(specs: list[Any]) -> list[tuple[str, Any]]:
        return [(v.name, v) for s in specs for v in (s, *variant_specs(s))]

    if isinstance(target, ModuleType):
        from harness.user_optimizers import discover_optimizers, with_long_run

        specs = discover(target, prefix="")
        optimizers, no_twin = discover_optimizers(target, prefix="")
        if not specs and not optimizers:
            from harness.check import CheckError
            from harness.user_modules import unchecked_layers

            untwinned = [*unchecked_layers(target), *no_twin]
            also = f" ({', '.join(untwinned)}: no PyTorch twin)" if untwinned else ""
            raise CheckError(
                f"parity_cases: no layers or optimizers found in module {target.__name__}{also}: "
                f"subclass the scratch layer or optimizer a class implements (class "
                f"Affine(scratch.Affine)), name it like one (Affine, Relu, ..., Adam), or "
                f"register it with reference.register / reference.register_optimizer")
        from harness.user_modules import unchecked_layers
        from harness.user_optimizers import NO_TWIN_NOTE

        skipped = [(n, NotChecked(f"{n} has forward/backward but no PyTorch twin, so it was not "
                                  f"checked: subclass the scratch layer it implements, name it "
                                  f"like one, or register it with reference.register"))
                   for n in unchecked_layers(target)]
        skipped += [(n, NotChecked(f"{n} {NO_TWIN_NOTE}")) for n in no_twin]
        return [*with_variants(specs), *((o.name, o) for s in optimizers for o in with_long_run(s)),
                *skipped]
    if isinstance(target, type) and is_optimizer_class(target):
        from harness.user_optimizers import with_long_run

        return [(o.name, o) for o in with_long_run(optimizer_spec(target))]
    if isinstance(target, type):
        spec = spec_for_class(target)
        if spec is None:
            return [(target.__name__, target)]
        return with_variants([spec])
    return [(type(target).__name__, target)]


@dataclass
class NotChecked:
    """A class of a module that has no PyTorch twin: a skipped test saying why, never a silent
    gap in ``parity_test(module)``."""

    reason: str


def parity_cases(*targets: Any, dtypes: Iterable[str] = DEFAULT_DTYPES,
                 seeds: Iterable[int] = DEFAULT_SEEDS, **kwargs: Any) -> list[Any]:
    """``pytest.param`` cases (ids ``<Layer>-<dtype>-seed<n>``) for every target x dtype x seed.
    A setting in the layer's name is part of the id as one word (``MyConv (stride 2, pad 1)``
    -> ``MyConv_stride_2_pad_1-float64-seed0``: :func:`id_word`), selectable with ``-k``;
    reports and failure messages keep the display name.

    Use with ``@pytest.mark.parametrize("case", parity_cases(...))`` and ``case.check()``, or
    let :func:`parity_test` write the test. ``kwargs`` go to every check (e.g. ``batch=8``, or
    ``batches=(4,)``; by default each case runs at batch sizes 1, 3 and 8, as
    ``nn-parity check`` does).
    """
    dtypes, seeds = tuple(dtypes), tuple(seeds)
    params = []
    seen: dict[str, int] = {}
    for target in targets:
        for name, obj in _expand(target):
            n = seen.get(id_word(name), 0)  # names that differ only in punctuation count as one
            seen[id_word(name)] = n + 1
            label = name if n == 0 else f"{name}{n + 1}"
            if isinstance(obj, NotChecked):  # one skipped test, not one per dtype and seed
                params.append(pytest.param(None, id=f"{id_word(label)}-not-checked",
                                           marks=pytest.mark.skip(reason=obj.reason)))
                continue
            for dtype in dtypes:
                for seed in seeds:
                    case = ParityCase(obj, label, str(dtype), int(seed), dict(kwargs))
                    params.append(pytest.param(case, id=case.id))
    return params


def parity_test(*targets: Any, dtypes: Iterable[str] = DEFAULT_DTYPES,
                seeds: Iterable[int] = DEFAULT_SEEDS, **kwargs: Any) -> Callable[..., None]:
    """A parametrised test function checking every target; assign it to a ``test_*`` name."""
    cases = parity_cases(*targets, dtypes=dtypes, seeds=seeds, **kwargs)

    @pytest.mark.parametrize("parity_case", cases)
    def test_parity(parity_case: ParityCase) -> None:
        parity_case.check()

    return test_parity


# ---------------------------------------------------------------------------------------
# Fixture, marker and hooks

MARKER_DOC = ("parity(**kwargs): defaults for the parity fixture (dtype=, seed=, batch=, "
              "batches=, tol=, input_shape=...); dtypes=[...] and/or seeds=[...] parametrise the "
              "test over them")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_DOC)


def _marker_kwargs(node: Any) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for mark in reversed(list(node.iter_markers("parity"))):  # closest marker wins
        if mark.args:
            raise pytest.UsageError("@pytest.mark.parity takes keyword arguments only")
        merged.update(mark.kwargs)
    return merged


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "_nn_parity_variant" not in metafunc.fixturenames:
        return
    kw = _marker_kwargs(metafunc.definition)
    if "dtypes" not in kw and "seeds" not in kw:
        return
    dtypes = [str(d) for d in kw.get("dtypes", [kw.get("dtype", "float64")])]
    seeds = [int(s) for s in kw.get("seeds", [kw.get("seed", 0)])]
    variants = [{"dtype": d, "seed": s} for d in dtypes for s in seeds]
    metafunc.parametrize("_nn_parity_variant", variants, indirect=True,
                         ids=[f"{v['dtype']}-seed{v['seed']}" for v in variants])


@pytest.fixture
def _nn_parity_variant(request: pytest.FixtureRequest) -> dict[str, Any]:
    return dict(getattr(request, "param", {}) or {})


@pytest.fixture
def parity(request: pytest.FixtureRequest, _nn_parity_variant: dict[str, Any]) -> Callable[..., Any]:
    """``parity(layer, module=None, **kwargs)``: :func:`assert_parity` with the defaults of the
    test's ``@pytest.mark.parity(...)`` marker (and its dtype/seed parametrisation)."""
    defaults = {k: v for k, v in _marker_kwargs(request.node).items() if k not in ("dtypes", "seeds")}
    defaults.update(_nn_parity_variant)

    @functools.wraps(assert_parity)
    def _parity(layer: Any, module: Any = None, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        return assert_parity(layer, module, **{**defaults, **kwargs})

    return _parity
