"""Checking a user's own layers: ``nn-parity check --module my_layers.py``.

A user module is imported (by file path or dotted name) and its layer classes are found:

* a class **registered** in it with :func:`reference.register` (or the ``@register.twin``
  decorator) is checked against its own twin. It is built with the registration's
  ``example(rng, dtype)``; without one, with its zero-argument constructor.
* a class that **subclasses a registered scratch layer** (``class Affine(scratch.Affine)``)
  needs no registration: it is checked against the nearest registered base's twin. It is built
  from that base's ``example``: its constructor is called with the example's parameters and
  attributes matched by name (``Affine(W, b)``, ``SoftmaxWithLoss(eps=...)``, ``Relu()``);
  if that is impossible the example itself is re-classed (its ``__dict__`` copied into an
  instance of the subclass made with ``object.__new__``).

Input shapes come from the twin's ``input_shape`` (inherited for subclasses) or, for a
registration without one, from ``--input-shape`` (per sample; the batch is prepended).

Every problem the user must fix (file not found, the import failed, no layers found, a layer
that cannot be built) raises :class:`~harness.check.CheckError`: exit code 2 with a message.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import inspect
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from harness.check import CheckError, check_layer
from harness.compare import ERROR, FAIL, TensorResult
from harness.report import LayerReport
from reference.registry import Twin, lookup, registered, unregister

HERE = Path(__file__).resolve().parent


# ---------------------------------------------------------------------------------------
# Importing


def _is_path(spec: str) -> bool:
    return spec.endswith(".py") or "/" in spec or os.sep in spec or Path(spec).exists()


def _summarise(exc: BaseException, limit: int = 6) -> str:
    """The user's side of a traceback: their frames (not importlib's nor ours) and the error."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith("<frozen") and not Path(f.filename).resolve().is_relative_to(HERE)]
    lines = traceback.format_list(frames[-limit:])
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines).rstrip()


def _module_name_for(path: Path) -> str:
    stem = re.sub(r"\W", "_", path.stem) or "user_module"
    if stem[0].isdigit():
        stem = f"m_{stem}"
    for n in range(1, 10_000):  # another file of the same name gets a name of its own
        name = stem if n == 1 else f"nn_parity_user_{stem}" if n == 2 else f"nn_parity_user_{stem}_{n}"
        existing = sys.modules.get(name)
        if existing is None:
            return name
        if getattr(existing, "__file__", None) and Path(existing.__file__).resolve() == path:
            return name
    raise CheckError(f"{path}: too many modules named {stem!r} are imported")


def import_user_module(spec: str) -> ModuleType:
    """Import ``spec``: a ``.py`` file (its folder joins ``sys.path`` so it can import its
    siblings), a package folder, or a dotted module name importable from ``sys.path``."""
    if _is_path(spec):
        path = Path(spec).expanduser()
        if not path.exists():
            raise CheckError(f"--module {spec}: file not found ({path.resolve()})")
        path = path.resolve()
        if path.is_dir():
            if not (path / "__init__.py").is_file():
                raise CheckError(f"--module {spec}: is a directory, not a Python file or package")
            parent, name = path.parent, path.name
            if str(parent) not in sys.path:
                sys.path.insert(0, str(parent))
            return _import_name(name, spec)
        if path.suffix != ".py":
            raise CheckError(f"--module {spec}: not a Python file (expected a .py file)")
        name = _module_name_for(path)
        if name in sys.modules:
            return sys.modules[name]
        if str(path.parent) not in sys.path:
            sys.path.insert(0, str(path.parent))
        mspec = importlib.util.spec_from_file_location(name, path)
        if mspec is None or mspec.loader is None:  # pragma: no cover - .py files always load
            raise CheckError(f"--module {spec}: cannot be imported")
        module = importlib.util.module_from_spec(mspec)
        module.__dict__["__nn_parity_name__"] = path.stem  # the name reports give it
        sys.modules[name] = module
        try:
            mspec.loader.exec_module(module)
        except KeyboardInterrupt:
            sys.modules.pop(name, None)
            raise
        except BaseException as exc:
            sys.modules.pop(name, None)
            raise CheckError(f"--module {spec}: importing it raised "
                             f"{type(exc).__name__}:\n{_summarise(exc)}") from exc
        return module
    return _import_name(spec, spec)


