"""``check_layer`` and ``check_net``: run scratch and torch on identical weights and inputs.

Both return a :class:`~harness.report.LayerReport` and never raise for a numerical mismatch;
misuse (unknown layer with no module, bad shapes or dtypes, mismatched parameter sets) raises
:class:`CheckError` (a ``ValueError``) with a message that names the problem.
"""

from __future__ import annotations

import copy
import functools
import inspect
import math
import re
import threading
import traceback
import types
from collections.abc import Callable, Iterable, MutableMapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.compare import (
    DEFAULT_TOLERANCES,
    ERROR,
    FAIL,
    PASS,
    VACUOUS,
    TensorResult,
    Tolerance,
    check_accuracy,
    compare,
    default_tolerance,
)
from harness.report import LayerReport
from reference.registry import Twin, WeightSpec, identity, lookup, transpose

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
TORCH_DTYPE = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}

DX_NOT_APPLICABLE = ("not applicable: the input x is integer indices, which have no gradient "
                     "(torch gives none); whatever the scratch backward returns for it is not "
                     "compared")
"""Why an integer-index input (an Embedding's) has no ``dx`` row: ``LayerReport.info
["not_compared"]["dx"]``."""


def is_index(x: Any) -> bool:
    """Whether ``x`` is an integer-index input (an Embedding's): the scratch layer gets it as
    it is, the torch twin as ``torch.long``, and no input gradient is compared."""
    return isinstance(x, np.ndarray) and x.dtype.kind in "iu"


def torch_input(x: np.ndarray, tdt: torch.dtype, requires_grad: bool = True) -> torch.Tensor:
    """``x`` for the torch twin: a ``torch.long`` copy of integer indices (nn.Embedding takes
    no other integer type; they have no gradient), else a ``tdt`` copy."""
    if is_index(x):
        return torch.from_numpy(x.astype(np.int64))
    return torch.tensor(x, dtype=tdt, requires_grad=requires_grad)


def to_torch(a: Any) -> torch.Tensor:
    """A C-contiguous copy of ``a`` as a tensor, 0-d kept 0-d (``np.ascontiguousarray`` would
    make a 0-d array 1-d: a 0-d output's gradient then has shape [1], which torch rejects)."""
    return torch.from_numpy(np.array(a, order="C"))


def cast_targets(t: Any, dtype: np.dtype) -> Any:
    """Float targets ``t`` in ``dtype`` (the check's, or float64 for the numerical check):
    torch losses refuse float32 targets with float64 scores. Integer labels stay as they are."""
    if isinstance(t, np.ndarray) and t.dtype.kind == "f" and t.dtype != dtype:
        return t.astype(dtype)
    return t


class CheckError(ValueError):
    """Misuse of the harness: a message names the layer and the problem."""


