"""The registry that pairs each scratch layer class with its PyTorch twin.

A :class:`Twin` says how to build the torch module that mirrors a given scratch layer, how
parameters map between the two (name and layout), how to make a representative scratch layer
for the built-in checks, and what input the layer expects. Lookup walks the scratch class's
MRO, so a user's subclass of ``scratch.Affine`` is checked against ``nn.Linear`` with no
registration at all.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch


def identity(a: np.ndarray) -> np.ndarray:
    return a


def transpose(a: np.ndarray) -> np.ndarray:
    return a.T


@dataclass(frozen=True)
class WeightSpec:
    """One scratch parameter: its torch name and the layout conversion both ways."""

    torch_name: str
    to_torch: Callable[[np.ndarray], np.ndarray] = identity
    from_torch: Callable[[np.ndarray], np.ndarray] = identity


@dataclass
class Twin:
    """How a scratch layer class is checked against PyTorch.

    * ``torch_factory(layer) -> nn.Module``: a module with the layer's configuration (weights
      are copied in afterwards by the harness through ``weight_map``).
    * ``weight_map``: scratch param name -> :class:`WeightSpec` (a plain string means the same
      layout under that torch name).
    * ``buffer_map``: scratch attribute -> WeightSpec for state that is not a parameter
      (e.g. BatchNorm running statistics), compared after forward.
    * ``input_shape(layer, batch) -> tuple``: a default input shape for this layer.
    * ``example(rng, dtype) -> layer``: a representative instance for ``nn-parity check``.
    * ``make_input(layer, shape, dtype, rng) -> x``: inputs that exercise every code path. A
      float array is cast to the check's dtype; an integer array is kept as it is: the input
      is indices (an Embedding), passed to the torch twin as ``torch.long`` and with no input
      gradient to compare (:func:`index_input` makes one).
    * ``kind``: "layer" (forward(x)/backward(dout)) or "loss" (forward(x, t)/backward()).
    * ``make_target(layer, x, rng) -> t``: labels/targets for loss layers.
    * ``prepare(layer, module, x, rng)``: called before forward, e.g. to inject one dropout mask
      into both sides.
    * ``forward_kwargs``: extra keyword arguments for the scratch forward (e.g. train_flg).
    * ``conventions``: documented differences and the switch that aligns them.
    * ``exact(layer) -> layer``: the layer with any convention that makes its forward differ
      from the function its backward differentiates switched off (the classic 1e-7 inside the
      log), used by the numerical gradient check.
    """

    scratch_cls: type
    torch_factory: Callable[[Any], torch.nn.Module]
    weight_map: dict[str, WeightSpec | str] = field(default_factory=dict)
    input_shape: Callable[[Any, int], tuple[int, ...]] | None = None
    example: Callable[[np.random.Generator, np.dtype], Any] | None = None
    make_input: Callable[[Any, tuple[int, ...], np.dtype, np.random.Generator], np.ndarray] | None = None
    kind: str = "layer"
    make_target: Callable[[Any, np.ndarray, np.random.Generator], np.ndarray] | None = None
    prepare: Callable[[Any, torch.nn.Module, np.ndarray, np.random.Generator], None] | None = None
    buffer_map: dict[str, WeightSpec | str] = field(default_factory=dict)
    forward_kwargs: Callable[[Any], dict[str, Any]] | None = None
    conventions: str = ""
    name: str = ""
    exact: Callable[[Any], Any] | None = None

    def __post_init__(self) -> None:
        who = f"register({getattr(self.scratch_cls, '__name__', self.scratch_cls)!r})"
        if isinstance(self.torch_factory, torch.nn.Module):
            # a module is callable, so it would only fail at check time, called on the layer
            m = self.torch_factory
            text = repr(m)
            build = (f"nn.{text}" if "\n" not in text and len(text) <= 60
                     and type(m).__module__.startswith("torch.nn") else f"{type(m).__name__}(...)")
            raise TypeError(f"{who}: torch_factory is a module instance ({type(m).__name__}), not a "
                            f"function: it is called with each scratch layer to build a fresh "
                            f"module for it; pass lambda layer: {build} instead")
        if not callable(self.torch_factory):
            raise TypeError(f"{who}: torch_factory must be a function layer -> nn.Module, got "
                            f"{type(self.torch_factory).__name__}")
        if isinstance(self.torch_factory, type) and issubclass(self.torch_factory, torch.nn.Module) \
                and self.torch_factory.__module__.startswith("torch."):
            # nn.LeakyReLU(layer) would take the layer as its negative_slope
            name = self.torch_factory.__name__
            raise TypeError(f"{who}: torch_factory is called with the scratch layer, so the class "
                            f"nn.{name} would get the layer as its first argument; pass "
                            f"lambda layer: nn.{name}(...) instead")
        for opt in ("input_shape", "example", "make_input", "make_target", "prepare",
                    "forward_kwargs", "exact"):
            value = getattr(self, opt)
            if value is not None and not callable(value):
                hint = " (a function (layer, batch) -> shape, e.g. lambda layer, n: (n, 9))" \
                    if opt == "input_shape" else ""
                raise TypeError(f"{who}: {opt} must be callable{hint}, got {value!r}")
        self.weight_map = {k: _spec(v, k, f"{who}: weight_map") for k, v in self.weight_map.items()}
        self.buffer_map = {k: _spec(v, k, f"{who}: buffer_map") for k, v in self.buffer_map.items()}
        if self.kind not in ("layer", "loss"):
            raise ValueError(f"Twin.kind must be 'layer' or 'loss', got {self.kind!r}")
        if not self.name:
            self.name = self.scratch_cls.__name__


def _spec(v: WeightSpec | str, key: str = "", what: str = "weight_map") -> WeightSpec:
    if isinstance(v, str):
        return WeightSpec(v)
    if not isinstance(v, WeightSpec):
        raise TypeError(f"{what}[{key!r}] must be a torch parameter name (a str) or a "
                        f"WeightSpec(torch_name, to_torch, from_torch), got {v!r}")
    for side in ("to_torch", "from_torch"):
        if not callable(getattr(v, side)):
            raise TypeError(f"{what}[{key!r}]: WeightSpec's {side} must be a function array -> "
                            f"array (reference.transpose, reference.identity, or a lambda), got "
                            f"{getattr(v, side)!r}")
    return v


def index_input(high: int | Callable[[Any], int]) -> Callable[
        [Any, tuple[int, ...], np.dtype, np.random.Generator], np.ndarray]:
    """A ``make_input`` for a layer whose input is integer indices (an embedding, a one-hot
    encoding, an embedding bag): int64 indices in ``0..high-1``, ``high`` an int or a function
    of the layer, e.g. ``index_input(lambda layer: layer.params["W"].shape[0])``.

    Where there is room, one index repeats (so a backward that writes
    ``grads["W"][idx] += dout``, which keeps one of the repeated rows' gradients, differs
    from ``np.add.at``) and the first and last valid index both occur.
    """

    def make(layer: Any, shape: tuple[int, ...], dtype: np.dtype,
             rng: np.random.Generator) -> np.ndarray:
        n = high(layer) if callable(high) else high
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"index_input: the number of indices must be a positive integer, "
                             f"got {n!r}")
        x = rng.integers(0, int(n), size=shape, dtype=np.int64)
        flat = x.reshape(-1)  # a view: x is contiguous
        if flat.size >= 4 and n >= 2:
            flat[1], flat[2] = 0, n - 1
        if flat.size >= 2:
            flat[-1] = flat[0]
        return x

    return make


_REGISTRY: dict[type, Twin] = {}


def register(
    scratch_cls: type,
    torch_factory: Callable[[Any], torch.nn.Module] | None = None,
    weight_map: dict[str, WeightSpec | str] | None = None,
    **options: Any,
) -> Any:
    """Pair ``scratch_cls`` with its torch twin. Usable as a call or as a class decorator.

    >>> register(MyAffine, lambda l: nn.Linear(*l.params["W"].shape),
    ...          {"W": WeightSpec("weight", transpose, transpose), "b": "bias"})

    >>> @register.twin(lambda l: nn.ReLU())     # decorator form
    ... class MyRelu: ...
    """
    if not isinstance(scratch_cls, type):
        raise TypeError(f"register: the first argument is the scratch layer's class, got an "
                        f"instance of {type(scratch_cls).__name__} (register({type(scratch_cls).__name__}, "
                        f"...), not register({type(scratch_cls).__name__}(), ...))")
    if torch_factory is None:
        raise TypeError(f"register({scratch_cls.__name__}): a torch_factory is required")
    unknown = sorted(set(options) - TWIN_OPTIONS)
    if unknown:
        close = {u: difflib.get_close_matches(u, sorted(TWIN_OPTIONS), n=1) for u in unknown}
        hints = ", ".join(f"{u}= (did you mean {c[0]}=?)" if c else f"{u}="
                          for u, c in close.items())
        raise TypeError(f"register({scratch_cls.__name__}): unknown option(s) {hints}; the "
                        f"options are {', '.join(sorted(TWIN_OPTIONS))}")
    if weight_map is not None and not isinstance(weight_map, dict):
        raise TypeError(f"register({scratch_cls.__name__}): weight_map must be a dict scratch "
                        f"parameter name -> torch parameter name or WeightSpec, e.g. "
                        f"{{'W': WeightSpec('weight', transpose, transpose), 'b': 'bias'}}; got "
                        f"{type(weight_map).__name__} {weight_map!r}")
    _REGISTRY[scratch_cls] = Twin(scratch_cls, torch_factory, dict(weight_map or {}), **options)
    return scratch_cls


TWIN_OPTIONS = frozenset(f.name for f in fields(Twin)) - {"scratch_cls", "torch_factory", "weight_map"}
"""The keyword options of :func:`register` (the fields of :class:`Twin` after the first three)."""


def twin(
    torch_factory: Callable[[Any], torch.nn.Module],
    weight_map: dict[str, WeightSpec | str] | None = None,
    **options: Any,
) -> Callable[[type], type]:
    """Class decorator form of :func:`register`."""

    def deco(cls: type) -> type:
        return register(cls, torch_factory, weight_map, **options)

    return deco


register.twin = twin  # type: ignore[attr-defined]


def lookup(scratch_cls: type) -> Twin | None:
    """The twin registered for ``scratch_cls`` or its nearest registered base class."""
    _ensure_builtins()
    for cls in scratch_cls.__mro__:
        if cls in _REGISTRY:
            return _REGISTRY[cls]
    return None


def registered() -> dict[type, Twin]:
    """All registered twins, built-ins first, in registration order."""
    _ensure_builtins()
    return dict(_REGISTRY)


def unregister(scratch_cls: type) -> None:
    _REGISTRY.pop(scratch_cls, None)


_builtins_loaded = False


BUILTIN_TWIN_MODULES = ("reference.layers", "reference.extra_layers")


def _ensure_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        import importlib

        for mod in BUILTIN_TWIN_MODULES:  # each registers its twins on import
            try:
                importlib.import_module(mod)
            except ModuleNotFoundError as exc:
                if exc.name != mod:
                    raise