def _import_name(name: str, spec: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except KeyboardInterrupt:
        raise
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise CheckError(f"--module {spec}: no such file, and no module named {exc.name!r} "
                             f"on the Python path") from exc
        raise CheckError(f"--module {spec}: importing it raised "
                         f"{type(exc).__name__}:\n{_summarise(exc)}") from exc
    except BaseException as exc:
        raise CheckError(f"--module {spec}: importing it raised "
                         f"{type(exc).__name__}:\n{_summarise(exc)}") from exc


# ---------------------------------------------------------------------------------------
# Finding and building layers


@dataclass
class LayerSpec:
    """A layer class to check: its twin, and how an instance is made."""

    name: str
    cls: type
    twin: Twin
    how: str  # "registered" or "subclass of <Base>"
    base_twin: Twin | None = None  # the registered base whose example builds a subclass
    input_shape: tuple[int, ...] | None = None  # per sample, for twins without input_shape
    notes: list[str] = field(default_factory=list)
    # a harness.suite.Variant that builds and runs this layer: for a subclass of a built-in
    # whose registration has no example= (BatchNormalization), the class's own case (label
    # ""); for the subclass in one of the built-in's other settings (variant_specs), that one
    default: Any = None
    settings: bool = False  # build with the variant's settings, not the subclass's defaults
    large: bool = False  # a registered layer on inputs large enough to overflow a naive formula
    eval_mode: bool = False  # a registered layer whose forward takes train_flg, at test time
    # the built-in's own configuration (stride, pad, mode, ...) that a variant changes
    builtin_settings: dict[str, Any] = field(default_factory=dict)

    def build(self, dtype: Any = np.float64, seed: int = 0) -> Any:
        """A fresh instance (the built-in suite's convention: example rng seeded 1000 + seed)."""
        rng = np.random.default_rng(1000 + seed)
        dtype = np.dtype(dtype)
        if self.base_twin is None:
            if self.twin.example is not None:
                layer = self.twin.example(rng, dtype)
                if not isinstance(layer, self.cls):
                    raise CheckError(
                        f"{self.name}: the registration's example(rng, dtype) built a "
                        f"{type(layer).__name__}, not a {self.cls.__name__} (copied from another "
                        f"registration?): the check would test the wrong class")
                return layer
            if _required_args(self.cls):
                raise CheckError(
                    f"{self.name}: cannot build it: its constructor needs "
                    f"{_required_args(self.cls)}; add example=lambda rng, dtype: "
                    f"{self.cls.__name__}(...) to its registration")
            return self.cls()
        assert self.base_twin.example is not None
        return construct_like(self.cls, self.base_twin.example(rng, dtype), self.notes)

    def check(self, dtype: Any = np.float64, seed: int = 0, batch: int = 4,
              input_shape: tuple[int, ...] | None = None, **kwargs: Any) -> LayerReport:
        """``check_layer`` on a fresh instance. A failure to build it is an ERROR result."""
        dtype = np.dtype(dtype)
        if self.default is not None:
            if input_shape is not None:
                kwargs["input_shape"] = input_shape
            return _variant_runner(self, self.default, self.name, settings=self.settings)(
                dtype, seed, batch, **kwargs)
        try:
            layer = self.build(dtype, seed)
        except CheckError:
            raise
        except Exception as exc:
            res = TensorResult(layer=self.name, tensor="construct", status=ERROR, dtype=dtype.name,
                               message=f"building the layer raised {type(exc).__name__}: {exc}")
            return LayerReport(layer=self.name, dtype=dtype.name, seed=seed, results=[res])
        if self.eval_mode:
            kwargs.setdefault("train", False)
            input_shape = input_shape or (None if self.twin.input_shape is not None or
                                          self.input_shape is None else (batch, *self.input_shape))
            report = check_layer(layer, dtype=dtype, seed=seed, batch=batch,
                                 input_shape=input_shape, name=self.name, **kwargs)
            _note_failures(report, f"the eval setting: {self.cls.__name__} {EVAL_HOW}")
            return report
        if self.large:
            return self._check_large(layer, dtype, seed, batch, input_shape, **kwargs)
        if input_shape is None and self.twin.input_shape is None:
            per_sample = self.input_shape
            if per_sample is None:
                raise CheckError(
                    f"{self.name}: no input shape: its registration has no input_shape= and no "
                    f"--input-shape was given (e.g. --input-shape 9 for (batch, 9) inputs)")
            input_shape = (batch, *per_sample)
        return check_layer(layer, dtype=dtype, seed=seed, batch=batch, input_shape=input_shape,
                           name=self.name, **kwargs)


    def _check_large(self, layer: Any, dtype: np.dtype, seed: int, batch: int,
                     input_shape: tuple[int, ...] | None, **kwargs: Any) -> LayerReport:
        """The layer on :func:`reference.extra_layers.large_inputs` (half the values x40,
        part of one row near 320; a loss's logits x100), as the built-in Sigmoid, Tanh and
        SoftmaxWithLoss are checked: a naive exp or log overflows there."""
        from reference.extra_layers import large_inputs

        kwargs.pop("numerical", None)  # central differences are meaningless at this scale
        batch = max(batch, 2)  # the first row is pushed to saturation: not the only one
        if input_shape is None:
            input_shape = (tuple(self.twin.input_shape(layer, batch))
                           if self.twin.input_shape is not None else
                           (batch, *self.input_shape) if self.input_shape else None)
        if input_shape is None:
            raise CheckError(f"{self.name}: no input shape: its registration has no "
                             f"input_shape= and no --input-shape was given")
        scale = 100.0 if self.twin.kind == "loss" else 40.0
        x = large_inputs(scale)(np.random.default_rng([seed, batch, 0x1A]), input_shape, dtype)
        return check_layer(layer, dtype=dtype, seed=seed, x=x, name=self.name, **kwargs)


def _required_args(cls: type) -> list[str]:
    try:
        sig = inspect.signature(cls)
    except (TypeError, ValueError):
        return []
    return [p.name for p in sig.parameters.values()
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def construct_like(cls: type, template: Any, notes: list[str] | None = None, *,
                   settings: bool = False) -> Any:
    """An instance of ``cls`` (a subclass of ``type(template)``) configured like ``template``.

    The constructor is called with ``template``'s parameters (weights) matched by argument
    name. Its other arguments keep the subclass's own defaults (the configuration the user
    wrote: ``def __init__(self, W, b, stride=2, pad=1)`` is checked at stride 2, pad 1); only
    those without a default come from ``template``'s attributes. ``settings=True`` (a
    :class:`~harness.suite.Variant`) takes every argument ``template`` has, defaults or not.
    If an argument cannot be matched or the constructor raises, ``template``'s ``__dict__``
    is copied into ``object.__new__(cls)`` instead.
    """
    params = getattr(template, "params", None) or {}
    attrs = vars(template)
    try:
        sig: inspect.Signature | None = inspect.signature(cls)
    except (TypeError, ValueError):
        sig = None
    if sig is not None:
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        missing = []
        for p in sig.parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            if p.name in params:
                value = np.array(params[p.name], copy=True)
            elif p.default is not p.empty and not settings:
                continue
            elif p.name in attrs and not p.name.startswith("_"):
                value = copy.deepcopy(attrs[p.name])
            elif p.default is not p.empty:
                continue
            else:
                missing.append(p.name)
                continue
            if p.kind is p.POSITIONAL_ONLY:
                args.append(value)
            else:
                kwargs[p.name] = value
        if not missing:
            try:
                return cls(*args, **kwargs)
            except Exception as exc:
                if notes is not None:
                    notes.append(f"{cls.__name__}(...) raised {type(exc).__name__}: {exc}; "
                                 f"checked a re-classed {type(template).__name__} example")
        elif notes is not None:
            notes.append(f"{cls.__name__}() needs {missing}, not in the "
                         f"{type(template).__name__} example; checked a re-classed example")
    obj = object.__new__(cls)
    obj.__dict__.update(copy.deepcopy(attrs))
    return obj


def display_name(module: ModuleType) -> str:
    """A user module's name in reports: its file's stem (``my_layers``) even when it was
    imported under another name beside a module of the same name."""
    return str(module.__dict__.get("__nn_parity_name__") or module.__name__.rsplit(".", 1)[-1])


def spec_for_class(cls: type, name: str | None = None) -> LayerSpec | None:
    """How to check ``cls``, or None if neither it nor a base class is registered."""
    table = registered()
    name = name or cls.__name__
    if cls in table:
        return LayerSpec(name, cls, table[cls], "registered")
    twin = lookup(cls)
    if twin is None:
        from harness.book_layers import twin_by_name

        twin = twin_by_name(cls)  # class Affine: ... from the book, no registration
        if twin is None:
            return None
        return LayerSpec(name, cls, twin, f"matched by its class name to the built-in "
                         f"{twin.name}", base_twin=twin if twin.example is not None else None)
    base = next((b for b in cls.__mro__ if b in table and table[b].example is not None), None)
    if base is None:
        from harness.suite import variants_for

        default = next((v for v in variants_for(cls) if not v.label), None)
        if default is not None:
            return LayerSpec(name, cls, twin, f"subclass of {default.base.__name__}",
                             default=default)
        if _required_args(cls):
            raise CheckError(f"{name}: subclasses {twin.scratch_cls.__name__}, whose registration "
                             f"has no example=, and its constructor needs {_required_args(cls)}: "
                             f"register it with example=lambda rng, dtype: {cls.__name__}(...)")
        return LayerSpec(name, cls, twin, f"subclass of {twin.scratch_cls.__name__}")
    return LayerSpec(name, cls, twin, f"subclass of {base.__name__}", base_twin=table[base])


def discover(module: ModuleType, prefix: str | None = None) -> list[LayerSpec]:
    """The layer classes defined in ``module`` that can be checked, in definition order."""
    from harness.book_layers import twin_by_name

    prefix = display_name(module) if prefix is None else prefix
    found, seen = [], set()
    table = registered()
    for attr, obj in vars(module).items():
        if not isinstance(obj, type) or attr.startswith("_") or obj in seen:
            continue
        # its own classes, and user classes it imports that have a twin: registered (twins kept
        # in a file of their own: from my_layers import Swish; register(Swish, ...)) or named
        # like a built-in (from book_layers import Affine); never the built-ins it imports
        imported = obj.__module__ != module.__name__
        if imported and (obj.__module__.split(".")[0] in BUILTIN
                         or (obj not in table and twin_by_name(obj) is None)):
            continue  # a built-in it imports, or a helper class: not its own to check
        seen.add(obj)
        # an imported class by the name the module gives it (from book import Pooling as
        # BookPooling): its own name may be that of a class the module defines
        own = attr if imported else obj.__name__
        spec = spec_for_class(obj, f"{prefix}.{own}" if prefix else own)
        if spec is not None:
            found.append(spec)
    return found


BUILTIN = ("scratch", "reference", "harness")
"""Packages whose registered classes a user module may import without checking them."""


def unchecked_layers(module: ModuleType) -> list[str]:
    """Classes defined in ``module`` that look like layers (``forward`` and ``backward``) but
    have no twin: neither registered nor subclassing a registered layer nor named like one."""
    from harness.book_layers import twin_by_name

    return [obj.__name__ for attr, obj in vars(module).items()
            if isinstance(obj, type) and obj.__module__ == module.__name__
            and not attr.startswith("_") and callable(getattr(obj, "forward", None))
            and callable(getattr(obj, "backward", None)) and lookup(obj) is None
            and twin_by_name(obj) is None]


NET_SIZES: dict[str, Any] = {
    "input_size": 12, "hidden_size": 8, "output_size": 5, "hidden_size_list": [8, 6],
    "input_dim": (1, 10, 10),
}
"""Sizes for the arguments of a net's constructor that have no default, by the book's names
(``TwoLayerNet(input_size, hidden_size, output_size)``, ``MultiLayerNet(input_size,
hidden_size_list, output_size)``): small, so a check stays quick."""


def is_net_class(obj: Any) -> bool:
    """A class that looks like a whole net: ``gradient`` and ``predict``, no ``backward``."""
    return (isinstance(obj, type) and callable(getattr(obj, "gradient", None))
            and callable(getattr(obj, "predict", None))
            and not callable(getattr(obj, "backward", None)))


def kwargs_of(cls: type) -> dict[str, Any]:
    """The :data:`NET_SIZES` a net's constructor gets: its arguments without a default."""
    try:
        params = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {p.name: NET_SIZES[p.name] for p in params
            if p.default is inspect.Parameter.empty and p.name in NET_SIZES}


def _net_factory(cls: type, label: str) -> tuple[Callable[[int], Any] | None, str]:
    """A function ``seed -> a new cls``, with the book's sizes for the constructor arguments
    that have no default, and a note saying which it used; None and why where an argument
    is neither defaulted nor one of :data:`NET_SIZES`."""
    try:
        sig = inspect.signature(cls)
    except (TypeError, ValueError):
        return None, "a net, not checked: its constructor's signature cannot be read"
    needed = [p.name for p in sig.parameters.values()
              if p.default is inspect.Parameter.empty
              and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = [n for n in needed if n not in NET_SIZES]
    if unknown:
        return None, (f"a net, not checked: its constructor needs {unknown}; make one "
                      f"at module level (net = {cls.__name__}(...)) and that instance is "
                      f"checked, or call harness.check_net({cls.__name__}(...))")
    kwargs = {n: copy.deepcopy(NET_SIZES[n]) for n in needed}

    def build(seed: int) -> Any:
        state = np.random.get_state()  # noqa: NPY002 (the book's nets draw from np.random)
        np.random.seed(seed)  # noqa: NPY002
        try:
            return cls(**kwargs)
        except Exception as exc:
            raise CheckError(f"{label}: {cls.__name__}(**{kwargs}) raised "
                             f"{type(exc).__name__}: {exc}") from exc
        finally:
            np.random.set_state(state)  # noqa: NPY002

    how = (f"built as {cls.__name__}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"
           if kwargs else f"built as {cls.__name__}()")
    return build, how


def discover_nets(module: ModuleType) -> tuple[list[tuple[str, Callable[[int], Any]]],
                                                dict[str, list[str]]]:
    """The nets of ``module`` to check, as ``(name, seed -> net)``: its instances at module
    level (``net = TwoLayerNet(784, 50, 10)``: that very net, copied by the check) and the net
    classes it defines that have no instance there (built with :func:`_net_factory`); and
    notes, per name, on how each was built or why it was not checked."""
    prefix = display_name(module)
    found: list[tuple[str, Callable[[int], Any]]] = []
    notes: dict[str, list[str]] = {}
    instanced = set()
    for attr, obj in vars(module).items():
        if attr.startswith("_") or isinstance(obj, type) or not is_net_class(type(obj)) \
                or getattr(obj, "layers", None) is None:
            continue
        instanced.add(type(obj))
        found.append((f"{prefix}.{attr}", lambda seed, net=obj: net))
        notes[f"{prefix}.{attr}"] = [f"the net {attr} = {type(obj).__name__}(...) of the "
                                     f"module, as built there (one net: every seed checks it)"]
    for attr, obj in vars(module).items():
        if attr.startswith("_") or not is_net_class(obj) or obj.__module__ != module.__name__ \
                or obj in instanced:
            continue
        label = f"{prefix}.{obj.__name__}"
        build, how = _net_factory(obj, label)
        if build is not None:  # built once here: a class that is no net of layers is a note
            try:
                trial = build(0)
            except CheckError as exc:
                cause = exc.__cause__
                build, how = None, (f"a net, not checked: {obj.__name__}(**{kwargs_of(obj)}) "
                                    f"raised {type(cause).__name__}: {cause}")
            else:
                if getattr(trial, "layers", None) is None:
                    build, how = None, ("has gradient() and predict() but its instances no "
                                        ".layers: not checked as a net")
        if build is None:
            notes[label] = [how]
            continue
        found.append((label, build))
        notes[label] = [f"{how}, np.random seeded with the check's seed"]
    return found, notes


def _net_runner(build: Callable[[int], Any]) -> Callable[..., LayerReport]:
    def run(dtype: np.dtype, seed: int, batch: int) -> LayerReport:
        from harness.check import check_net

        return check_net(build(seed), dtype=dtype, seed=seed, batch=batch)

    return run


# ---------------------------------------------------------------------------------------
# The check command's --module


@dataclass
class _Loaded:
    modules: list[ModuleType] = field(default_factory=list)
    specs: list[Any] = field(default_factory=list)  # LayerSpec and OptimizerSpec
    case_names: list[str] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)  # classes not checked, and why


_LOADED = _Loaded()


def parse_shape(text: str) -> tuple[int, ...]:
    """``"3,8,8"`` or ``"3x8x8"`` or ``"9"`` -> a per-sample shape (for argparse ``type=``)."""
    import argparse

    parts = text.replace("x", ",").split(",")
    try:  # every part a number: "3,x" or "3,,4" is a typo, not (3,) or (3, 4)
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"expected positive integers like 9 or 3,8,8, got {text!r}")
    return dims


def load_user_modules(specs: list[str], *, input_shape: Iterable[int] | None = None) -> list[ModuleType]:
    """Import each user module, find its layers and add them to the check suite as cases of
    group ``"user"`` named ``<module>.<Class>`` (see :func:`user_cases`)."""
    from harness.suite import add_case
    from harness.user_optimizers import NO_TWIN_NOTE, discover_optimizers, with_long_run

    forget_user_modules()  # a command's modules only: an earlier load in this process is gone
    shape = tuple(int(s) for s in input_shape) if input_shape is not None else None
    modules = []
    for spec in specs:
        module = import_user_module(spec)
        layers = discover(module)
        optimizers, no_twin = discover_optimizers(module)
        nets, net_notes = discover_nets(module)
        if not layers and not optimizers and not nets:
            unchecked = unchecked_layers(module)
            which = (f": {', '.join(unchecked)} {'has' if len(unchecked) == 1 else 'have'} "
                     f"forward/backward but no PyTorch twin" if unchecked else "")
            also = (f"; {', '.join(no_twin)} {NO_TWIN_NOTE}" if no_twin else
                    "; optimizers (an update(params, grads) method) are found too when they "
                    "subclass a scratch optimizer, are named like one or are registered with "
                    "reference.register_optimizer")
            nets = [n for n, o in vars(module).items() if isinstance(o, type)
                    and o.__module__ == module.__name__ and callable(getattr(o, "gradient", None))
                    and callable(getattr(o, "predict", None))]
            net_hint = (f"; {', '.join(nets)} {'is a net' if len(nets) == 1 else 'are nets'}: "
                        f"check a net from Python with harness.check_net(net) (it needs the "
                        f"sizes its constructor takes)" if nets else "")
            raise CheckError(
                f"--module {spec}: no layers found in {display_name(module)}{which}: define "
                f"classes that subclass a scratch layer (e.g. class Affine(scratch.Affine)) or "
                f"register them with reference.register(cls, torch_factory, weight_map)"
                f"{also}{net_hint}")
        for name in unchecked_layers(module):
            _LOADED.notes[f"{display_name(module)}.{name}"] = [
                "has forward/backward but no PyTorch twin, so it was not checked: subclass the "
                "scratch layer it implements or register it with reference.register(cls, "
                "torch_factory, weight_map)"]
        for name in no_twin:
            _LOADED.notes[name] = [NO_TWIN_NOTE]
        for os_ in optimizers:
            for run_spec in with_long_run(os_):
                add_case(run_spec.name, run_spec.check, group="user")
                _LOADED.case_names.append(run_spec.name)
            _LOADED.specs.append(os_)
        done = {getattr(s, "cls", None) for s in _LOADED.specs}
        for ls in layers:
            if ls.cls in done:  # imported by another --module that registers it: once
                continue
            ls.input_shape = shape
            add_case(ls.name, _case_runner(ls), group="user", numerical=True)
            _LOADED.specs.append(ls)
            _LOADED.case_names.append(ls.name)
            for vs in variant_specs(ls):  # a built-in's other settings; large inputs
                add_case(vs.name, _case_runner(vs), group="user",
                         numerical=not vs.large and (vs.default is None or vs.default.numerical))
                _LOADED.case_names.append(vs.name)
        for name, build in nets:
            add_case(name, _net_runner(build), group="user")
            _LOADED.case_names.append(name)
        _LOADED.notes.update(net_notes)
        modules.append(module)
        _LOADED.modules.append(module)
    return modules


def _case_runner(ls: LayerSpec) -> Callable[..., LayerReport]:
    def run(dtype: np.dtype, seed: int, batch: int, numerical: bool = False) -> LayerReport:
        return ls.check(dtype, seed=seed, batch=batch, numerical=numerical)

    return run


def _settings(layer: Any) -> dict[str, Any]:
    """A layer's configuration: its plain scalar attributes (stride, pad, mode, ...)."""
    return {k: v for k, v in vars(layer).items()
            if not k.startswith("_") and isinstance(v, (bool, int, float, str, type(None)))}


def _param_shapes(layer: Any) -> dict[str, tuple[int, ...]]:
    params = getattr(layer, "params", None)
    return {k: tuple(np.shape(v)) for k, v in params.items()} if isinstance(params, dict) else {}


def _takes_train_flg(cls: type) -> bool:
    from harness.check import accepts

    forward = getattr(cls, "forward", None)
    return callable(forward) and accepts(forward, "train_flg")


def variant_specs(ls: LayerSpec) -> list[LayerSpec]:
    """A subclass of a built-in in each of the built-in's other settings that the check suite
    runs (stride 2 and pad 1, eval mode, 4-D input, ...: :class:`harness.suite.Variant`), named
    ``<layer> (<setting>)``, for those its constructor can reach. A subclass that fixes a
    setting (e.g. ``super().__init__(2, 2, stride=2)``) skips the ones it cannot, with a
    note (:func:`user_notes`)."""
    from harness.suite import variants_for

    if ls.how == "registered" and not (ls.large or ls.eval_mode) \
            and ls.cls.__module__.split(".")[0] not in BUILTIN:
        # a layer of the user's own: the built-ins' large-input setting (a custom make_input
        # chose the inputs on purpose: not overridden), and test time for a forward that
        # takes train_flg (a batch norm's running statistics, a dropout's scaling)
        fits = ls.twin.kind in ("layer", "loss") and ls.twin.make_input is None
        large = [replace(ls, name=f"{ls.name} (large inputs)", how=f"{ls.how}, large inputs",
                         large=True)] if fits else []
        evaluation = [replace(ls, name=f"{ls.name} (eval)", how=f"{ls.how}, eval",
                              eval_mode=True)] if ls.twin.kind == "layer" and _takes_train_flg(
                                  ls.cls) else []
        return large + evaluation
    if ls.settings or ls.large or (ls.base_twin is None and ls.default is None):
        return []
    usable = []
    rng0, f64 = np.random.default_rng(1000), np.dtype(np.float64)
    # the built-in's own configuration: a setting is what a variant changes from it (stride,
    # pad, mode), not what the subclass may choose freely (a dropout ratio, a loss's eps)
    base = _settings(ls.base_twin.example(rng0, f64) if ls.base_twin is not None
                     else ls.default.make(rng0, f64))
    # a class matched to a built-in by its name (the book's layout) gets that built-in's
    # settings too: it is no subclass of it
    builtin = next((c for c, t in registered().items() if t is ls.twin), ls.cls)
    for v in variants_for(ls.cls if issubclass(ls.cls, builtin) else builtin):
        if not v.label:  # the class's own case: the main one
            continue
        template = v.make(np.random.default_rng(1000), f64)
        try:
            built = construct_like(ls.cls, template, settings=True)
        except Exception:  # the run reports it (an ERROR row), as for the main case
            usable.append(v)
            continue
        want, got = _settings(template), _settings(built)
        differ = sorted(k for k in want if k in got and got[k] != want[k]
                        and (k not in base or base[k] != want[k]))
        shapes = _param_shapes(template)
        other = {k: v for k, v in _param_shapes(built).items() if shapes.get(k, v) != v}
        if differ:
            ls.notes.append(f"not checked in the built-in {v.name} setting: the constructor "
                            f"keeps {', '.join(f'{k}={got[k]!r}' for k in differ)}")
        elif other:  # it builds its own weights from shape arguments the setting cannot set
            ls.notes.append(f"not checked in the built-in {v.name} setting: the constructor "
                            f"builds {', '.join(f'{k} {s}' for k, s in other.items())}, the "
                            f"setting needs {', '.join(f'{k} {shapes[k]}' for k in other)}")
        else:
            usable.append(v)
    return [replace(ls, name=f"{ls.name} ({v.label})", how=f"{ls.how}, {v.label}",
                    default=v, settings=True, builtin_settings=base) for v in usable]


def _variant_runner(ls: LayerSpec, v: Any, name: str,
                    settings: bool = True) -> Callable[..., LayerReport]:
    def run(dtype: np.dtype, seed: int, batch: int, **kwargs: Any) -> LayerReport:
        dtype = np.dtype(dtype)
        try:
            layer = construct_like(ls.cls, v.make(np.random.default_rng(1000 + seed), dtype),
                                   ls.notes, settings=settings)
        except Exception as exc:
            res = TensorResult(layer=name, tensor="construct", status=ERROR, dtype=dtype.name,
                               message=f"building the layer raised {type(exc).__name__}: {exc}")
            return LayerReport(layer=name, dtype=dtype.name, seed=seed, results=[res])
        report = v.check(layer, dtype, seed, batch, name=name, **kwargs)
        if settings and v.label:
            _explain_setting(report, ls, v, layer)
        return report

    return run


EVAL_HOW = ("forward(x, train_flg=False), then backward: the test-time derivative, as torch's "
            "eval mode computes it")


def _note_failures(report: LayerReport, note: str) -> None:
    for r in report.results:
        if r.status in (FAIL, ERROR):
            r.message = f"{r.message} [{note}]" if r.message else f"[{note}]"


def _explain_setting(report: LayerReport, ls: LayerSpec, v: Any, layer: Any) -> None:
    """Say on each failing row of a subclass checked in one of the built-in's other settings
    which setting that is: a class that implements only the built-in's default (a book
    BatchNorm that always flattens, whatever ``mode`` its inherited constructor took) fails
    there with a NumPy error that names no setting."""
    bad = [r for r in report.results if r.status in (FAIL, ERROR)]
    if not bad:
        return
    base = ls.builtin_settings
    changed = {k: val for k, val in _settings(layer).items() if k in base and base[k] != val}
    what = ", ".join(f"{k}={val!r}" for k, val in changed.items())
    how = [f"built with {what}"] if what else []
    if v.kwargs.get("train", True) is False:
        how.append(EVAL_HOW)
    note = (f"the built-in {getattr(v, 'base', type(layer)).__name__}'s '{v.label}' setting"
            + (f": {ls.cls.__name__} {'; '.join(how)}" if how else ""))
    if changed:
        defaults = ", ".join(f"{k}={base[k]!r}" for k in changed)
        k = list(changed)[-1]
        builtin = getattr(v, "base", None)
        how_to = (f"super().__init__(..., {k}={base[k]!r})"
                  if isinstance(builtin, type) and issubclass(ls.cls, builtin)
                  else f"self.{k} = {base[k]!r}")
        note += (f"; a setting the class does not implement can be kept at the built-in's "
                 f"default ({defaults}) in its constructor (e.g. {how_to}), and this setting is "
                 f"then skipped with a note")
    _note_failures(report, note)


def user_notes() -> dict[str, list[str]]:
    """What the loaded user layers could not be checked as asked (a constructor that could not
    be called with the example's settings, a built-in setting it cannot reach), per layer."""
    notes = {ls.name: list(dict.fromkeys(ls.notes)) for ls in _LOADED.specs if ls.notes}
    return {**_LOADED.notes, **notes}


def user_cases() -> list[Any]:
    """The suite cases :func:`load_user_modules` added, in load order."""
    from harness.suite import _EXTRA

    names = set(_LOADED.case_names)
    return [c for c in _EXTRA if c.name in names and c.group == "user"]


def forget_user_modules() -> None:
    """Undo :func:`load_user_modules`: drop its cases, registrations and imported modules."""
    from harness.suite import _EXTRA

    names = set(_LOADED.case_names)
    _EXTRA[:] = [c for c in _EXTRA if not (c.group == "user" and c.name in names)]
    from reference.optimizers import registered_optimizers, unregister_optimizer

    for module in _LOADED.modules:
        for cls, _twin in list(registered().items()):
            if cls.__module__ == module.__name__:
                unregister(cls)
        for cls in registered_optimizers():
            if cls.__module__ == module.__name__:
                unregister_optimizer(cls)
        if sys.modules.get(module.__name__) is module:
            del sys.modules[module.__name__]
    _LOADED.modules.clear()
    _LOADED.specs.clear()
    _LOADED.case_names.clear()
    _LOADED.notes.clear()