def one_thread(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fn`` with NumPy's BLAS and PyTorch limited to one thread each (restored after).

    A check alternates NumPy and PyTorch on tiny tensors: a second thread only adds hand-offs,
    and on a busy 2-core machine the two libraries' spinning thread pools fight
    (docs/benchmarks.md: ``nn-parity check`` took 11-29 s with the default threads under load,
    6.5-10 s with one). Switching costs ~5 us per call.
    """
    from harness.threads import limit_threads

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with limit_threads(1, 1):
            return fn(*args, **kwargs)

    return wrapper


# ---------------------------------------------------------------------------------------
# Helpers


def as_float_dtype(dtype: Any) -> np.dtype:
    if dtype is None:  # np.dtype(None) is float64: say so rather than guess
        raise CheckError("dtype must be float32 or float64, got None")
    try:
        d = np.dtype(dtype)
    except TypeError as exc:
        raise CheckError(f"dtype must be float32 or float64, got {dtype!r}") from exc
    if d not in FLOAT_DTYPES:
        raise CheckError(f"dtype must be float32 or float64, got {d}")
    return d


def validate_layer(layer: Any, methods: bool = True) -> None:
    """A layer is an instance with ``forward`` and ``backward`` methods: a class, a function
    or an object without them (``methods``) is a :class:`CheckError` saying what to pass."""
    if isinstance(layer, type):
        raise CheckError(f"{layer.__name__} is a class, not a layer: pass an instance "
                         f"({layer.__name__}(...)); the pytest plugin's parity() also takes "
                         f"a class and builds it like nn-parity check --module does")
    if not methods:
        return
    missing = [m for m in ("forward", "backward") if not callable(getattr(layer, m, None))]
    if missing:
        what = getattr(layer, "__name__", None) or type(layer).__name__
        raise CheckError(f"{what} is not a layer: it has no {' and no '.join(missing)} method "
                         f"(a layer has forward(x) -> out and backward(dout) -> dx; a loss "
                         f"forward(x, t) -> loss and backward(dout=1) -> dx)")


def layer_name(layer: Any) -> str:
    return type(layer).__name__


def validate_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise CheckError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def validate_tol(tol: Any) -> Tolerance | None:
    if tol is not None and not isinstance(tol, Tolerance):
        raise CheckError(f"tol must be a harness.compare.Tolerance(rtol, atol) or None, got {tol!r}")
    return tol


def validate_shape(name: str, shape: Any, what: str = "input_shape") -> tuple[int, ...]:
    """``shape`` as a tuple of positive ints, or a :class:`CheckError` naming what is wrong."""
    if isinstance(shape, np.ndarray) and shape.ndim == 1:
        shape = tuple(shape.tolist())
    if not isinstance(shape, (tuple, list)) or not shape or not all(
            isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in shape):
        raise CheckError(f"{name}: {what} must be positive integers, got {shape!r} (a tuple, "
                         f"the batch first, e.g. (4, 12))")
    return tuple(int(s) for s in shape)


_ATOMS = (type(None), bool, int, float, complex, str, bytes, np.generic, np.dtype, type,
          types.FunctionType, types.BuiltinFunctionType, types.MethodType)


def _share_uncopyable(obj: Any, memo: dict[int, Any], seen: set[int], root: bool = False,
                      depth: int = 0) -> None:
    """Fill ``memo`` (a ``copy.deepcopy`` memo) so that every object under ``obj`` that
    deepcopy rejects (a module: ``self.xp = np``; a lock, a file handle) maps to itself: it is
    shared by the copy, not copied. Containers and objects with a ``__dict__`` are searched
    first, so only the culprit is shared and the arrays around it are still copied. ``root``
    (the layer) is never shared."""
    if id(obj) in seen or isinstance(obj, (np.ndarray, *_ATOMS)) or depth > 20:
        return
    seen.add(id(obj))
    if isinstance(obj, types.ModuleType):
        memo[id(obj)] = obj
        return
    if isinstance(obj, dict):
        children = [*obj.keys(), *obj.values()]
    elif isinstance(obj, (list, tuple, set, frozenset)):
        children = list(obj)
    else:
        d = getattr(obj, "__dict__", None)
        children = list(d.values()) if isinstance(d, dict) else []

    def copies() -> bool:
        try:
            copy.deepcopy(obj, dict(memo))
            return True
        except Exception:
            return False

    if copies():
        return
    for child in children:
        _share_uncopyable(child, memo, seen, depth=depth + 1)
    if not root and (not children or not copies()):
        memo[id(obj)] = obj


def clone(obj: Any, name: str) -> Any:
    """``copy.deepcopy(obj)``, where what deepcopy rejects (a module attribute such as the
    usual ``self.xp = np`` CuPy/NumPy switch, a lock, a file handle) is shared rather than
    copied; if the copy still fails, a :class:`CheckError` naming ``name`` and the attribute."""
    try:
        return copy.deepcopy(obj)
    except Exception:
        pass
    memo: dict[int, Any] = {}
    _share_uncopyable(obj, memo, set(), root=True)
    try:
        return copy.deepcopy(obj, dict(memo))
    except Exception as exc:
        culprit = "the layer itself (its class's __deepcopy__ or __reduce_ex__)"
        for attr, value in (vars(obj) if hasattr(obj, "__dict__") else {}).items():
            try:
                copy.deepcopy(value, dict(memo))
            except Exception:
                culprit = f"its attribute {attr!r} ({type(value).__name__})"
                break
        raise CheckError(
            f"{name}: the layer cannot be copied (the check runs on a private copy, so your layer "
            f"is never modified): {culprit} cannot be deep-copied: {type(exc).__name__}: {exc}"
            f"{_where(exc)}") from exc


def _param_dict(layer: Any, attr: str, name: str) -> dict[Any, Any]:
    """``layer.params`` or ``layer.grads`` as the dict the harness expects (name -> ndarray);
    a missing or empty one is ``{}``. A list or tuple ("Deep Learning from Scratch 2" keeps
    ``self.params = [W, b]``) is a :class:`CheckError` that says how to convert it."""
    value = getattr(layer, attr, None)
    if value is None or isinstance(value, (dict, MutableMapping)):  # a book layer's attributes
        return value or {}
    if isinstance(value, (list, tuple)) and not len(value):
        return {}
    kind = type(value).__name__
    example, other = (("self.params = {'W': W, 'b': b}", "grads") if attr == "params" else
                      ("self.grads = {'W': np.zeros_like(W), 'b': np.zeros_like(b)}", "params"))
    raise CheckError(
        f"{name}: {attr} must be a dict name -> ndarray, got a {kind}: the harness maps each "
        f"parameter to the torch twin by name. Convert it, e.g. {example} (and {other} with "
        f"the same names), with the registration's weight_map keyed by those names, e.g. "
        f"{{'W': WeightSpec('weight', transpose, transpose), 'b': 'bias'}}")


def _bounds(a: np.ndarray) -> tuple[int, int]:
    """The byte range ``a``'s elements occupy (``numpy.byte_bounds``)."""
    lo = hi = a.__array_interface__["data"][0]
    for n, s in zip(a.shape, a.strides, strict=True):
        if n > 1:
            if s < 0:
                lo += (n - 1) * s
            else:
                hi += (n - 1) * s
    return lo, hi + a.itemsize


def _rebase(view: np.ndarray, old: np.ndarray, new: np.ndarray) -> np.ndarray | None:
    """``view`` (an array into ``old``'s memory: ``W.T``, ``W[0]``, ``W.reshape(-1)``) as the
    same view into ``new`` (a copy of ``old``, maybe of another float dtype), or None where
    that cannot be done (another dtype view, a non-contiguous ``old``, memory outside it)."""
    order = "C" if old.flags.c_contiguous else "F" if old.flags.f_contiguous else ""
    if (not order or view.dtype != old.dtype or new.shape != old.shape or view.size == 0
            or not new.flags[f"{order}_CONTIGUOUS"]):
        return None
    lo, hi = _bounds(old)
    vlo, vhi = _bounds(view)
    start = view.__array_interface__["data"][0] - lo
    size = old.itemsize
    if vlo < lo or vhi > hi or start % size or any(s % size for s in view.strides):
        return None
    flat = new.reshape(-1, order=order)  # a view: new is contiguous in that order
    return np.lib.stride_tricks.as_strided(
        flat[start // size:], shape=view.shape,
        strides=tuple(s // size * new.itemsize for s in view.strides),
        writeable=bool(view.flags.writeable))


_NO_WALK = (*_ATOMS, types.ModuleType, torch.nn.Module, torch.Tensor, np.random.Generator)
"""What :func:`_repoint` and :func:`outside_copies` never search for arrays."""


def _repoint(orig: Any, work: Any, moved: dict[int, tuple[np.ndarray, np.ndarray]],
             seen: set[int], depth: int = 0) -> Any:
    """``work`` (the deep copy of ``orig``) with every array that is one of ``moved``'s
    originals replaced by its replacement, and every view of one re-made as the same view of
    the replacement; containers (dict, list, tuple) and plain objects are searched in
    lockstep with ``orig``, a few levels deep. Objects the copy shares with ``orig`` are left
    alone."""
    if isinstance(orig, np.ndarray):
        hit = moved.get(id(orig))
        if hit is not None and hit[0] is orig:
            return hit[1]
        for old, new in moved.values():
            if (isinstance(old, np.ndarray) and old is not orig and np.may_share_memory(orig, old)
                    and np.shares_memory(orig, old)):
                view = _rebase(orig, old, new)
                return work if view is None else view
        return work
    if orig is work or depth > 4 or id(orig) in seen or isinstance(orig, _NO_WALK):
        return work
    seen.add(id(orig))
    if isinstance(orig, dict) and isinstance(work, dict):
        for k, v in orig.items():
            if k in work:
                new = _repoint(v, work[k], moved, seen, depth + 1)
                if new is not work[k]:
                    work[k] = new
    elif isinstance(orig, (list, tuple)) and type(work) is type(orig) and len(work) == len(orig):
        items = [_repoint(o, w, moved, seen, depth + 1) for o, w in zip(orig, work, strict=True)]
        if any(a is not b for a, b in zip(items, work, strict=True)):
            if isinstance(work, list):
                work[:] = items
            elif type(work) is tuple:
                return tuple(items)
    elif type(orig) is type(work) and isinstance(getattr(orig, "__dict__", None), dict):
        state = vars(work)
        for k, v in vars(orig).items():
            if k in state:
                new = _repoint(v, state[k], moved, seen, depth + 1)
                if new is not state[k]:
                    state[k] = new
    return work


def copy_layer(layer: Any, dtype: np.dtype | None, buffers: Iterable[str] = (),
               name: str | None = None) -> Any:
    """A deep copy of ``layer`` with every parameter, every preallocated gradient
    (``grads[k]``) and every float buffer named in ``buffers`` (the twin's ``buffer_map``:
    running statistics) cast to ``dtype`` (None: kept as they are).

    A correct layer that writes into its arrays in place (``grads['W'][...] = ...``,
    ``running_mean *= m``) then keeps the check's dtype. Attributes that alias one of these
    arrays (the book's ``self.W`` next to ``params['W']``, ``self.wb = [W, b]``) alias the
    cast copy, and views of one (``self.WT = W.T``) are the same views of the cast copy, so
    they follow a perturbed parameter (the numerical check) and the check's dtype. What
    deepcopy rejects (``self.xp = np``, a lock) is shared (:func:`clone`). ``params`` and
    ``grads`` must be dicts (:func:`_param_dict`). The user's layer is never touched.
    """
    name = name or layer_name(layer)
    params, grads = _param_dict(layer, "params", name), _param_dict(layer, "grads", name)
    work = clone(layer, name)
    if getattr(work, "need_dx", True) is False:
        # A layer that skips its input gradient for speed (a net's first Affine) is checked
        # with its full backward: dx is compared like every other layer's. Its grads do not
        # depend on the flag (tests/test_performance_paths.py); training compares them as run.
        work.need_dx = True
    moved: dict[int, tuple[Any, np.ndarray]] = {}  # id(original) -> (original, replacement)

    def move(orig: Any, copied: Any) -> np.ndarray:
        arr = np.asarray(copied)
        new = arr if dtype is None else arr.astype(dtype, copy=True)
        return moved.setdefault(id(orig), (orig, new))[1]

    for k, v in params.items():
        if np.asarray(v).dtype.kind not in "fiu":
            raise CheckError(f"{name}.params[{k!r}] has non-numeric dtype {np.asarray(v).dtype}")
        move(v, work.params[k])
    for k, v in grads.items():
        if isinstance(v, np.ndarray) and v.dtype.kind in "fiu":
            move(v, work.grads[k])
    for attr in buffers:
        v = getattr(layer, attr, None)
        if isinstance(v, np.ndarray) and v.dtype.kind == "f":
            move(v, getattr(work, attr))
    if moved:
        for k, v in params.items():
            work.params[k] = moved[id(v)][1]
        for k, v in grads.items():
            if id(v) in moved:
                work.grads[k] = moved[id(v)][1]
        for attr in buffers:
            v = getattr(layer, attr, None)
            if id(v) in moved and moved[id(v)][0] is v:
                setattr(work, attr, moved[id(v)][1])
        _repoint(layer, work, moved, set())
    return work


def outside_copies(layer: Any, dtype: np.dtype) -> list[str]:
    """Arrays ``layer`` holds outside ``params`` that copy a parameter in another dtype than
    ``dtype`` and that :func:`copy_layer` cannot re-point (a copy such as ``W.T.copy()``, a
    view it cannot re-make): ``["attribute WT, a copy of params['W'].T", ...]``. They keep
    the layer's own dtype in a check of another one."""
    try:
        params = {k: v for k, v in _param_dict(layer, "params", "").items()
                  if isinstance(v, np.ndarray) and v.dtype.kind == "f" and v.dtype != dtype}
    except CheckError:
        return []
    found: list[str] = []

    def visit(path: str, obj: Any, depth: int) -> None:
        if isinstance(obj, np.ndarray):
            if obj.dtype.kind != "f" or obj.dtype == dtype or any(obj is p for p in params.values()):
                return
            for k, p in params.items():
                if np.may_share_memory(obj, p) and np.shares_memory(obj, p):
                    if _rebase(obj, p, p) is None:
                        found.append(f"attribute {path}, a view of params[{k!r}] that the "
                                     f"check cannot re-make")
                    return
                for how, q in (("", p), (".T", p.T)):
                    if obj.shape == q.shape and np.array_equal(obj, q):
                        found.append(f"attribute {path}, a copy of params[{k!r}]{how}")
                        return
            return
        if depth > 2 or isinstance(obj, _NO_WALK):
            return
        if isinstance(obj, dict):
            for k, v in obj.items():
                visit(f"{path}[{k!r}]", v, depth + 1)
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj[:64]):
                visit(f"{path}[{i}]", v, depth + 1)
        elif isinstance(getattr(obj, "__dict__", None), dict) and depth == 0:
            for k, v in vars(obj).items():
                if k not in ("params", "grads"):
                    visit(k, v, depth + 1)

    visit("", layer, 0)
    return found


def explain_dtype_mismatch(results: list[TensorResult], layer: Any, dtype: np.dtype) -> None:
    """Add to each "dtype mismatch" FAIL in ``results`` the likely cause when ``layer`` keeps
    copies of its weights outside ``params`` in another dtype (:func:`outside_copies`)."""
    bad = [r for r in results if r.status == FAIL and r.message.startswith("dtype mismatch")]
    if not bad:
        return
    copies = outside_copies(layer, dtype)
    if not copies:
        for r in bad:
            r.message += _dtype_hint(r.message, layer, dtype)
        return
    kinds = sorted({str(v.dtype) for v in _param_dict(layer, "params", "").values()
                    if isinstance(v, np.ndarray) and v.dtype != dtype})
    for r in bad:
        r.message += (f": the layer holds a {'/'.join(kinds) or 'differently typed'} copy of its "
                      f"weights outside params ({'; '.join(copies)}): the check casts params to "
                      f"{dtype.name} but cannot cast that copy. Compute it from self.params in "
                      f"forward/backward, or keep a view (self.WT = W.T), which the check "
                      f"re-points")


def _dtype_hint(message: str, layer: Any, dtype: np.dtype) -> str:
    """Where a result of another dtype than the check's likely comes from: a float64 value
    mixed into a float32 computation (a NumPy float64 scalar the layer keeps, an array made
    without ``dtype=``), or a cast to a narrower type in a float64 one."""
    m = re.search(r"dtype mismatch: \S+ (\w+), expected", message)
    try:
        got = np.dtype(m.group(1)) if m else None
    except TypeError:
        got = None
    if got is None or got.kind != "f":
        return ""
    if got.itemsize > dtype.itemsize:
        scalars = sorted(f"{k} = np.{np.asarray(v).dtype}({plain(v)})"
                         for k, v in (getattr(layer, "__dict__", None) or {}).items()
                         if isinstance(v, (np.floating, np.ndarray)) and np.ndim(v) == 0
                         and np.asarray(v).dtype.kind == "f"
                         and np.asarray(v).dtype.itemsize > dtype.itemsize)
        where = (f"the layer keeps {', '.join(scalars)}: NumPy keeps a NumPy scalar's own "
                 f"precision, so a {dtype.name} array times it is {got.name}; store a Python "
                 f"float (float(eps))" if scalars else
                 f"an array made without dtype= (np.zeros(shape), np.ones(n), np.array([...]) "
                 f"of Python floats), an astype({got.name}) or a NumPy {got.name} scalar; make "
                 f"arrays with the input's dtype: np.zeros_like(x), np.zeros(shape, x.dtype)")
        return (f": a {got.name} value entered the {dtype.name} computation and promoted the "
                f"result ({where})")
    return (f": the layer computes in {got.name} behind a {dtype.name} interface (an "
            f"astype({got.name}) or a {got.name} constant), losing precision; keep the input's "
            f"dtype")


def getattr_path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def accepts(fn: Callable[..., Any], name: str) -> bool:
    fn = getattr(fn, "__func__", fn)
    try:
        return _accepts(fn, name)
    except TypeError:  # an unhashable callable
        return _accepts.__wrapped__(fn, name)


@functools.lru_cache(maxsize=1024)
def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def resolve_twin(layer: Any, module: torch.nn.Module | None,
                 weight_map: dict[str, WeightSpec | str] | None) -> tuple[Twin, bool]:
    """The twin for ``layer``: registered (MRO walk), or built around a user-given module."""
    twin = lookup(type(layer))
    if module is None and twin is None:
        from harness.book_layers import twin_by_name

        twin = twin_by_name(type(layer))  # class Affine: ... written from the book
    if module is None and twin is None:
        bases = [c.__name__ for c in type(layer).__mro__[1:-1]]
        own = (f"; a {layer_name(layer)} written the book's way is not matched by its name (its "
               f"twin shares state through the scratch class): subclass scratch's "
               f"(from scratch import {layer_name(layer)})"
               if layer_name(layer) in ("Dropout", "BatchNormalization") else "")
        raise CheckError(
            f"no PyTorch twin registered for {layer_name(layer)}"
            + (f" (nor for its base classes {bases})" if bases else "")
            + f"; pass module=<torch module> or register it with reference.register("
            f"{layer_name(layer)}, torch_factory, weight_map){own}")
    if module is not None:
        base = twin or Twin(type(layer), lambda _l: module)
        wm = weight_map if weight_map is not None else (
            base.weight_map if twin else {k: k for k in getattr(layer, "params", {})})
        twin = Twin(type(layer), lambda _l: module, dict(wm), input_shape=base.input_shape,
                    make_input=base.make_input, kind=base.kind, make_target=base.make_target,
                    prepare=base.prepare, buffer_map=base.buffer_map,
                    forward_kwargs=base.forward_kwargs, name=base.name)
    elif weight_map is not None:
        twin = copy.copy(twin)
        twin.weight_map = {k: WeightSpec(v) if isinstance(v, str) else v
                           for k, v in weight_map.items()}
    return twin, module is not None


def _explain_own_mask(results: list[TensorResult], work: Any, twin: Twin) -> None:
    """A subclass of scratch's Dropout whose forward draws its own mask (``np.random.rand``)
    cannot share the twin's: say so on the failing ``out``, not only 'values differ'."""
    if twin.prepare is None or not callable(getattr(work, "set_mask", None)):
        return
    base = next((c for c in type(work).__mro__[1:] if c.__module__.startswith("scratch")), None)
    if base is None or getattr(type(work), "forward", None) is getattr(base, "forward", None):
        return
    for r in results:
        if r.tensor == "out" and r.status == FAIL:
            r.message = (f"{r.message} The check gives both sides one dropout mask through "
                         f"set_mask(); a forward that draws a mask of its own (np.random.rand) "
                         f"uses another: use self.fixed_mask when it is set (mask = "
                         f"self.fixed_mask if self.fixed_mask is not None else "
                         f"self.draw_mask(x.shape)), as the base class's forward does.").strip()


def adapt_layer(layer: Any, twin: Twin, module: torch.nn.Module | None) -> tuple[Any, list[str]]:
    """``layer`` as the harness reads it, and notes on how: a class matched to a built-in by
    its name, parameters kept as attributes (``self.W``/``self.dW``, the book's layout:
    :mod:`harness.book_layers`)."""
    from harness.book_layers import BY_NAME, with_param_dicts

    notes = []
    if module is None and lookup(type(layer)) is None:
        notes.append(f"no twin is registered for {layer_name(layer)}: checked against the "
                     f"built-in {twin.name}'s twin, matched by its class name")
    elif module is None and layer_name(layer) in BY_NAME and layer_name(layer) != twin.name:
        notes.append(f"named {layer_name(layer)} but a subclass of {twin.name}: checked against "
                     f"{twin.name}'s twin (subclass scratch's {layer_name(layer)} to be checked "
                     f"as one)")
    layer, note = with_param_dicts(layer, twin)
    return layer, notes + ([note] if note else [])


def build_module(twin: Twin, work: Any, name: str) -> torch.nn.Module:
    """The twin's torch module for ``work``; a factory that cannot build one (the layer lacks
    what the registered twin expects) is a :class:`CheckError` naming the layer."""
    try:
        return twin.torch_factory(work)
    except Exception as exc:
        raise CheckError(
            f"{name}: the registered twin ({twin.name}) could not build a torch module for this "
            f"layer: {type(exc).__name__}: {exc} (scratch params: "
            f"{sorted(getattr(work, 'params', {}) or {})})") from exc


def load_weights(work: Any, module: torch.nn.Module, twin: Twin, name: str) -> None:
    """Copy scratch parameters into ``module`` (converted layout, copies not aliases)."""
    params = getattr(work, "params", {}) or {}
    torch_params = dict(module.named_parameters())
    mapped = {spec.torch_name for spec in twin.weight_map.values()}
    missing_scratch = sorted(set(twin.weight_map) - set(params))
    unmapped_scratch = sorted(set(params) - set(twin.weight_map))
    # a parameter the twin keeps fixed (requires_grad False: nn.RNN's bias_hh zeroed for a
    # scratch cell with one bias) is a constant of the twin, not a weight to map
    unmapped_torch = sorted(k for k in set(torch_params) - mapped if torch_params[k].requires_grad)
    missing_torch = sorted(mapped - set(torch_params))
    problems = []
    if missing_scratch:
        problems.append(f"scratch params lack {missing_scratch}")
    if unmapped_scratch:
        problems.append(f"scratch params {unmapped_scratch} have no torch counterpart")
    if missing_torch:
        problems.append(f"torch module has no parameter(s) {missing_torch}")
    if unmapped_torch:
        problems.append(f"torch parameter(s) {unmapped_torch} are not mapped from the scratch "
                        f"layer (one with no scratch counterpart is fixed in the torch factory: "
                        f"set its value and call requires_grad_(False), e.g. "
                        f"m.{unmapped_torch[0]}.data.zero_(); "
                        f"m.{unmapped_torch[0]}.requires_grad_(False))")
    if problems:
        inherited = ""
        if (missing_scratch or unmapped_scratch) and isinstance(twin.scratch_cls, type) \
                and type(work) is not twin.scratch_cls and isinstance(work, twin.scratch_cls):
            # a subclass with other parameters than the base whose twin it inherits
            inherited = (f"; {type(work).__name__} is checked with the twin of its base "
                         f"{twin.scratch_cls.__name__}, which maps {sorted(twin.weight_map)}: a "
                         f"layer with other parameters needs a twin of its own "
                         f"(reference.register({type(work).__name__}, torch_factory, weight_map)"
                         f", or check_layer(layer, module, weight_map=...))")
        raise CheckError(f"{name}: parameter sets differ: " + "; ".join(problems) +
                         f" (scratch: {sorted(params)}, torch: {sorted(torch_params)})" + inherited)
    with torch.no_grad():
        for k, spec in twin.weight_map.items():
            value = np.asarray(spec.to_torch(params[k]))
            p = torch_params[spec.torch_name]
            if tuple(value.shape) != tuple(p.shape):
                hint = ""
                if value.ndim >= 2 and tuple(value.shape[::-1]) == tuple(p.shape):
                    hint = (f" (the transpose of each other: map it with "
                            f"WeightSpec({spec.torch_name!r}, transpose, transpose); a Linear's "
                            f"weight is (out, in) where a book Affine's W is (in, out))")
                elif value.size == p.numel():
                    hint = " (the same number of elements: a reshape in to_torch/from_torch?)"
                raise CheckError(
                    f"{name}: scratch {k!r} of shape {np.shape(params[k])} converts to "
                    f"{value.shape}, but torch {spec.torch_name!r} has shape {tuple(p.shape)}"
                    f"{hint}")
            if not np.all(np.isfinite(value)):
                bad = tuple(int(i) for i in np.argwhere(~np.isfinite(np.asarray(params[k])))[0])
                raise CheckError(f"{name}: parameter {k!r} contains NaN/Inf (first at {bad})")
            p.copy_(to_torch(value).to(p.dtype))
    for attr, spec in twin.buffer_map.items():
        if hasattr(work, attr):
            buf = getattr_path(module, spec.torch_name)
            buf.copy_(to_torch(spec.to_torch(getattr(work, attr))))


class TwinRejected(CheckError):
    """The torch twin raised on the input the harness gave it: a wrong input shape, a twin
    that needs other arguments, a registration that builds the wrong module. ``__cause__`` is
    torch's exception."""


def _where(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    return f" (at {tb[-1].filename}:{tb[-1].lineno})" if tb else ""


def _num_embeddings(module: torch.nn.Module) -> int | None:
    """The twin's number of valid indices, where it says (nn.Embedding, nn.EmbeddingBag, or a
    module holding one): its ``num_embeddings``."""
    for m in module.modules():
        n = getattr(m, "num_embeddings", None)
        if isinstance(n, int) and not isinstance(n, bool):
            return n
    return None


def check_indices(name: str, module: torch.nn.Module, x: np.ndarray) -> None:
    """For integer input ``x`` (indices) and a twin that says how many it takes
    (``num_embeddings``): a :class:`CheckError` naming the first index out of ``0..n-1`` and
    where it is. Valid indices are the user's business; this names the one torch would reject
    (nn.Embedding raises a bare ``IndexError: index out of range in self``)."""
    n = _num_embeddings(module)
    if n is None or not is_index(x):
        return
    flat = x.reshape(-1)
    bad = np.flatnonzero((flat < 0) | (flat >= n))
    if bad.size:
        i = int(bad[0])
        where = tuple(int(j) for j in np.unravel_index(i, x.shape))
        neg = " (NumPy counts negative indices from the end; torch does not)" if flat[i] < 0 else ""
        raise CheckError(
            f"{name}: integer input x (indices): index {int(flat[i])} at {where} is out of range "
            f"0..{n - 1} (num_embeddings={n} in the torch twin {type(module).__name__}){neg}; "
            f"{int(bad.size)} of {flat.size} indices are out of range")


def _index_hint(module: torch.nn.Module, x: np.ndarray, exc: BaseException) -> str:
    """Why the twin may have rejected integer input ``x``: an index out of its range (the
    values only: in the warm-up call ``x`` is a shuffle of the user's), or (another error)
    that integer x is taken for indices."""
    ran = (f"; integer input x is passed to the twin as indices (torch.long), here "
           f"{int(x.min())}..{int(x.max())}")
    if isinstance(exc, IndexError) or "out of range" in str(exc):
        return f"{ran}: an index is out of the twin's range"
    return (f"{ran}. If x holds values, not indices: input x must be a float array, got dtype "
            f"{x.dtype} (cast it with x.astype(np.float64))")


def _torch_call(name: str, module: torch.nn.Module, what: str, shape: tuple[int, ...],
                fn: Callable[[], Any], x: np.ndarray | None = None) -> Any:
    """``fn()`` (a call into the torch twin); any exception is a :class:`TwinRejected`. With
    integer input ``x`` (indices) the message says which index the twin could not take."""
    try:
        return fn()
    except Exception as exc:
        hint = ""
        if x is not None and is_index(x):
            hint = _index_hint(module, x, exc)
        elif isinstance(exc, TypeError):
            hint = (" (the twin is called as module(x), or module(scores, targets) for "
                    "kind='loss'; its factory gets the scratch layer: lambda layer: nn.X(...))")
        raise TwinRejected(f"{name}: the torch twin rejected {what} of shape {shape}: "
                           f"{type(exc).__name__}: {exc}{hint} (torch module: "
                           f"{type(module).__name__})") from exc


PROTOCOL = {
    ("layer", "forward"): "forward(x) -> out (and forward(x, train_flg) where training differs)",
    ("layer", "backward"): "backward(dout) -> dx",
    ("loss", "forward"): "forward(x, t) -> loss",
    ("loss", "backward"): "backward(dout=1) -> dx (the book's nets call backward(1))",
}
"""How the check calls each method, for an error raised by the call itself."""


def _error(layer: str, tensor: str, exc: BaseException, dtype: np.dtype | None = None,
           prefix: str = "", kind: str = "") -> TensorResult:
    where = _where(exc)
    tb = traceback.extract_tb(exc.__traceback__)
    if (isinstance(exc, TypeError) and (kind, tensor) in PROTOCOL and tb
            and Path(tb[-1].filename).resolve() == Path(__file__).resolve()):
        # the call itself failed (a signature that does not fit): not the harness's line
        where = f" (the check calls {PROTOCOL[kind, tensor]})"
    return TensorResult(layer=layer, tensor=tensor, status=ERROR,
                        dtype="" if dtype is None else dtype.name,
                        message=f"{prefix}{type(exc).__name__}: {exc}{where}")


def plain(v: Any) -> str:
    """A number for a message: ``0.125732``, ``3``, ``True``, ``nan``; never a NumPy repr such as
    ``np.float32(0.1257)``."""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    try:
        return f"{float(v):.9g}"
    except (TypeError, ValueError):
        return repr(v)


WHY_UNCHANGED = {
    "dout": ("; the book's Relu.backward does this (dout[self.mask] = 0): harmless in a plain "
             "chain, where nothing reads dout again, wrong wherever it is read twice (a branch, "
             "a residual, a gradient kept for a plot); copy first (dx = dout.copy()) or use "
             "np.where"),
    "x": ("; the caller's array (a batch of the data set, a previous layer's output its "
          "backward still needs) is corrupted; work on a copy"),
    "t": ("; the targets belong to the caller (the data set's labels, read again every "
          "epoch and by the accuracy); work on a copy (diff = x - t, not t -= x)"),
    "output": ("; backward wrote into the array forward returned, which belongs to the caller "
               "(the next layer keeps it as its input, a training loop reads it for the loss or "
               "the accuracy); compute into a new array (y * (...) rather than y *= ...)"),
}
"""Why writing into an argument is a failure, per argument (the last word of ``what``)."""


def _unchanged(layer: str, what: str, before: np.ndarray, after: np.ndarray) -> TensorResult:
    res = TensorResult(layer=layer, tensor=f"{what} unchanged", status=PASS,
                       dtype=str(before.dtype), shape=tuple(before.shape), total=int(before.size))
    if after.shape != before.shape:  # x.shape = ... on the caller's array
        res.status, res.mismatched = FAIL, int(before.size)
        res.message = (f"the layer changed the shape of its {what} in place: {before.shape} -> "
                       f"{after.shape} (assigning to .shape, or resize(); use reshape() instead)")
        return res
    changed = ~((before == after) | (np.isnan(before) & np.isnan(after)))
    if changed.any():
        res.status, res.mismatched = FAIL, int(changed.sum())
        first = tuple(int(i) for i in np.argwhere(changed)[0]) if before.ndim else ()
        res.message = (f"the layer modified its {what} in place: {res.mismatched} element(s) "
                       f"changed, first at {first} ({plain(before[first])} -> {plain(after[first])})"
                       + WHY_UNCHANGED.get(what.split()[-1], ""))
        res.worst_index = first
        res.max_abs, res.max_rel = largest_change(before, after)
    return res


def largest_change(before: np.ndarray, after: np.ndarray) -> tuple[float, float]:
    """The largest absolute and relative change between two arrays of one shape (inf where
    a NaN appeared or vanished), for the table's max abs/rel diff of an "unchanged" row."""
    b, a = np.asarray(before, np.float64), np.asarray(after, np.float64)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        diff = np.abs(a - b)
        rel = np.where(diff == 0, 0.0, diff / np.abs(b))
    same = (b == a) | (np.isnan(b) & np.isnan(a))
    diff = np.where(same, 0.0, np.where(np.isnan(diff), np.inf, diff))
    rel = np.where(same, 0.0, np.where(np.isnan(rel), np.inf, rel))
    return (float(diff.max()) if diff.size else 0.0), (float(rel.max()) if rel.size else 0.0)


def _check_finite(name: str, what: str, a: np.ndarray) -> None:
    if not np.all(np.isfinite(a)):
        first = tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])
        raise CheckError(f"{name}: {what} contains NaN/Inf (first at index {first})")


def _amax(a: Any) -> float:
    a = np.abs(np.asarray(a, dtype=np.float64))
    a = a[np.isfinite(a)]
    return float(a.max()) if a.size else 0.0


SUM_SAFETY = 4.0
"""A parameter gradient summed over ``n`` terms of size ``<= max|dout|`` carries a rounding
error up to ~``n * eps * max|dout|`` (summation order differs between NumPy and torch); its
absolute floor is ``SUM_SAFETY`` times that."""


def summed_terms(dout_shape: tuple[int, ...], param_shape: tuple[int, ...]) -> int:
    """How many terms each element of a parameter gradient sums (for its rounding floor).

    A gradient element sums one term per dout element of its output feature: ``db`` of
    Affine sums N, of a convolution N*OH*OW, of a (batch, seq, features) layer batch*seq. The
    feature axis is the dout axis (other than the batch axis 0) whose size is one of the
    parameter's dimensions; if several match, the smallest (the most terms) is taken. With
    none matching, ``dout.size / param.size`` (each dout element feeds one element).
    """
    size = math.prod(dout_shape)
    feats = [dout_shape[ax] for ax in range(1, len(dout_shape)) if dout_shape[ax] in param_shape]
    if feats:
        return max(1, size // min(feats))
    return max(1, size // max(1, math.prod(param_shape)))


def floor_tolerance(tol: Tolerance | None, dtype: np.dtype, floor: float, expected: np.ndarray,
                    what: str) -> tuple[Tolerance | None, str]:
    """The default tolerance, with ``floor`` as its absolute allowance if that is larger than
    ``atol * max|expected|``.

    Rounding error scales with the magnitude of the *terms* a value is computed from, not with
    the value. ``dx = dout * f'(x)`` of a parameter-free layer has ``f'`` computed from O(1)
    terms (``1 - y*y``), so near saturation, where ``f'`` is tiny, its error stays ~eps*|dout|:
    floor ``atol * max|dout|``. ``db = sum(dout)`` cancels to ~0 before a BatchNorm (its exact
    value is 0) and keeps ~n*eps*|dout|: floor ``SUM_SAFETY * n * eps * max|dout|``.
    ``what`` describes the floor. Returns the tolerance and its description ("" if unchanged).
    """
    base = tol or default_tolerance(dtype)
    if not base.scaled or floor <= base.atol * _amax(expected):
        return tol, ""
    return (Tolerance(base.rtol, floor, scaled=False),
            f"rtol={base.rtol:.1e}, atol={what} (= {floor:.2e})")


NOISE_SAFETY = 8.0
"""float32 checks also measure the twin's own float32 rounding error, by running a float64
copy of the torch module on the same inputs: a tensor whose computation is ill-conditioned
(BatchNorm over 2-3 samples whose spread is tiny, inputs with a large common offset) carries
that error on both sides, and no formula bug is needed to exceed the default tolerance there.
The absolute allowance becomes at least ``NOISE_SAFETY`` x that measured error ..."""
NOISE_CAP = 1e-3
"""... but never more than ``NOISE_CAP x max|expected|``: an O(1) bug is still caught, whatever
the conditioning."""


def stochastic(module: torch.nn.Module) -> list[str]:
    """The submodules of ``module`` that draw random numbers in training (dropout, RReLU):
    two runs of it on one input differ, so neither a comparison in training mode nor a
    measurement of rounding with copies of it means anything."""
    from torch.nn.modules.dropout import _DropoutNd

    return [name or type(m).__name__ for name, m in module.named_modules()
            if isinstance(m, (_DropoutNd, torch.nn.RReLU)) and m.training]


class Float64Twin:
    """Two float64 copies of the torch twin, run beside a float32 check to measure how much
    float32 rounding alone can move each tensor (:meth:`noise`): the larger of

    * torch's own float32 error: |torch float32 - torch float64| on the same inputs, and
    * the sensitivity to float32-sized input rounding: |f64(x, dout) - f64(x', dout')| where
      ``x'`` and ``dout'`` differ from ``x`` and ``dout`` by one float32 rounding (a relative
      ``eps32`` with random signs). Torch accumulates some float32 reductions in float64, so
      its own error can understate what a plain float32 implementation must lose where the
      computation is ill-conditioned (BatchNorm over 2-3 samples or over values with a large
      common offset): this term measures the conditioning itself. Integer input (indices) is
      never wiggled; ``dout`` still is.

    Inert (every noise None) when the check is not float32, the twin injects random state
    (``prepare``: Dropout masks), or the module cannot be copied, converted or run in float64.
    """

    def __init__(self, module: torch.nn.Module, twin: Twin, dtype: np.dtype) -> None:
        self.refs: list[torch.nn.Module] = []
        self.xs: list[torch.Tensor] = []
        self.outs: list[torch.Tensor] = []
        self.is_loss = twin.kind == "loss"
        self.eps = float(np.finfo(np.float32).eps)
        self.rng = np.random.default_rng(0xF64)  # its own stream: the check's draws stay as they were
        if dtype != np.dtype(np.float32) or twin.prepare is not None or stochastic(module):
            return  # a random twin: two copies differ by their draws, not by rounding
        try:  # copied before the compared forward pass: the same state (running statistics)
            self.refs = [copy.deepcopy(module).double() for _ in range(2)]
        except Exception:
            self.refs = []

    def _wiggle(self, a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, dtype=np.float64)
        return np.asarray(a * (1 + self.eps * self.rng.choice([-1.0, 1.0], size=a.shape)))

    def forward(self, x: np.ndarray, t: Any, train: bool) -> None:
        if not self.refs:
            return
        try:
            tt = None if t is None else to_torch(cast_targets(np.asarray(t), np.dtype(np.float64)))
            pair = (x, x) if is_index(x) else (np.asarray(x, np.float64), self._wiggle(x))
            for ref, xa in zip(self.refs, pair, strict=True):
                ref.train(train)
                xt = torch_input(xa, torch.float64)
                with torch.enable_grad():
                    self.outs.append(ref(xt, tt) if self.is_loss else ref(xt))
                self.xs.append(xt)
        except Exception:  # a twin that only works in float32: no measurement
            self.refs = []

    def backward(self, dout: np.ndarray | None, loss_dout: float = 1.0) -> None:
        if not self.refs or len(self.outs) != 2:
            self.refs = []
            return
        try:
            if self.is_loss:
                for out in self.outs:
                    out.backward(torch.full_like(out, loss_dout))
            else:
                for out, d in zip(self.outs, (np.asarray(dout, np.float64), self._wiggle(dout)),
                                  strict=True):
                    out.backward(torch.from_numpy(d))
        except Exception:
            self.refs = []

    def _tensor(self, i: int, key: str) -> torch.Tensor | None:
        if key == "out":
            return self.outs[i] if i < len(self.outs) else None
        if key == "dx":
            return self.xs[i].grad if i < len(self.xs) else None
        p = dict(self.refs[i].named_parameters()).get(key)
        return None if p is None else p.grad

    def noise(self, key: str, t32: Any) -> float | None:
        """How far float32 rounding alone can move ``out``, ``dx`` or a torch parameter's
        gradient (max abs), or None where it cannot be measured."""
        if not self.refs or t32 is None:
            return None
        a, b = self._tensor(0, key), self._tensor(1, key)
        if a is None or b is None or tuple(t32.shape) != tuple(a.shape):
            return None
        d = torch.maximum((t32.detach().double() - a.detach()).abs(), (b - a).detach().abs())
        if not bool(torch.isfinite(d).all()):
            return None
        return float(d.max()) if d.numel() else 0.0


def noise_tolerance(tol: Tolerance | None, dtype: np.dtype, floor: float, what: str,
                    noise: float | None, expected: Any) -> tuple[Tolerance | None, str]:
    """:func:`floor_tolerance` with the larger of ``floor`` and the measured noise floor."""
    if noise is not None and noise > 0:
        noise_floor = min(NOISE_SAFETY * noise, NOISE_CAP * _amax(expected))
        if noise_floor > floor:
            floor = noise_floor
            what = f"{NOISE_SAFETY:g} x the measured float32 rounding effect"
    if floor <= 0:
        return tol, ""
    return floor_tolerance(tol, dtype, floor, np.asarray(expected), what)


def too_noisy(r: TensorResult, noise: float | None, expected: Any) -> TensorResult:
    """A FAIL where float32 rounding alone moves the tensor by more than the capped floor
    allows becomes VACUOUS: float32 cannot tell a bug from rounding there (the float32
    result is mostly rounding noise, on both sides). Never a PASS: the check is not ok."""
    if r.status != FAIL or noise is None:
        return r
    scale = _amax(expected)
    if NOISE_SAFETY * noise <= NOISE_CAP * scale:
        return r
    r.status = VACUOUS
    r.message = (f"float32 rounding alone moves {r.tensor} by up to {noise:.2e} (measured with "
                 f"float64 copies of the twin), {noise / scale if scale else float('inf'):.1e} "
                 f"of max|{r.tensor}| = {scale:.2e}: this input is too ill-conditioned for "
                 "float32 to tell a bug from rounding; check it in float64")
    return r


def _twin_is_identity(module: torch.nn.Module, x: np.ndarray, dtype: np.dtype) -> bool:
    """Whether the twin (a copy) also returns its input unchanged on other inputs of ``x``'s
    shape: ``x`` with every sign flipped and fresh random values of both signs. Then the layer
    IS the identity on that shape (Flatten of a 2-D input), not a nonlinearity that was never
    exercised (a ReLU whose inputs were all positive gives 0 for ``-x``)."""
    try:
        probe = copy.deepcopy(module)
        rng = np.random.default_rng(0x1D)
        for other in (-x, rng.standard_normal(x.shape).astype(x.dtype)):
            with torch.no_grad():
                y = probe(torch.tensor(other, dtype=TORCH_DTYPE[dtype]))
            if not isinstance(y, torch.Tensor) or not np.array_equal(y.cpu().numpy(), other):
                return False
        return True
    except Exception:  # whatever the twin cannot take: no evidence that it is the identity
        return False


def _mark_unexercised(results: list[TensorResult], x: np.ndarray, out: Any, dout: np.ndarray,
                      dx_torch: np.ndarray, twin: Twin, dx_tol: Tolerance | None,
                      module: torch.nn.Module, dtype: np.dtype) -> None:
    """Turn PASS into VACUOUS where the input never reached the region that matters.

    * a layer without parameters whose output is its input and whose ``dx`` is its ``dout``
      acted as the identity (every ReLU input > 0): its nonlinearity was never exercised,
      unless the twin is the identity on that shape for other inputs too (Flatten of a 2-D
      input: nothing was left unexercised). A twin with injected randomness (``prepare``: a
      Dropout mask that kept everything) is never taken for the identity;
    * a ``dx`` so small next to ``dout`` that an all-zero ``dx`` would pass too (a saturated
      sigmoid, tanh or softmax): no gradient flows, the backward formula is not exercised.
    """
    by = {r.tensor: r for r in results if r.status == PASS}
    if "dx" not in by:
        return
    if (not twin.weight_map and "out" in by and np.shape(out) == x.shape
            and np.array_equal(np.asarray(out), x) and np.array_equal(dx_torch, dout)
            and (twin.prepare is not None or not _twin_is_identity(module, x, dtype))):
        for r in (by["out"], by["dx"]):
            r.status = VACUOUS
            r.message = ("the layer acted as the identity on this input (output == input, "
                         "dx == dout): its nonlinearity was never exercised, e.g. every ReLU "
                         "input > 0; use inputs on both sides of the kink (where the "
                         "harness drew them: a make_input= in the registration that does; "
                         "nn-parity check passes such a run when another batch or seed of the "
                         "component passes)")
        return
    e_max = _amax(dx_torch)
    if dx_tol is not None and not dx_tol.scaled and e_max * (1 - dx_tol.rtol) <= dx_tol.atol:
        r = by["dx"]
        r.status = VACUOUS
        r.message = (f"no gradient flows: max|dx| = {e_max:.2e} is below the rounding floor "
                     f"{dx_tol.atol:.2e} (atol x max|dout|), so an all-zero dx would pass too "
                     "(a saturated input?): the backward is not exercised")


# ---------------------------------------------------------------------------------------
# One layer, given its input


def run_pair(
    work: Any,
    module: torch.nn.Module,
    twin: Twin,
    x: np.ndarray,
    *,
    dtype: np.dtype,
    rng: np.random.Generator,
    name: str,
    t: np.ndarray | None = None,
    dout: np.ndarray | None = None,
    tol: Tolerance | None = None,
    train: bool = True,
    error_prefix: str = "",
    loss_dout: float = 1.0,
) -> tuple[list[TensorResult], dict[str, Any]]:
    """Forward and backward through scratch ``work`` and torch ``module``; compare everything.

    A loss layer's backward gets ``loss_dout`` (1.0, as every net calls it; the warm-up call
    of :func:`_run_twice` uses 2.0, so a loss backward that ignores its ``dout`` fails).

    Returns the results and the arrays (``out``, ``dx``, ``dout``, ``t``, and torch's
    ``dx_torch``) so a caller can chain layers. Weights must already be loaded into
    ``module``. An exception from the scratch layer is an ERROR result; one from the torch
    twin is a :class:`TwinRejected`; a ``dout`` that does not fit the output a
    :class:`CheckError`.

    Integer ``x`` (indices, an Embedding's) goes to the scratch layer as it is and to the twin
    as ``torch.long``; there is no ``dx`` to compare (``dx_torch`` is None, and
    ``arrays["not_compared"]`` says why).
    """
    results: list[TensorResult] = []
    arrays: dict[str, Any] = {}
    tdt = TORCH_DTYPE[dtype]
    module.train(train)
    if twin.prepare is not None:
        twin.prepare(work, module, x, rng)
    is_loss = twin.kind == "loss"
    if not is_loss:
        t = None
    if is_loss and t is None:
        if twin.make_target is None:
            raise CheckError(f"{name}: a loss layer needs targets t: pass t=..., or give its "
                             f"registration make_target=lambda layer, x, rng: ... (integer "
                             f"labels: rng.integers(0, x.shape[1], x.shape[0]); regression "
                             f"targets: rng.standard_normal(x.shape).astype(x.dtype))")
        t = twin.make_target(work, x, rng)
    t = cast_targets(t, dtype)  # make_target's float targets, like given ones, in the check's dtype
    arrays["t"] = t  # also when forward raises: what it was given
    kwargs = dict(twin.forward_kwargs(work)) if twin.forward_kwargs else {}
    if accepts(work.forward, "train_flg"):
        kwargs.setdefault("train_flg", train)

    params_before = {k: np.array(v, copy=True)
                     for k, v in (getattr(work, "params", None) or {}).items()}
    buffers_before = _buffers_before(work, module, twin) if train else {}
    x_before = x.copy()
    t_before = None if t is None else np.array(t, copy=True)

    # forward
    ref64 = Float64Twin(module, twin, dtype)  # how far float32 rounding alone moves things
    index = is_index(x)
    xt = torch_input(x, tdt)
    tt = None if t is None else to_torch(np.asarray(t))
    out_t = _torch_call(name, module, "input", x.shape,
                        lambda: module(xt, tt) if is_loss else module(xt), x=x)
    ref64.forward(x, t, train)
    if not isinstance(out_t, torch.Tensor):
        several = (" (one tensor per layer: a layer with several outputs, such as an LSTM's "
                   "(h, c) or nn.RNN's (output, h_n), is checked through a twin module that "
                   "returns the one the scratch layer returns, e.g. a small nn.Module whose "
                   "forward returns self.rnn(x)[0])" if isinstance(out_t, (tuple, list)) else "")
        raise CheckError(f"{name}: the torch twin ({twin.name}) returned a "
                         f"{type(out_t).__name__}, not a tensor{several}")
    if dout is not None and not is_loss and tuple(dout.shape) != tuple(out_t.shape):
        raise CheckError(f"{name}: dout has shape {dout.shape}, but the layer's output has shape "
                         f"{tuple(out_t.shape)} (for input of shape {x.shape}): dout must have "
                         f"the output's shape")
    try:
        out = work.forward(x, t, **kwargs) if is_loss else work.forward(x, **kwargs)
    except Exception as exc:  # a bug in the scratch layer is a finding, not a crash
        results.append(_error(name, "forward", exc, dtype, prefix=error_prefix, kind=twin.kind))
        return results, arrays
    params_after_forward = {k: np.array(v, copy=True)
                            for k, v in (getattr(work, "params", None) or {}).items()}
    out_name = "loss" if is_loss else "out"
    out_noise, out_expected = ref64.noise("out", out_t), out_t.detach().cpu().numpy()
    out_tol, out_text = noise_tolerance(tol, dtype, 0.0, "", out_noise, out_expected)
    results.append(too_noisy(compare(out, out_t, tensor=out_name, layer=name, tol=out_tol,
                                     dtype=dtype), out_noise, out_expected))
    if out_text:
        results[-1].tolerance_text = out_text
    if is_loss and results[-1].message.startswith("shape mismatch") and np.size(out) == 1:
        value = compare(np.reshape(np.asarray(out), ()), out_t, tensor=out_name, layer=name,
                        tol=out_tol, dtype=dtype)
        results[-1].message += (f": a loss is one number; return a scalar (float(loss), "
                                f"arr.sum()), not an array of shape {np.shape(out)} (its value "
                                f"{'agrees' if value.status == PASS else 'differs as well'})")
    arrays["out"] = out
    out_before = np.array(out, copy=True) if isinstance(out, np.ndarray) and not is_loss else None
    for attr, spec in twin.buffer_map.items():
        buf = getattr_path(module, spec.torch_name).detach().cpu().numpy()
        mine = getattr(work, attr, None)
        r = compare(mine, spec.from_torch(buf), tensor=attr, layer=name, tol=tol, dtype=dtype,
                    vacuous_check=False)
        if r.status == FAIL:
            _explain_running_stat(r, attr, work, module, spec, x, buffers_before.get(attr))
        results.append(r)

    # backward; from integer input, an output with no parameter behind it (a one-hot
    # encoding) has no graph: torch has nothing to backpropagate
    torch_backward = not index or out_t.requires_grad
    if is_loss:
        if torch_backward:
            _torch_call(name, module, "the backward of input", x.shape,
                        lambda: out_t.backward(torch.full_like(out_t, loss_dout)))
        ref64.backward(None, loss_dout)
        try:
            dx = work.backward(loss_dout)
        except Exception as exc:
            results.append(_error(name, "backward", exc, dtype, prefix=error_prefix, kind=twin.kind))
            return results, arrays
    else:
        if dout is None:
            dout = rng.standard_normal(tuple(out_t.shape)).astype(dtype)
        dout_before = dout.copy()
        d_t = to_torch(dout).to(tdt)
        if torch_backward:
            _torch_call(name, module, "the backward of input", x.shape,
                        lambda: out_t.backward(d_t))
        ref64.backward(dout)
        try:
            dx = work.backward(dout)
        except Exception as exc:
            results.append(_error(name, "backward", exc, dtype, prefix=error_prefix, kind=twin.kind))
            if np.shape(out) != tuple(dout.shape):  # a consequence of the wrong output shape
                results[-1].message += (f" (backward got dout of the twin's output shape "
                                        f"{tuple(dout.shape)}; forward returned {np.shape(out)}: "
                                        f"fix the output shape first)")
            return results, arrays
    d_max = 0.0 if is_loss else _amax(dout)
    eps = float(np.finfo(dtype).eps)
    if index:  # indices have no gradient: nothing to compare dx with
        arrays.update(dx=dx, dout=dout, t=t, dx_torch=None, not_compared={"dx": DX_NOT_APPLICABLE})
    else:
        dx_torch = xt.grad.detach().cpu().numpy() if xt.grad is not None else np.zeros(x.shape, dtype)
        arrays.update(dx=dx, dout=dout, t=t, dx_torch=dx_torch)
        dx_floor, dx_what = 0.0, ""
        if not twin.weight_map:  # parameter-free: dout * f'(x), f' from O(1) terms
            atol = (tol or default_tolerance(dtype)).atol
            dx_floor, dx_what = atol * d_max, f"{atol:.1e} x max|dout|"
        dx_noise = ref64.noise("dx", xt.grad)
        dx_tol, dx_tol_text = noise_tolerance(tol, dtype, dx_floor, dx_what, dx_noise, dx_torch)
        results.append(too_noisy(compare(dx, dx_torch, tensor="dx", layer=name, tol=dx_tol,
                                         dtype=dtype), dx_noise, dx_torch))
        if dx_tol_text:
            results[-1].tolerance_text = dx_tol_text
    torch_params = dict(module.named_parameters())
    grads = getattr(work, "grads", {}) or {}
    for k, spec in twin.weight_map.items():
        g_t = torch_params[spec.torch_name].grad
        expected = (spec.from_torch(g_t.detach().cpu().numpy()) if g_t is not None
                    else np.zeros(np.shape(params_before[k]), dtype=dtype))
        got = grads.get(k)
        n_sum = 1 if is_loss else summed_terms(tuple(dout.shape), tuple(np.shape(expected)))
        g_floor = SUM_SAFETY * n_sum * eps * d_max
        g_noise = ref64.noise(spec.torch_name, g_t)
        g_tol, g_text = noise_tolerance(tol, dtype, g_floor,
                                        f"{SUM_SAFETY:g} x {n_sum} x eps x max|dout|",
                                        g_noise, expected)
        r = too_noisy(compare(got, expected, tensor=f"d{k}", layer=name, tol=g_tol,
                              dtype=dtype), g_noise, expected)
        if g_text:
            r.tolerance_text = g_text
        stray = sorted(str(g) for g in grads if g not in twin.weight_map)
        if got is None:
            r.message = f"grads[{k!r}] is missing after backward"
            book = getattr(type(work), "_book_param_names", None)
            if book is not None:  # the book's layout: the gradient is an attribute d<name>
                shape = np.shape(params_before[k])
                near = sorted(a for a, v in vars(work).items() if isinstance(v, np.ndarray)
                              and v.shape == shape and a not in book and a != f"d{k}")
                r.message = (f"no attribute d{k} after backward (the book's layout: parameter "
                             f"{k}, gradient d{k})" + (f"; arrays of its shape it did set: {near}"
                                                       if near else ""))
        if stray and r.status != PASS:  # grads["bias"] where the parameter is "b"
            sep = "; " if r.message else ""
            r.message = (f"{r.message}{sep}grads also has {stray}, which are not parameter names "
                         f"(params: {sorted(map(str, twin.weight_map))}): a gradient stored "
                         f"under another key?").strip()
        results.append(r)

    if not is_loss and train and not index:
        _mark_unexercised(results, x_before, out, dout_before, dx_torch, twin, dx_tol, module,
                          dtype)
    random_parts = stochastic(module) if train and twin.prepare is None else []
    for r in results:
        if random_parts and r.status == FAIL and r.tensor in ("out", "loss", "dx"):
            r.message = (f"{r.message}{' ' if r.message else ''}The twin draws random numbers "
                         f"in training ({', '.join(random_parts)}): its mask cannot be the "
                         f"scratch layer's, so no training-mode comparison can pass. Subclass "
                         f"scratch.Dropout and use self.fixed_mask when it is set (its twin "
                         f"gives both sides one mask), or register a prepare=(layer, module, "
                         f"x, rng) hook that installs one mask in both").strip()

    # nothing the layer was given may change
    results.append(_unchanged(name, "input x", x_before, x))
    if not is_loss:
        results.append(_unchanged(name, "upstream dout", dout_before, dout))
    if out_before is not None:  # a row only when it fails: passing layers keep their counts
        results.extend(r for r in [_unchanged(name, "forward output", out_before, out)]
                       if r.status != PASS)
    if t_before is not None:
        results.append(_unchanged(name, "targets t", t_before, np.asarray(t)))
    changed = []
    for k, before in params_before.items():
        now = np.asarray(work.params[k])
        if now.shape != before.shape or not np.array_equal(now, before, equal_nan=True):
            mid = params_after_forward.get(k)
            by_forward = mid is not None and not (
                mid.shape == before.shape and np.array_equal(mid, before, equal_nan=True))
            r = TensorResult(
                layer=name, tensor=f"param {k} unchanged", status=FAIL, dtype=str(before.dtype),
                shape=before.shape,
                message=f"{'forward' if by_forward else 'backward'} modified parameter {k!r}: "
                        f"a layer must leave its weights to the optimizer (an update inside "
                        f"{'forward' if by_forward else 'backward'}?); every later comparison "
                        f"of this call sees other weights than the twin")
            if now.shape == before.shape:
                r.max_abs, r.max_rel = largest_change(before, now)
            changed.append(r)
    # first: it explains the out/dx/dW rows that fail after it
    return changed + results, arrays


# ---------------------------------------------------------------------------------------
# Public entry points


def make_input(twin: Twin, work: Any, shape: tuple[int, ...], dtype: np.dtype,
               rng: np.random.Generator, name: str = "") -> np.ndarray:
    """The twin's ``make_input`` (else standard normal), cast to ``dtype``; an integer array
    (indices, e.g. from :func:`reference.registry.index_input`) is kept as it is.

    What ``make_input`` returns is validated like a given ``x``: a numeric array of exactly
    ``shape``, finite; anything else is a :class:`CheckError` naming ``name`` and the
    registration (``twin.name``)."""
    if twin.make_input is None:
        return rng.standard_normal(shape).astype(dtype)
    x = np.asarray(twin.make_input(work, shape, dtype, rng))
    where = f"{name or twin.name}: the registration's make_input returned"
    fix = (f" (register({twin.name}, ..., make_input=f): f(layer, shape, dtype, rng) must return "
           f"a float array, or integer indices, of exactly the shape it is given, the batch "
           f"first)")
    if x.dtype.kind not in "fiub":
        raise CheckError(f"{where} dtype {x.dtype}, not a numeric array{fix}")
    if x.shape != tuple(shape):
        raise CheckError(f"{where} shape {x.shape}, expected the requested shape {tuple(shape)}"
                         f"{fix}")
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        first = tuple(int(i) for i in np.argwhere(~np.isfinite(x))[0])
        raise CheckError(f"{where} NaN/Inf (first at index {first}){fix}")
    return x if is_index(x) else x.astype(dtype)


def validate_input(name: str, x: Any, dtype: np.dtype, indices: bool = False,
                   what: str = "input x") -> np.ndarray:
    """A float ``x`` as a ``dtype`` copy; with ``indices``, an integer ``x`` as a copy of its
    own dtype (an Embedding's input). Anything else is a :class:`CheckError`. ``what="dout"``
    (an upstream gradient) may be 0-d: the gradient of a 0-d output (``sum(x**2)``)."""
    x = np.asarray(x)
    index = indices and is_index(x)
    if x.dtype.kind not in "f" and not index:
        also = (" (integer arrays are taken as indices, for Embedding-style layers; cast it "
                f"with x.astype(np.{dtype.name}), or x.astype(np.int64) for indices)"
                if indices else f" (cast it with x.astype(np.{dtype.name}))")
        raise CheckError(f"{name}: {what} must be a float array, got dtype {x.dtype}{also}")
    if x.ndim == 0 and what != "dout":
        raise CheckError(f"{name}: {what} must have at least one dimension, got a scalar")
    if x.ndim and (x.shape[0] == 0 or x.size == 0):
        raise CheckError(f"{name}: empty batch: {what} has shape {x.shape}")
    if index:
        if x.dtype.kind == "u" and int(x.max()) > np.iinfo(np.int64).max:
            raise CheckError(f"{name}: integer input x (indices) has a value beyond int64 "
                             f"({int(x.max())}): torch takes indices as torch.long")
        return x.copy()
    _check_finite(name, what, x)
    return x.astype(dtype, copy=True)


def validate_targets(name: str, twin: Twin, x: np.ndarray, t: Any, dtype: np.dtype) -> Any:
    """Targets for a loss layer: integer labels in range, one per row, or float targets /
    one-hot rows of ``x``'s shape, all finite. Anything else is a :class:`CheckError`."""
    if t is None or twin.kind != "loss":
        return t
    t = np.asarray(t)
    n, c = (1, x.shape[0]) if x.ndim == 1 else (x.shape[0], x.shape[-1])
    if t.dtype.kind in "iu" and t.shape == x.shape and t.size != n \
            and bool(np.isin(t, (0, 1)).all()) and bool((t.reshape(n, -1).sum(axis=1) == 1).all()):
        t = t.astype(np.float64)  # one-hot rows held as integers (np.eye(C, dtype=int)[labels])
    if t.dtype.kind in "iu":
        if t.size != n:
            raise CheckError(f"{name}: {t.size} label(s) for a batch of {n} rows (integer "
                             f"targets are class labels, one per row, or one-hot rows of the "
                             f"scores' shape {x.shape})")
        if t.size and (t.min() < 0 or t.max() >= c):
            bad = int(np.argmax((t.reshape(-1) < 0) | (t.reshape(-1) >= c)))
            raise CheckError(f"{name}: labels out of range: expected 0..{c - 1} for {c} classes, "
                             f"got {int(t.reshape(-1)[bad])} at index {bad}")
        return t
    if t.dtype.kind != "f":
        raise CheckError(f"{name}: targets t must be integer labels or a float array, got dtype "
                         f"{t.dtype}")
    if t.shape != x.shape:
        raise CheckError(f"{name}: float targets t of shape {t.shape} do not match the scores "
                         f"{x.shape} (class labels must be integers: t.astype(int))")
    _check_finite(name, "targets t", t)
    return t.astype(dtype)


def _warm_up_inputs(twin: Twin, work: Any, x: np.ndarray, t: Any, dtype: np.dtype,
                    rng: np.random.Generator, generated: bool,
                    name: str = "") -> tuple[np.ndarray, Any]:
    """Inputs for the warm-up call, different from the compared ones: drawn like them when the
    harness drew them, else a shuffle of the given values (same domain: positive stays
    positive, labels stay valid)."""
    if generated:
        x_w = make_input(twin, work, tuple(x.shape), dtype, rng, name)
    else:
        x_w = rng.permutation(x.reshape(-1)).reshape(x.shape)
    t_w = t if t is None or np.ndim(t) == 0 else rng.permutation(np.asarray(t))  # rows
    return x_w, t_w


def _buffers_before(work: Any, module: torch.nn.Module,
                    twin: Twin) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(scratch, torch) values of each mapped buffer before a training forward, in float64,
    for :func:`_explain_running_stat`."""
    out = {}
    for attr, spec in twin.buffer_map.items():
        try:
            mine = np.array(getattr(work, attr), dtype=np.float64)
            theirs = np.array(spec.from_torch(  # a copy: torch updates its buffer in place
                getattr_path(module, spec.torch_name).detach().cpu().numpy()), dtype=np.float64)
        except Exception:  # not an array (yet): nothing to explain with
            continue
        if mine.shape == theirs.shape:
            out[attr] = (mine, theirs)
    return out


def _explain_running_stat(r: TensorResult, attr: str, work: Any, module: torch.nn.Module,
                          spec: WeightSpec, x: np.ndarray,
                          before: tuple[np.ndarray, np.ndarray] | None) -> None:
    """A running statistic of a hand-written batch norm checked against torch's ``_BatchNorm``
    that differs by one of torch's conventions: say which. ``momentum``: the book's is the
    fraction kept, torch's the fraction replaced. ``running_var``: torch feeds the unbiased
    batch variance (x N/(N-1)), the book the biased one; that difference is computed from the
    input and matched exactly, so only the convention is named, never a real bug."""
    from torch.nn.modules.batchnorm import _BatchNorm

    path = spec.torch_name.rsplit(".", 1)
    try:
        owner = getattr_path(module, path[0]) if len(path) == 2 else module
    except AttributeError:
        return
    if not isinstance(owner, _BatchNorm) or owner.momentum is None or before is None:
        return
    mt = float(owner.momentum)
    kept = getattr(work, "momentum", None)
    if isinstance(kept, (int, float)) and math.isclose(float(kept), mt) and not math.isclose(mt, 0.5):
        r.message = (f"{r.message}{'; ' if r.message else ''}the layer's momentum {plain(kept)} "
                     f"is the fraction of the running value it keeps (the book's convention), "
                     f"torch's momentum the fraction it replaces: the twin needs momentum="
                     f"{plain(1 - mt)}")
        return
    if "var" not in spec.torch_name.rsplit(".", 1)[-1] or x.ndim < 2:
        return
    axes = (0, *range(2, x.ndim))
    n = int(np.prod([x.shape[a] for a in axes]))
    x64 = np.asarray(x, np.float64)
    var = x64.var(axis=axes)
    mine_before, theirs_before = before
    mine = np.asarray(getattr(work, attr), np.float64)
    theirs = np.asarray(spec.from_torch(getattr_path(module, spec.torch_name).detach().cpu().numpy()),
                        np.float64)
    if n < 2 or var.shape != mine.shape or mine.shape != theirs.shape:
        return
    predicted = (1 - mt) * (theirs_before - mine_before) + mt * var / (n - 1)
    gap = theirs - mine
    if np.max(np.abs(gap)) > 0 and np.allclose(gap, predicted, rtol=1e-3,
                                               atol=1e-3 * float(np.max(np.abs(gap)))):
        r.message = (f"{r.message}{'; ' if r.message else ''}exactly torch's convention: "
                     f"torch's BatchNorm feeds running_var the unbiased batch variance (x N/(N-1) "
                     f"= x {n / (n - 1):.4g} here) while it normalises with the biased one, and "
                     f"this layer feeds the biased one (the book's rule); check it against "
                     f"reference.extra_layers.TwinBatchNorm(C, eps, momentum, "
                     f"biased_running_var=True) instead, or feed var * N / (N - 1)")


def _run_twice(work: Any, module: torch.nn.Module, twin: Twin, x: np.ndarray, *,
               dtype: np.dtype, seed: int, rng: np.random.Generator, name: str, t: Any,
               dout: Any, tol: Tolerance | None, train: bool,
               generated: bool) -> tuple[list[TensorResult], dict[str, Any]]:
    """A warm-up forward/backward on other inputs, then the compared one, on both sides.

    Bugs that only show from the second call (an input cached on the first call only, grads
    accumulated with ``+=`` and never reset) then show in the compared call. Both sides see
    the same warm-up inputs, so legitimate state (BatchNorm running statistics, a Dropout
    mask injected by the twin's ``prepare``) stays in step; torch's parameter gradients are
    cleared in between. A FAIL or ERROR of the warm-up call itself on a tensor that the
    compared call passes is reported too, as ``<tensor> (first call)``.
    """
    warm_rng = np.random.default_rng([seed, 0x5EED])
    x_w, t_w = _warm_up_inputs(twin, work, x, t, dtype, warm_rng, generated, name)
    warm, warm_arrays = run_pair(work, module, twin, x_w, dtype=dtype, rng=warm_rng, name=name,
                                 t=t_w, tol=tol, train=train, loss_dout=2.0,
                                 error_prefix="on the first (warm-up) call, a loss's backward(2.0): "
                                 if twin.kind == "loss" else "on the first (warm-up) call: ")
    first_out = warm_arrays.get("out")
    first_copy = (np.array(first_out, copy=True)
                  if isinstance(first_out, np.ndarray) and twin.kind != "loss" else None)
    for p in module.parameters():
        p.grad = None
    results, arrays = run_pair(work, module, twin, x, dtype=dtype, rng=rng, name=name, t=t,
                               dout=dout, tol=tol, train=train)
    if first_copy is not None and first_out is not None:
        kept = _first_output_kept(name, first_copy, first_out)
        if kept.status != PASS:  # a row only when it fails, as the forward output's
            results.append(kept)
    bad_now = {r.tensor for r in results if r.status in (FAIL, ERROR)}
    for r in warm:
        if r.status in (FAIL, ERROR) and r.tensor not in bad_now:
            if twin.kind == "loss" and r.status == FAIL and r.tensor == "dx":
                # the book's own SoftmaxWithLoss.backward(dout=1) ignores dout: right as the
                # last layer of a net (called with 1), wrong anywhere else: a note, not a FAIL
                arrays.setdefault("notes", []).append(
                    "backward(dout) ignores dout (with dout=2.0 its dx is the one for 1.0, "
                    "autograd's is twice that): right as the last layer of a net, which calls "
                    "backward(1), wrong for a weighted or scaled loss (dx * dout)")
                continue
            r.tensor = f"{r.tensor} (first call)"
            results.append(r)
    return results, arrays


def _first_output_kept(name: str, before: np.ndarray, after: np.ndarray) -> TensorResult:
    """The row saying whether the second call changed the array the first forward returned: a
    layer that returns a buffer it keeps and overwrites on the next call (``self.out[...] =``,
    ``np.exp(x, out=self.buf)``) hands every caller the same array, so the output a caller kept
    (the next layer's cached input, a list of predictions) changes under it."""
    r = _unchanged(name, "first call's output", before, after)
    if r.status == FAIL and r.shape == tuple(after.shape):
        r.message = (f"the second call changed the output the first call returned: "
                     f"{r.mismatched} element(s), first at {r.worst_index} "
                     f"({plain(before[r.worst_index])} -> {plain(after[r.worst_index])}): "
                     f"forward returns an "
                     f"array it keeps and overwrites on the next call (self.out[...] = ..., "
                     f"np.exp(x, out=self.buf), out *= ... on a cached array), so an output a "
                     f"caller kept (the next layer's cached input, predictions gathered over "
                     f"batches) changes under it; return a new array")
    return r


def _default_shape(name: str, twin: Twin, work: Any, batch: int) -> tuple[int, ...]:
    if twin.input_shape is None:
        raise CheckError(f"{name}: input_shape is required (no default for this layer): pass "
                         f"input_shape=(4, ...) with the batch first, or x=..., or give its "
                         f"registration input_shape=lambda layer, n: (n, ...)")
    try:
        shape = validate_shape(name, tuple(twin.input_shape(work, batch)))
    except CheckError:
        raise
    except Exception as exc:
        raise CheckError(f"{name}: the registration's input_shape(layer, batch) raised "
                         f"{type(exc).__name__}: {exc} (it is called with the layer and the "
                         f"batch size, e.g. lambda layer, n: (n, 9))") from exc
    if shape[0] != batch:  # lambda layer, n: (9,) would check a 1-D input at every batch size
        raise CheckError(f"{name}: the registration's input_shape(layer, {batch}) returned "
                         f"{shape}: its first dimension must be the batch size {batch} "
                         f"(register({twin.name}, ..., input_shape=lambda layer, n: (n, ...)): "
                         f"it is called with the batch size, e.g. lambda layer, n: (n, 9))")
    return shape


def _guarded(where: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``; an exception that is neither a finding (those are results) nor a
    :class:`CheckError` is a CheckError naming where it came from (a registration hook, an
    object the harness cannot handle), never a raw traceback."""
    try:
        return fn(*args, **kwargs)
    except CheckError:
        raise
    except Exception as exc:
        raise CheckError(f"{where}: the check could not run: {type(exc).__name__}: {exc}"
                         f"{_where(exc)}") from exc


@one_thread
def check_layer(
    layer: Any,
    module: torch.nn.Module | None = None,
    *,
    input_shape: tuple[int, ...] | None = None,
    dtype: Any = np.float64,
    seed: int = 0,
    batch: int = 4,
    x: np.ndarray | None = None,
    t: np.ndarray | None = None,
    dout: np.ndarray | None = None,
    tol: Tolerance | None = None,
    weight_map: dict[str, WeightSpec | str] | None = None,
    train: bool = True,
    numerical: bool = False,
    name: str | None = None,
) -> LayerReport:
    """Compare one scratch layer with its torch twin, forward and backward.

    The twin comes from the registry (MRO walk) unless ``module`` is given. Weights are copied
    from a private copy of ``layer`` (cast to ``dtype``) into the twin; both get the same input
    (``x``, or random of ``input_shape``, or the twin's default shape with ``batch`` rows) and
    the same upstream gradient. Both first run one warm-up forward/backward on other inputs,
    so state left by an earlier call is exercised. Compared: output, ``dx``, every parameter
    gradient, buffers; checked: the input, ``dout``, targets and parameters are not modified.
    With ``numerical=True`` backprop and autograd are also checked against central
    differences.

    An integer ``x`` (or one the twin's ``make_input`` returns) is indices, an Embedding's
    input: the scratch layer gets it as it is, the twin a ``torch.long`` copy; parameters are
    still cast to ``dtype``. Indices have no gradient, so there is no ``dx`` row
    (``report.info["not_compared"]["dx"]`` says so) and the float32 noise measurement leaves
    them as they are. An index the twin rejects is a :class:`CheckError` naming it.
    """
    dtype = as_float_dtype(dtype)
    validate_layer(layer, methods=False)
    name = name or layer_name(layer)
    seed, tol = validate_seed(seed), validate_tol(tol)
    twin, _ = resolve_twin(layer, module, weight_map)
    validate_layer(layer)
    if t is not None and twin.kind != "loss":
        raise CheckError(f"{name}: targets t were given, but {name} is checked as a layer "
                         f"(forward(x), backward(dout)), not a loss: a loss's registration says "
                         f"kind='loss'; for a layer pass dout=... to choose the upstream gradient")
    given = dict(layer=layer, module=module, input_shape=input_shape, dtype=dtype, seed=seed,
                 batch=batch, x=x, t=t, dout=dout, tol=tol, train=train, name=name,
                 weight_map=weight_map, numerical=numerical)
    layer, how = adapt_layer(layer, twin, module)
    work = copy_layer(layer, dtype, twin.buffer_map, name)
    generated = x is None
    # With a given x, the draws that remain (dout, targets) come from their own stream: from
    # default_rng(seed) itself they would repeat a user's x drawn with the same seed
    # (np.random.default_rng(0).standard_normal(shape), seed=0), making dout == x, for which
    # BatchNorm's exact dx is 0 and both sides compare pure rounding noise.
    rng = np.random.default_rng(seed if generated else [seed, 0xD0])
    if x is not None:
        x = validate_input(name, x, dtype, indices=True)
    else:
        if input_shape is None:
            input_shape = _default_shape(name, twin, work, batch)
        input_shape = validate_shape(name, input_shape)
        x = _guarded(name, make_input, twin, work, input_shape, dtype, rng, name)
    t = validate_targets(name, twin, x, t, dtype)
    if dout is not None:
        dout = validate_input(f"{name} (dout)", dout, dtype, what="dout")
    mod = module if module is not None else build_module(twin, work, name)
    if isinstance(mod, type) and issubclass(mod, torch.nn.Module):
        raise CheckError(f"{name}: the torch twin is the class {mod.__name__}, not a module: pass "
                         f"an instance ({mod.__name__}(...))")
    if not isinstance(mod, torch.nn.Module):
        raise CheckError(f"{name}: the torch twin must be an nn.Module, got {type(mod).__name__}")
    mod = copy.deepcopy(mod).to(TORCH_DTYPE[dtype])
    load_weights(work, mod, twin, name)
    try:
        check_indices(name, mod, x)
    except CheckError as exc:
        if not generated:
            raise
        raise CheckError(f"{exc} (x was drawn by the registration's make_input)") from None
    report = LayerReport(layer=name, dtype=dtype.name, input_shape=tuple(x.shape), seed=seed)
    try:
        results, arrays = _guarded(
            name, _run_twice, work, mod, twin, x, dtype=dtype, seed=seed, rng=rng, name=name,
            t=t, dout=dout, tol=tol, train=train, generated=generated)
    except TwinRejected as exc:
        if "more than 1 value per channel" in str(exc.__cause__):  # BatchNorm training, batch 1
            report.results = [TensorResult(
                layer=name, tensor="out", status=VACUOUS, dtype=dtype.name, shape=tuple(x.shape),
                message="batch of 1 in training: batch statistics normalize every value to 0, "
                        f"nothing to compare (torch: {exc.__cause__})")]
            return report
        raise
    report.results = results
    _explain_own_mask(results, work, twin)
    if how or arrays.get("notes"):
        report.info["notes"] = [*how, *arrays.get("notes", ())]
    explain_dtype_mismatch(results, layer, dtype)
    if is_index(x):
        report.info["not_compared"] = {"dx": DX_NOT_APPLICABLE}
    if numerical and not any(r.status == ERROR for r in results):
        from harness.gradcheck import numerical_results

        report.results.extend(_guarded(
            name, numerical_results, layer, twin, x, name=name, t=arrays.get("t"),
            dout=arrays.get("dout"), train=train))
    _suggest_layout(report, twin, work, given)
    _suggest_registered_twin(report, given)
    return _one_hot_only(report, twin, x, arrays.get("t"), given)


def _one_hot_only(report: LayerReport, twin: Twin, x: np.ndarray, t: Any,
                  given: dict[str, Any]) -> LayerReport:
    """A loss checked with the integer labels its registration draws that raises or fails
    with them may take one-hot rows only (``np.sum(t * np.log(y))``, the book's chapter-4
    cross-entropy). Checked again with the same labels as one-hot rows: if every tensor then
    passes, a layer that raised with integer labels is judged on that run, with a note, and
    one that computed wrong numbers from them keeps its FAIL, with a note saying so."""
    bad = [r for r in report.results if r.status in (FAIL, ERROR)]
    if (twin.kind != "loss" or given["t"] is not None or not bad or t is None
            or getattr(_RETRY, "active", False) or np.ndim(t) != 1
            or np.asarray(t).dtype.kind not in "iu" or x.ndim != 2):
        return report
    one_hot = np.eye(x.shape[1], dtype=given["dtype"])[np.asarray(t)]
    other = _passing_recheck(given, x=x, t=one_hot)
    if other is None:
        return report
    if all(r.status == ERROR for r in bad):
        other.info.setdefault("notes", []).append(
            f"the layer takes one-hot rows only: with integer class labels (shape {np.shape(t)}) "
            f"it raised ({bad[0].message.split(' (at ')[0].strip()}), so it was checked with the same "
            f"labels as one-hot rows; the book's layers take both (t.argmax(axis=1) when "
            f"t.size == y.size)")
        return other
    note = (f"with the same labels as one-hot rows every tensor passes: what goes wrong is "
            f"the handling of integer class labels (shape {np.shape(t)}); either the loss "
            f"takes one-hot rows only and broadcasts integer labels silently "
            f"(t * np.log(y)), or its branch for integer labels has a bug (the book's layers "
            f"take both: t.argmax(axis=1) when t.size == y.size)")
    for r in bad:
        r.message = f"{r.message} [{note}]" if r.message else f"[{note}]"
    report.info.setdefault("notes", []).append(note)
    return report


def _suggest_registered_twin(report: LayerReport, given: dict[str, Any]) -> None:
    """A layer checked against a module the user passed (``nn.CrossEntropyLoss()`` for a
    classic ``SoftmaxWithLoss``, ``nn.MSELoss()`` for the book's ``MeanSquaredError``) that
    fails where its registered twin passes computes another convention, not a wrong
    gradient: say so, with the convention the registration documents."""
    layer, module = given["layer"], given["module"]
    if module is None or getattr(_RETRY, "active", False) or not any(
            r.status == FAIL and not r.tensor.endswith("unchanged") for r in report.results):
        return
    own = lookup(type(layer))
    if own is None:
        return
    if _passing_recheck(given, module=None, weight_map=None, numerical=False) is None:
        return
    builtin = str(getattr(own.scratch_cls, "__module__", "")).startswith("scratch")
    note = (f"against its registered twin ({own.name}) every tensor passes: the module passed "
            f"({type(module).__name__}) computes something else (another convention or another "
            f"function), which is no bug in the layer"
            + (f"; the registration notes: {own.conventions.rstrip('.')}" if own.conventions
               else "")
            + ("; docs/conventions.md lists the switch that aligns each" if builtin else ""))
    for r in report.results:
        if r.status == FAIL:
            r.message = f"{r.message} [{note}]" if r.message else f"[{note}]"
    report.info.setdefault("notes", []).append(note)


_RETRY = threading.local()


def _passing_recheck(given: dict[str, Any], **changes: Any) -> LayerReport | None:
    """The check of ``given`` run once more with ``changes`` (no re-check inside it): its
    report where every tensor passes, else None. Behind a note only: a re-check that raises
    leaves the report as it is."""
    _RETRY.active = True
    try:
        other = check_layer(**{**given, **changes})
    except Exception:  # the suggestion is a bonus: the report stands as it is
        return None
    finally:
        _RETRY.active = False
    return other if other.ok else None


def _square_layout_swaps(twin: Twin, work: Any) -> dict[str, WeightSpec]:
    """The weight map with the layout conversion of every square 2-D parameter swapped (none
    <-> transpose): the one mistake in a weight map that no shape check can see."""
    params = getattr(work, "params", None) or {}
    swapped: dict[str, WeightSpec] = {}
    for k, spec in twin.weight_map.items():
        p = params.get(k) if isinstance(params, dict) else None
        if not (isinstance(p, np.ndarray) and p.ndim == 2 and p.shape[0] == p.shape[1] > 1):
            continue
        if spec.to_torch is identity and spec.from_torch is identity:
            swapped[k] = WeightSpec(spec.torch_name, transpose, transpose)
        elif spec.to_torch is transpose and spec.from_torch is transpose:
            swapped[k] = WeightSpec(spec.torch_name)
    return swapped


def _suggest_layout(report: LayerReport, twin: Twin, work: Any, given: dict[str, Any]) -> None:
    """A square weight mapped with the wrong layout (``"W": "weight"`` for an ``x @ W`` layer
    against ``nn.Linear``, whose weight is (out, in)) fails a correct layer on out, dx and dW
    with no shape to give it away. When a value row fails, run the check once more with each
    square weight's layout swapped; if every tensor then passes, say so on the failing rows."""
    if getattr(_RETRY, "active", False) or not any(
            r.status == FAIL and not r.tensor.endswith("unchanged") for r in report.results):
        return
    swaps = _square_layout_swaps(twin, work)
    if not swaps:
        return
    wm = {**twin.weight_map, **swaps}
    if _passing_recheck(given, weight_map=wm, numerical=False) is None:
        return
    fix = ", ".join(f"{k!r}: WeightSpec({s.torch_name!r}, transpose, transpose)"
                    if s.to_torch is transpose else f"{k!r}: {s.torch_name!r}"
                    for k, s in swaps.items())
    note = (f"with the layout of the square weight(s) {sorted(swaps)} swapped in the weight map "
            f"({fix}) every tensor passes: the weight map is wrong, not the layer (nn.Linear "
            f"keeps weight as (out, in), the transpose of the book's W of shape (in, out))")
    for r in report.results:
        if r.status == FAIL:
            r.message = f"{r.message} [{note}]" if r.message else f"[{note}]"
    report.info.setdefault("notes", []).append(note)


def _net_layers(net: Any) -> list[tuple[str, Any]]:
    layers = getattr(net, "layers", None)
    if layers is None:
        raise CheckError(f"{type(net).__name__}: a net must have .layers (a dict or a list)")
    items: Iterable = layers.items() if isinstance(layers, dict) else (
        (f"{type(layer).__name__}{i}", layer) for i, layer in enumerate(layers))
    return list(items)


def _net_input_shape(net: Any, first: Any, batch: int) -> tuple[tuple[int, ...], str]:
    """The input shape for ``net`` with ``batch`` rows and where it comes from: the net's
    ``input_dim`` (SimpleConvNet: (C, H, W)) or ``input_size``, else the first layer's twin's
    default (exact for an Affine; a guess for a convolution)."""
    name = type(net).__name__
    for attr in ("input_dim", "input_size"):
        dim = getattr(net, attr, None)
        if isinstance(dim, (int, np.integer)) and not isinstance(dim, bool):
            dim = (dim,)
        if isinstance(dim, (tuple, list)):
            return validate_shape(name, (batch, *dim), f"{attr} with the batch"), f"net.{attr}"
    for attr in ("input_dim", "input_size"):  # the book's SimpleConvNet keeps no input_dim:
        dim = _init_default(type(net), attr)  # its constructor's default
        if isinstance(dim, (int, np.integer)) and not isinstance(dim, bool):
            dim = (dim,)
        if isinstance(dim, (tuple, list)) and dim and _fits_first_layer(first, tuple(dim)):
            return (validate_shape(name, (batch, *dim), f"{attr} with the batch"),
                    f"the default {attr}={tuple(dim)!r} of {name}.__init__ (the net keeps no "
                    f"{attr} attribute)")
    try:
        tw, _ = resolve_twin(first, None, None)
    except CheckError:
        tw = None
    if tw is None or tw.input_shape is None:
        raise CheckError(f"{name}: pass x or input_shape (the net has no input_dim and its first "
                         f"layer no default input shape)")
    first, _ = adapt_layer(first, tw, None)  # the book's Affine: W as an attribute
    return _default_shape(name, tw, first, batch), f"the first layer's ({type(first).__name__}) default"


def _fits_first_layer(first: Any, dim: tuple[Any, ...]) -> bool:
    """Whether a per-sample input shape ``dim`` (a constructor's default, which the net may
    not have been built with) fits the first layer's weight ``W``: as many features as a
    dense ``W``'s rows, as many channels as a 4-D (FN, C, FH, FW) filter's C. True where the
    first layer has no such weight."""
    w = _layer_params(first).get("W")
    if not isinstance(w, np.ndarray) or not all(isinstance(d, (int, np.integer)) for d in dim):
        return True
    if w.ndim == 2:
        return int(np.prod(dim)) == w.shape[0]
    if w.ndim == 4:
        return len(dim) == 3 and dim[0] == w.shape[1]
    return True


def _layer_params(layer: Any) -> dict[str, Any]:
    """A layer's parameters by name: its ``params`` dict, or the book's attributes (``W``,
    ``b``) read through its twin; empty where it has neither."""
    try:
        tw, _ = resolve_twin(layer, None, None)
        layer, _ = adapt_layer(layer, tw, None)
    except Exception:
        pass
    params = getattr(layer, "params", None)
    return dict(params) if isinstance(params, MutableMapping) else {}


def _same_memory(a: Any, b: Any) -> bool:
    return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.size > 0 and b.size > 0
            and (a is b or bool(np.may_share_memory(a, b))))


def _param_wiring_rows(net: Any, layers: list[tuple[str, Any]]) -> list[TensorResult]:
    """FAIL rows for a ``net.params`` that does not hold the layers' own arrays: a key whose
    array no layer uses (a copy: an optimizer's in-place update of ``net.params`` never
    reaches the layers) and two keys holding one array (it is updated twice per step, each
    time with another layer's gradient). The per-layer checks and ``gradient()`` cannot see
    either: both hold until the first update."""
    params = getattr(net, "params", None)
    if not isinstance(params, MutableMapping):
        return []
    name = type(net).__name__
    used = [(f"{lname}.{pname}", p) for lname, layer in layers
            for pname, p in _layer_params(layer).items() if isinstance(p, np.ndarray)]
    rows: list[TensorResult] = []
    keys = [k for k, a in params.items() if isinstance(a, np.ndarray)]
    for i, key in enumerate(keys):
        arr = params[key]
        users = [where for where, p in used if _same_memory(p, arr)]
        aliases = [k for k in keys[:i] if _same_memory(params[k], arr)]
        row = TensorResult(layer=name, tensor=f"params[{key!r}] is the layers' array",
                           status=PASS, dtype=arr.dtype.name, shape=tuple(arr.shape),
                           total=int(arr.size),
                           tolerance_text="the very array a layer computes with")
        if aliases:
            row.status, row.mismatched = FAIL, int(arr.size)
            row.message = (
                f"{name}.params[{aliases[0]!r}] and {name}.params[{key!r}] are the same array"
                f"{' (used by ' + ' and '.join(users) + ')' if users else ''}: an optimizer "
                f"updates it twice per step, once with each key's gradient; give each layer "
                f"its own array (weights meant to be tied: one key, whose gradient is the sum "
                f"of the layers' gradients)")
        elif not users:
            twin_of = [where for where, p in used
                       if p.shape == arr.shape and np.array_equal(p, arr, equal_nan=True)]
            row.status, row.mismatched = FAIL, int(arr.size)
            row.message = (
                f"{name}.params[{key!r}] is not an array any layer computes with" + (
                    f": it equals {twin_of[0]} but is a copy, so an optimizer's in-place update "
                    f"of net.params never reaches the layer (the net never learns); build the "
                    f"layer from the very array (Affine(self.params['W1'], self.params['b1'])) "
                    f"and update it in place (params[key] -= lr * grads[key])"
                    if twin_of else
                    f" (layers' parameters: {', '.join(w for w, _ in used) or 'none'}): an "
                    f"optimizer's update of it changes nothing the net computes"))
        rows.append(row)
    return rows if any(r.status != PASS for r in rows) else []


def _init_default(cls: type, arg: str) -> Any:
    """The default of ``arg`` in the ``__init__`` of ``cls`` or the nearest base class that
    declares it (a subclass's ``__init__(self)`` calling ``super().__init__()``)."""
    for c in cls.__mro__:
        init = c.__dict__.get("__init__")
        if init is None:
            continue
        try:
            p = inspect.signature(init).parameters.get(arg)
        except (TypeError, ValueError):
            continue
        if p is not None:
            return None if p.default is inspect.Parameter.empty else p.default
    return None


def _usable(a: Any, shape: tuple[int, ...]) -> bool:
    """Whether a scratch output or gradient can be passed on to the next layer (cast to the
    check's dtype): a float array of the shape the torch twin gives."""
    return isinstance(a, np.ndarray) and a.dtype.kind == "f" and a.shape == tuple(shape)


@one_thread
def check_net(
    net: Any,
    x: np.ndarray | None = None,
    t: np.ndarray | None = None,
    *,
    dtype: Any = np.float64,
    seed: int = 0,
    batch: int = 4,
    input_shape: tuple[int, ...] | None = None,
    tol: Tolerance | None = None,
    train: bool = True,
) -> LayerReport:
    """Check every layer of ``net`` (its ``.layers`` and ``.last_layer``) against its twin.

    Each torch twin receives the scratch layer's own input and upstream gradient, cast to the
    check's dtype, so a bug is pinned to the layer that has it and cannot smear into the
    layers before or after it; a layer whose output or gradient cannot be passed on (it
    raised, returned None or another shape) ends the pass there. Results come in forward
    order (outputs) then backward order (gradients); ``first_divergence`` names the first
    that fails. Without ``x`` or ``input_shape`` the input shape is ``(batch,
    *net.input_dim)``. A first layer that takes integer indices (an Embedding: ``x`` is an
    integer array, or its twin's ``make_input`` gives one) gets them as ``check_layer`` does;
    the layers after it get float activations.
    """
    dtype = as_float_dtype(dtype)
    seed, tol = validate_seed(seed), validate_tol(tol)
    net_name = type(net).__name__
    layers = _net_layers(net)
    if not layers:
        raise CheckError(f"{net_name}: the net has no layers")
    last = getattr(net, "last_layer", None) or getattr(net, "lastLayer", None)
    if last is not None:
        layers.append(("last_layer", last))
    rng = np.random.default_rng(seed if x is None else [seed, 0xD0])  # as in check_layer
    origin = ""  # where a shape the caller did not give came from
    if x is None:
        if input_shape is None:
            input_shape, origin = _net_input_shape(net, layers[0][1], batch)
        input_shape = validate_shape(net_name, input_shape)
        x = _net_default_input(net_name, layers[0][1], input_shape, dtype, rng)
    x = validate_input(net_name, x, dtype, indices=True)
    fwd: list[TensorResult] = []
    nonfinite: list[TensorResult] = []  # the first layer whose output has NaN/Inf
    staged = []
    adapted_notes: list[str] = []
    h = x
    for lname, layer in layers:
        qual = f"{net_name}.{lname}"
        try:
            twin, _ = resolve_twin(layer, None, None)
        except CheckError as exc:  # name the net's layer
            raise CheckError(f"{net_name}.{lname}: {exc}") from None
        layer, how = adapt_layer(layer, twin, None)
        adapted_notes.extend(f"{qual}: {line}" for line in how)
        work = copy_layer(layer, dtype, twin.buffer_map, qual)
        mod = copy.deepcopy(build_module(twin, work, qual)).to(TORCH_DTYPE[dtype])
        load_weights(work, mod, twin, qual)
        check_indices(qual, mod, h)
        staged.append((lname, layer, work, mod, twin, h))
        try:
            out = _guarded(qual, _forward_only, work, mod, twin, h, dtype, train, qual)
        except TwinRejected as exc:
            if origin:
                raise CheckError(f"{exc} (the input shape {x.shape} came from {origin}; pass "
                                 f"input_shape=... or x=...)") from exc.__cause__
            raise
        if out is None:
            break
        if not nonfinite and out.dtype.kind == "f" and not np.all(np.isfinite(out)):
            first = tuple(int(i) for i in np.argwhere(~np.isfinite(out))[0])
            kind = "NaN" if np.isnan(out[first]) else "Inf"
            nonfinite.append(TensorResult(
                layer=f"{lname}({type(work).__name__})", tensor="out is finite", status=FAIL,
                dtype=dtype.name, shape=tuple(out.shape), worst_index=first,
                mismatched=int((~np.isfinite(out)).sum()), total=int(out.size),
                message=f"first {kind} of the forward pass: layer {lname} output, first at index "
                        f"{first}, from a finite input"))
        h = out
    # now the full forward/backward per layer, in backward order for gradients
    dout: np.ndarray | None = None
    bwd: list[TensorResult] = []
    not_compared: dict[str, str] = {}
    notes: list[str] = list(dict.fromkeys(adapted_notes))
    if origin.startswith("the default"):  # a guess the user may need to correct
        notes.append(f"{net_name}: input of shape (batch, {', '.join(map(str, x.shape[1:]))}) "
                     f"from {origin}; pass input_shape=... if the net was built with another")
    for lname, layer, work, mod, twin, h_in in reversed(staged):
        label = f"{lname}({type(work).__name__})"
        t = validate_targets(f"{net_name}.{lname}", twin, h_in, t, dtype)
        results, arrays = _guarded(
            f"{net_name}.{lname}", _run_twice, work, mod, twin, h_in, dtype=dtype, seed=seed,
            rng=rng, name=label, t=t, dout=dout, tol=tol, train=train, generated=False)
        explain_dtype_mismatch(results, layer, dtype)
        notes.extend(f"{net_name}.{lname}: {line}" for line in arrays.get("notes", ()))
        if twin.kind == "loss" and t is None:
            t = arrays.get("t")
        fwd[:0] = [r for r in results if r.tensor in ("out", "loss")]
        bwd.extend(r for r in results if r.tensor not in ("out", "loss"))
        if is_index(h_in):  # the first layer takes indices: it has no dx
            not_compared[f"{label}.dx"] = DX_NOT_APPLICABLE
        dx = arrays.get("dx")
        if not _usable(dx, h_in.shape):  # raised, None, another shape: nothing to pass on
            break
        dout = dx.astype(dtype)  # so one layer's float64 dx does not fail the layer before it
    report = LayerReport(layer=net_name, dtype=dtype.name, input_shape=tuple(x.shape), seed=seed)
    report.results = nonfinite + fwd + bwd + _param_wiring_rows(net, layers)
    if t is not None and last is not None and isinstance(getattr(net, "params", None), dict) \
            and not any(r.status == ERROR for r in report.results):
        try:
            layers_ok = all(r.status == PASS for r in report.results)
            report.results += net_methods(net, x, t, seed, layers_ok, notes)
        except NetTwinUnavailable as exc:  # the per-layer rows stand alone; say why
            notes.append(f"{net_name}'s own methods not checked: {exc}")
    if notes:
        report.info["notes"] = notes
    if not_compared:
        report.info["not_compared"] = not_compared
    return report


def _has_state(tnet: Any) -> bool:
    """A twin with dropout masks or running statistics (its loss depends on the mode)."""
    return any(tw.prepare is not None or tw.buffer_map for tw in tnet.twins)


class NetTwinUnavailable(Exception):
    """The whole-net twin of :func:`net_methods` cannot be built for this net."""


def net_methods(net: Any, x: np.ndarray, t: Any, seed: int, layers_ok: bool = True,
                skipped: list[str] | None = None) -> list[TensorResult]:
    """The net's own methods against the torch twin of the whole net, in float64 (what they
    get wrong is wiring, not rounding): ``gradient(x, t)`` (each key of ``net.params``, on its
    second call: the first one, on other inputs, catches gradients of the previous call),
    ``predict(x)`` in evaluation mode, and ``accuracy(x, t)`` against the argmax of that
    prediction. The per-layer checks cannot see a gradient stored under another key, one
    layer's gradient returned for another, or a predict that runs in training mode."""
    from harness.train import cast_net
    from reference.nets import to_torch

    name = type(net).__name__
    rows: list[TensorResult] = []
    f64 = np.dtype(np.float64)
    try:
        work = cast_net(net, f64)
        tnet = to_torch(work, f64)
    except Exception as exc:  # a net the twin cannot map: the per-layer rows stand alone
        raise NetTwinUnavailable(f"the torch twin of the whole net could not be built "
                                 f"({type(exc).__name__}: {exc})") from exc
    xs = x if is_index(x) else x.astype(f64)
    ts = np.asarray(t)
    ts = ts.astype(f64) if ts.dtype.kind == "f" else ts
    rng = np.random.default_rng([seed, 0x6E7])
    x_w = rng.permutation(xs.reshape(-1)).reshape(xs.shape)  # the warm-up call's inputs
    t_w = ts if ts.ndim == 0 else rng.permutation(ts)
    own_term = False  # the net's loss adds a term of the weights the twin does not know
    softmaxed = _predicts_probabilities(work, name, xs)
    soft_hint = (f": {name}.predict(x) returns probabilities (every row sums to 1), so softmax "
                 f"is applied in predict() and again in the loss layer; predict() must return "
                 f"the scores (the book's SoftmaxWithLoss applies softmax itself)"
                 if softmaxed else "")
    if hasattr(work, "gradient") and hasattr(work, "loss") and not _has_state(tnet):
        # Only for nets without dropout or BatchNorm, whose loss() may run in either mode.
        row, own_term = _loss_row(net, work, tnet, name, ((xs, ts), (x_w, t_w)), skipped)
        if row is not None and row.status == FAIL and soft_hint:
            row.message = row.message.split(": a difference that changes")[0] + soft_hint
        if row is not None:
            rows.append(row)
    if own_term and hasattr(work, "gradient"):
        try:
            work.gradient(x_w, t_w)
            grads = work.gradient(xs, ts)
            rows += _numerical_gradient_rows(work, name, grads, xs, ts, seed)
        except Exception as exc:
            rows.append(_error(name, "gradient()", exc, f64, f"{name}.gradient(x, t) raised "))
    elif hasattr(work, "gradient"):
        try:
            previous: dict[str, np.ndarray] = {}
            first: dict[str, np.ndarray] = {}  # what the first call returned, copied
            for xi, ti in ((x_w, t_w), (xs, ts)):
                tnet.train()
                tnet.zero_grad()
                tnet.loss(torch.from_numpy(np.ascontiguousarray(xi)),
                          torch.from_numpy(np.ascontiguousarray(ti))).backward()
                grads = work.gradient(xi, ti)  # after torch's forward: its dropout masks
                if not previous:
                    previous = tnet.grads()
                    first = {k: np.array(v, dtype=np.float64) for k, v in grads.items()
                             if isinstance(v, np.ndarray)} if isinstance(grads, dict) else {}
            expected = tnet.grads()
            # one absolute atol for every gradient, from the largest: a gradient that is
            # exactly 0 in exact arithmetic (a bias before BatchNorm) is rounding on both sides
            scale = max((float(np.abs(g).max()) for g in expected.values() if g.size), default=0.0)
            base = DEFAULT_TOLERANCES["float64"]
            tol = Tolerance(base.rtol, base.atol * scale, scaled=False)
            extra = sorted(set(grads) - set(work.params)) if isinstance(grads, dict) else []
            if extra and skipped is not None:
                skipped.append(f"{name}.gradient() also returned {extra}, which are not keys of "
                               f"net.params (keys: {list(work.params)}): an optimizer never "
                               f"applies them")
            for k in work.params:
                got = grads.get(k) if isinstance(grads, dict) else None
                r = compare(got, expected[k], tensor=f"gradient()[{k!r}]", layer=name,
                            dtype=f64, tol=tol)
                r.tolerance_text += " (atol: 1e-10 x the largest gradient of the net)"
                if r.status == FAIL and got is not None and \
                        np.shape(got) != np.shape(expected[k]):
                    same = [o for o, e in expected.items()
                            if o != k and e.shape == np.shape(got)]
                    which = next((o for o in same if _close(got, expected[o])), None)
                    r.message = (
                        f"{name}.gradient()[{k!r}] has shape {np.shape(got)}, "
                        f"net.params[{k!r}] {np.shape(expected[k])}" + (
                            f": it is the gradient of {which!r} (stored under the wrong key)"
                            if which else
                            f": the shape of {', '.join(f'params[{o!r}]' for o in same)}"
                            if same else ""))
                elif r.status == FAIL and got is None:
                    r.message = (f"{name}.gradient() returned no gradient under the key {k!r} "
                                 f"(keys: {sorted(grads) if isinstance(grads, dict) else grads!r})")
                elif r.status == FAIL and not r.message:
                    diagnosis = _gradient_diagnosis(k, got, expected, previous, work.params, tnet)
                    if not diagnosis and k in first and _close(got, first[k]):
                        diagnosis = (": it is what gradient() returned for other inputs, on "
                                     "the call before: gradient(x, t) ignores x and t (does it "
                                     "run the forward pass, self.loss(x, t), before "
                                     "backward?)")
                    if not diagnosis and soft_hint:
                        diagnosis = soft_hint
                    if not diagnosis:
                        diagnosis = (
                            ", though each layer passes on its own: look at how gradient() "
                            "collects the layers' grads, or at a term its loss adds that the "
                            "twin does not know (weight decay: the twin reads "
                            "net.weight_decay_lambda)" if layers_ok else
                            ": a layer fails on its own too (the first divergence)")
                    r.message = (f"{name}.gradient(x, t) differs from autograd through the "
                                 f"whole net for {k!r}{diagnosis}")
                rows.append(r)
        except Exception as exc:
            rows.append(_error(name, "gradient()", exc, f64, f"{name}.gradient(x, t) raised "))
            rows[-1].message += _grads_layout_hint(exc, work) or _needs_loss_first(
                work, name, xs, ts) or (
                ": every layer passes on its own and the forward runs, so look at the order "
                "gradient() calls backward in: the last layer first, then the layers in "
                "reverse (reversed(list(self.layers.values())))"
                if layers_ok and isinstance(exc, ValueError) and any(
                    f.name == "backward" for f in traceback.extract_tb(exc.__traceback__))
                else "")
    if not hasattr(work, "predict"):
        return rows
    try:
        tnet.eval()
        with torch.no_grad():
            expected = tnet.forward(torch.from_numpy(np.ascontiguousarray(xs)), inject=False)
        pred = work.predict(xs)
    except Exception as exc:
        return [*rows, _error(name, "predict()", exc, f64, f"{name}.predict(x) raised ")]
    finally:
        tnet.train()
    r = compare(pred, expected.numpy(), tensor="predict() (evaluation mode)", layer=name,
                dtype=f64)
    if r.status == FAIL and not r.message and soft_hint:
        r.message = soft_hint[2:]
    if r.status == FAIL and not r.message:
        r.message = (f"{name}.predict(x) differs from the twin's output in evaluation mode: "
                     "the scores that go into the loss layer (not softmax probabilities), no "
                     "dropout, BatchNorm with its running statistics")
    rows.append(r)
    one_hot = (ts.ndim == 2 and np.shape(pred) == ts.shape and bool(np.isin(ts, (0, 1)).all())
               and bool((ts.sum(axis=1) == 1).all()))
    # classification only: integer labels or one-hot rows (a regression net's accuracy() is
    # its own definition, nothing to hold it against)
    classify = (ts.ndim == 1 and ts.dtype.kind in "iu") or one_hot
    if callable(getattr(work, "accuracy", None)) and classify and np.ndim(pred) == 2:
        # labels right on every other row (from the second on): an accuracy() that counts
        # nothing, or everything, or the first row only, is wrong on any batch of 2 or more
        scores = np.asarray(pred)
        labels = scores.argmax(axis=1)
        labels[::2] = (labels[::2] + 1) % scores.shape[1]
        r = check_accuracy(work.accuracy, xs, labels, scores, layer=name)
        bs = _batch_size_default(work.accuracy)
        if r.status == FAIL and bs is not None and len(xs) % bs:
            # the book's SimpleConvNet.accuracy(x, t, batch_size=100) counts whole batches
            # only: on these rows, with one batch of all of them
            whole = check_accuracy(functools.partial(work.accuracy, batch_size=len(xs)), xs,
                                   labels, scores, layer=name)
            if whole.status == PASS and skipped is not None:
                r = whole
                skipped.append(
                    f"{name}.accuracy(x, t) counts whole batches of batch_size={bs} only: the "
                    f"rows after the last whole batch are never counted, but divided by (on "
                    f"fewer than {bs} rows it returns 0); checked with one batch of all the "
                    f"rows, where it counts right. Exact on a test set whose size is a "
                    f"multiple of {bs}")
        if r.message:
            r.message = f"{name}.{r.message}"
        if r.status == VACUOUS and _binds(work.accuracy, xs, labels):
            # it takes (x, t) and raises on the net's own prediction with either form of t
            r.status, r.mismatched = FAIL, 1
            r.message = r.message.removesuffix(": not compared") + (
                ": an accuracy(x, t) must count the rows in one form at least (the "
                          "book's: argmax over axis 1 of predict(x), then compared with t or "
                          "the argmax over axis 1 of one-hot t)")
        if r.status == VACUOUS:  # an accuracy() this check cannot call: a note, not a row
            if skipped is not None:
                skipped.append(f"not checked: {r.message}")
        else:
            rows.append(r)
    return rows


def _close(a: Any, b: np.ndarray) -> bool:
    a = np.asarray(a)
    if a.shape != b.shape or a.dtype.kind != "f":
        return False
    scale = max(float(np.abs(b).max()) if b.size else 0.0, 1e-300)
    return bool(np.all(np.abs(a - b) <= 1e-7 * scale))


def _gradient_diagnosis(key: str, got: Any, expected: dict[str, np.ndarray],
                        previous: dict[str, np.ndarray], params: Any, tnet: Any) -> str:
    """What a wrong ``gradient()[key]`` is, where it is something recognisable: another key's
    gradient, the previous call's, or the right one off by a multiple of the parameter (a
    weight-decay term left out, added twice, or added to a parameter the twin does not decay).
    Empty where it is none of these."""
    try:
        g = np.asarray(got, dtype=np.float64)
    except (TypeError, ValueError):
        return ""
    if g.shape != expected[key].shape:
        return ""
    others = [k for k, e in expected.items() if k != key and _close(g, e)]
    if others:
        return (f": it is the gradient of {others[0]!r} (stored under the wrong key: look at "
                f"which layer's gradient gradient() returns for {key!r})")
    if key in previous and _close(g, previous[key]):
        return (": it is the gradient of the previous call, on other inputs (gradient() "
                "returns gradients computed before this call's forward and backward: call "
                "self.loss(x, t) and backward first, and return the fresh arrays)")
    p = np.asarray(params[key], dtype=np.float64)
    d = g - expected[key]
    pp = float(np.sum(p * p))
    if pp > 0:
        c = float(np.sum(d * p)) / pp
        resid = float(np.abs(d - c * p).max())
        if c and resid <= 1e-6 * max(float(np.abs(d).max()), 1e-300):
            lam = float(getattr(tnet, "weight_decay_lambda", 0.0))
            decayed = any(link.key == key and link.name.startswith("W") for link in tnet.links)
            if lam and decayed and math.isclose(c, -lam, rel_tol=1e-6):
                what = ("the weight-decay term weight_decay_lambda * params[key] is missing "
                        "(loss() adds 0.5 * lambda * sum(W**2); its gradient lambda * W must "
                        "be added to dW)")
            elif lam and decayed and math.isclose(c, lam, rel_tol=1e-6):
                what = "the weight-decay term lambda * W is added twice"
            elif lam and not decayed and math.isclose(c, lam, rel_tol=1e-6):
                what = (f"weight decay is applied to {key!r}, which the classic weight decay "
                        f"leaves alone (only the weights W of Affine and Convolution layers; "
                        f"not biases, gamma, beta), so the twin's loss has no such term")
            else:
                what = (f"a term {c:.6g} * params[{key!r}] that the twin's loss does not have "
                        f"(weight decay with lambda {c:.6g}? the twin adds 0.5 * "
                        f"weight_decay_lambda * sum(W**2) over the weights from "
                        f"net.weight_decay_lambda = {lam:g})")
            return f": it differs from autograd's by exactly {c:.6g} * params[{key!r}]: {what}"
    return ""


def _grads_layout_hint(exc: BaseException, net: Any) -> str:
    """For an ``AttributeError`` on ``layer.d<name>`` (the book's layout: ``dW``, ``dgamma``)
    from a layer that keeps its gradients in a ``grads`` dict (scratch's layers): where the
    gradient is."""
    obj, attr = getattr(exc, "obj", None), getattr(exc, "name", None)
    if not isinstance(exc, AttributeError) or not isinstance(attr, str) \
            or not attr.startswith("d"):
        return ""
    grads = getattr(obj, "grads", None)
    key = attr[1:]
    if not isinstance(grads, MutableMapping) or key not in getattr(obj, "params", {}):
        return ""
    where = next((f"layers[{n!r}]" for n, layer in _net_layers(net) if layer is obj), "the layer")
    return (f": {where} is a {type(obj).__name__} that keeps its gradients in a dict "
            f"(.grads[{key!r}], as scratch's layers do), not in the attribute .{attr} of the "
            f"book's layout: read .grads[{key!r}] in gradient()")


def _batch_size_default(fn: Callable[..., Any]) -> int | None:
    """The default of ``fn``'s ``batch_size`` argument, where it has one that is an int."""
    try:
        p = inspect.signature(fn).parameters.get("batch_size")
    except (TypeError, ValueError):
        return None
    d = getattr(p, "default", None)
    return int(d) if isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0 \
        else None


def _predicts_probabilities(work: Any, name: str, x: np.ndarray) -> bool:
    """Whether the net's ``predict(x)`` (on a copy) returns probabilities: a 2-D float array
    with more than one column, values in [0, 1], every row summing to 1."""
    try:
        y = np.asarray(clone(work, name).predict(x))
    except Exception:
        return False
    return bool(y.ndim == 2 and y.shape[1] > 1 and y.dtype.kind == "f"
                and np.all((y >= 0) & (y <= 1))
                and np.allclose(y.sum(axis=1), 1.0, rtol=0, atol=1e-6))


def _needs_loss_first(work: Any, name: str, x: np.ndarray, t: Any) -> str:
    """For a ``gradient()`` that raised: whether it runs when ``loss(x, t)`` ran just before
    it (on a copy), i.e. it does not run the forward pass itself."""
    if not callable(getattr(work, "loss", None)):
        return ""
    try:
        trial = clone(work, name)
        trial.loss(x, t)
        trial.gradient(x, t)
    except Exception:
        return ""
    return (f": it runs when {name}.loss(x, t) ran just before it, so gradient() does not run "
            f"the forward pass itself: call self.loss(x, t) at its start (the book's "
            f"gradient() does), or it backpropagates whatever forward ran last")


def _binds(fn: Callable[..., Any], *args: Any) -> bool:
    """Whether ``fn(*args)`` fits ``fn``'s signature (a call that raises then raised inside)."""
    try:
        inspect.signature(fn).bind(*args)
    except (TypeError, ValueError):
        return False
    return True


def _loss_pair(work: Any, tnet: Any, name: str, x: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    with torch.no_grad():
        theirs = float(tnet.loss(torch.from_numpy(np.ascontiguousarray(x)),
                                 torch.from_numpy(np.ascontiguousarray(t))))
    return float(np.asarray(clone(work, name).loss(x, t))), theirs


def _loss_row(net: Any, work: Any, tnet: Any, name: str,
              batches: tuple[tuple[np.ndarray, np.ndarray], ...],
              notes: list[str] | None) -> tuple[TensorResult | None, bool]:
    """The row comparing ``net.loss(x, t)`` with the twin's loss, and whether the net's loss
    adds a term of the weights alone that the twin does not know (weight decay stored under
    another name than ``weight_decay_lambda``): a difference that is the same on two batches.
    That is a note, and ``gradient()`` is then checked against central differences of the
    net's own ``loss()``; a difference that changes with the batch is a FAIL."""
    try:
        pairs = [_loss_pair(work, tnet, name, x, t) for x, t in batches]
    except Exception:  # a loss() that needs more than (x, t): judged by gradient() alone
        return None, False
    (ours, theirs), (ours2, theirs2) = pairs
    row = compare(np.asarray(ours), np.asarray(theirs), tensor="loss(x, t)", layer=name,
                  dtype=np.dtype(np.float64))
    if row.status != FAIL or not all(map(math.isfinite, (ours, theirs, ours2, theirs2))):
        return row, False
    d1, d2 = ours - theirs, ours2 - theirs2
    same = abs(d1 - d2) <= 1e-9 * max(1.0, abs(theirs), abs(theirs2), abs(d1))
    lam = getattr(net, "weight_decay_lambda", None)
    if same and not lam:
        if notes is not None:
            notes.append(f"{name}.loss(x, t) adds {d1:.9g} to the twin's loss, the same on two "
                         f"batches: a term of the weights alone that the twin does not know "
                         f"(weight decay? the twin adds 0.5 * weight_decay_lambda * sum(W**2) "
                         f"from net.weight_decay_lambda); gradient() is checked against central "
                         f"differences of the net's own loss() instead of the twin")
        return None, True
    row.message = (f"{name}.loss(x, t) is {ours:.9g}, the twin's {theirs:.9g}" + (
        f": the same difference {d1:.9g} on a second batch, a term of the weights alone: the "
        f"twin adds 0.5 * weight_decay_lambda * sum(W**2) (weight_decay_lambda={lam!r})"
        + _decay_term(d1, work, tnet) if same else
        f"; on a second batch {ours2:.9g} vs {theirs2:.9g}: a difference that changes with the "
        f"data ({d1:.3g}, then {d2:.3g}), so not a term of the weights like weight decay: the "
        f"data term of loss() is wrong (predict() and the loss layer pass on their own: look at "
        f"how loss() combines them)"))
    return row, False


def _decay_term(diff: float, work: Any, tnet: Any) -> str:
    """What a constant difference ``diff`` between the net's loss and the twin's is, in terms
    of the weight-decay sums: the twin's term missing, added twice, or another set of
    parameters decayed too (biases, gamma, beta)."""
    lam = float(getattr(tnet, "weight_decay_lambda", 0.0))
    weights = {link.key for link in tnet.links if link.name.startswith("W")}
    half = {True: 0.0, False: 0.0}  # 0.5 * lambda * sum(p**2) over the weights / the others
    for key, p in work.params.items():
        half[key in weights] += 0.5 * lam * float(np.sum(np.asarray(p, dtype=np.float64) ** 2))
    others = sorted(set(work.params) - weights)

    def near(a: float) -> bool:
        return math.isclose(diff, a, rel_tol=1e-6, abs_tol=1e-12)

    if lam and near(-half[True]):
        return ": loss() leaves it out (its gradient() may still add lambda * W)"
    if lam and near(half[True]):
        return ": loss() adds it twice"
    if lam and others and near(half[False]):
        return (f": loss() also adds 0.5 * lambda * sum(p**2) of {others}, which the classic "
                f"weight decay leaves alone (biases, gamma, beta)")
    return "; does loss() add exactly it?"


NUMERICAL_SAMPLES = 6
"""Entries per parameter of the central-difference check of ``gradient()``."""


def _numerical_gradient_rows(work: Any, name: str, grads: Any, x: np.ndarray, t: np.ndarray,
                             seed: int) -> list[TensorResult]:
    """``gradient()`` at a few entries of each parameter against central differences of the
    net's own ``loss()`` (float64, h = 1e-6): for a loss with a term the twin does not know."""
    rng = np.random.default_rng([seed, 0x9A])
    rows = []
    for key, param in work.params.items():
        got_all = grads.get(key) if isinstance(grads, dict) else None
        if got_all is not None:
            got_all = np.array(got_all, dtype=np.float64)  # before loss() runs again
        if got_all is None or np.shape(got_all) != np.shape(param):
            rows.append(compare(got_all, np.zeros_like(param), tensor=f"gradient()[{key!r}]",
                                layer=name, dtype=np.dtype(np.float64)))
            rows[-1].message = (f"{name}.gradient() returned no gradient of shape "
                                f"{np.shape(param)} under the key {key!r}")
            continue
        idx = rng.choice(param.size, size=min(NUMERICAL_SAMPLES, param.size), replace=False)
        numerical = np.empty(idx.size)
        for i, j in enumerate(idx):  # .flat: in place, whatever the layout (layers share it)
            old = float(param.flat[j])
            h = 1e-6 * max(1.0, abs(old))
            param.flat[j] = old + h
            plus = float(np.asarray(work.loss(x, t)))
            param.flat[j] = old - h
            minus = float(np.asarray(work.loss(x, t)))
            param.flat[j] = old
            numerical[i] = (plus - minus) / (2 * h)
        got = got_all.reshape(-1)[idx]
        scale = max(float(np.abs(numerical).max()), 1e-12)
        r = compare(got, numerical, tensor=f"gradient()[{key!r}] vs numerical",
                    layer=name, dtype=np.dtype(np.float64),
                    tol=Tolerance(1e-5, 1e-6 * scale, scaled=False))
        r.tolerance_text += (f" ({idx.size} entries, central differences of {name}.loss with "
                             f"h = 1e-6)")
        if r.status == FAIL:
            r.message = (f"{name}.gradient()[{key!r}] at flat indices {idx.tolist()} is not "
                         f"the derivative of {name}.loss(x, t): a term of the loss left out of "
                         f"gradient() (or added to it twice)")
        rows.append(r)
    return rows


def _net_default_input(name: str, first: Any, shape: tuple[int, ...], dtype: np.dtype,
                       rng: np.random.Generator) -> np.ndarray:
    """A random input for a net: standard normal, or the first layer's twin's ``make_input``
    where that gives integer indices (an Embedding first). Float draws are the same as
    without the twin's ``make_input`` (it is tried on a copy of ``rng``)."""
    tw = lookup(type(first))
    if tw is not None and tw.make_input is not None:
        trial_rng = copy.deepcopy(rng)
        x = _guarded(f"{name}: the first layer's make_input", make_input, tw, first, shape,
                     dtype, trial_rng)
        if is_index(x):
            rng.bit_generator.state = trial_rng.bit_generator.state
            return x
    return rng.standard_normal(shape).astype(dtype)


def _forward_only(work: Any, mod: torch.nn.Module, twin: Twin, h: np.ndarray,
                  dtype: np.dtype, train: bool, name: str) -> np.ndarray | None:
    """One layer's scratch output (cast to ``dtype``) on throwaway copies, to feed the next
    layer; None for the loss layer or an output that cannot be passed on (the layer raised,
    returned None, another shape than torch's or a non-float array). The torch twin runs too:
    one that rejects ``h`` (layers that do not chain, a wrong input shape) is a
    :class:`TwinRejected` naming this layer."""
    if twin.kind == "loss":
        return None
    probe, pmod = copy_layer(work, None, twin.buffer_map, name), copy.deepcopy(mod)
    pmod.train(train)
    kwargs = dict(twin.forward_kwargs(probe)) if twin.forward_kwargs else {}
    if accepts(probe.forward, "train_flg"):
        kwargs.setdefault("train_flg", train)
    if twin.prepare is not None:
        twin.prepare(probe, pmod, h, np.random.default_rng(0))
    with torch.no_grad():
        out_t = _torch_call(name, pmod, "input", h.shape,
                            lambda: pmod(torch_input(h, TORCH_DTYPE[dtype], False)), x=h)
    try:
        out = probe.forward(h.copy(), **kwargs)
    except Exception:
        return None
    return out.astype(dtype, copy=False) if _usable(out, tuple(out_t.shape)) else None
