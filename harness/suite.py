"""The built-in check suite that ``nn-parity check`` runs: every registered layer, the nets,
and any extra cases (optimizers, user modules) added with :func:`add_case`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.check import check_layer, check_net, one_thread
from harness.compare import FAIL
from harness.report import LayerReport
from reference.registry import registered

DTYPES = (np.float32, np.float64)
BATCHES = (1, 3, 8)
SEEDS = (0, 1)


@dataclass
class Case:
    """One named check: ``run(dtype, seed, batch) -> LayerReport``.

    ``numerical``: ``run`` also takes ``numerical=True`` (``check_layer``'s: backprop and
    autograd against central differences as well), which ``nn-parity check --numerical`` asks
    for."""

    name: str
    run: Callable[..., LayerReport]
    group: str = "layer"
    numerical: bool = False


_EXTRA: list[Case] = []


def add_case(name: str, run: Callable[..., LayerReport], group: str = "extra",
             numerical: bool = False) -> None:
    """Add a case to ``nn-parity check``; ``numerical=True`` when ``run`` takes ``numerical``."""
    _EXTRA[:] = [c for c in _EXTRA if c.name != name]
    _EXTRA.append(Case(name, run, group, numerical))


@dataclass
class Variant:
    """A configuration of a built-in layer class that ``nn-parity check`` runs besides the
    registered example (a stride, a padding, a mode, eval instead of training). A user's
    subclass of that class (``--module``) is checked in every variant too, built with the
    variant's settings (:func:`harness.user_modules.construct_like`).

    ``make(rng, dtype)`` builds the built-in layer in that configuration; ``shape`` is the
    per-sample input shape (None: the twin's ``input_shape``); ``min_batch`` raises smaller
    batches (BatchNorm over 1 row is vacuous); ``kwargs`` go to ``check_layer``."""

    base: type
    label: str
    make: Callable[[np.random.Generator, np.dtype], Any]
    shape: tuple[int, ...] | None = None
    min_batch: int = 1
    numerical: bool = True
    kwargs: dict[str, Any] = field(default_factory=dict)
    inputs: Callable[[np.random.Generator, tuple[int, ...], np.dtype], np.ndarray] | None = None
    """Draws the input ``x`` (rng, full shape, dtype) where the registration's inputs avoid
    a case on purpose: exact zeros for ReLU, ties in a pooling window, logits in the
    hundreds."""
    check_fn: Callable[..., LayerReport] | None = None
    """``check_fn(layer, dtype, seed, batch, name)`` instead of ``check_layer``: a check of
    what no torch comparison can see (a dropout layer's own mask generator)."""
    hint: str = ""
    """What this setting is made to catch and the convention torch follows there, added to
    the message of every tensor that FAILs in it (``dx`` with ties in a pooling window: torch
    sends the gradient to the first maximum)."""

    @property
    def name(self) -> str:  # label "": the class's own case, for a class with no example=
        return f"{self.base.__name__} ({self.label})" if self.label else self.base.__name__

    def check(self, layer: Any, dtype: np.dtype, seed: int, batch: int, numerical: bool = False,
              name: str | None = None, **kwargs: Any) -> LayerReport:
        """``check_layer`` on ``layer`` in this variant's input shape; ``kwargs`` (``tol``,
        ``train``, ...) go to ``check_layer`` and take precedence over the variant's."""
        n = max(batch, self.min_batch)
        if self.check_fn is not None:
            return self.check_fn(layer, np.dtype(dtype), seed, n, name or self.name)
        shape = None if self.shape is None else (n, *self.shape)
        opts: dict[str, Any] = {"batch": n, "input_shape": shape}
        if self.inputs is not None and shape is not None and "x" not in kwargs:
            rng = np.random.default_rng([seed, n, 0x1A])
            opts = {"x": self.inputs(rng, shape, np.dtype(dtype))}
        report = check_layer(layer, dtype=dtype, seed=seed, name=name or self.name,
                             numerical=numerical, **{**opts, **self.kwargs, **kwargs})
        if self.hint:
            for r in report.results:
                if r.status == FAIL:
                    r.message = f"{r.message} [{self.hint}]" if r.message else f"[{self.hint}]"
        return report


VARIANTS: list[Variant] = []


def add_variant(v: Variant) -> None:
    """Register a variant and add its case for the built-in class (named ``v.name``)."""
    VARIANTS[:] = [w for w in VARIANTS if w.name != v.name]
    VARIANTS.append(v)

    def run(dtype: np.dtype, seed: int, batch: int, numerical: bool = False) -> LayerReport:
        return v.check(v.make(np.random.default_rng(1000 + seed), np.dtype(dtype)), dtype, seed,
                       batch, numerical)

    add_case(v.name, run, group="layer", numerical=v.numerical)


def variants_for(cls: type) -> list[Variant]:
    """The variants of the built-in classes ``cls`` derives from."""
    _load_plugins()
    return [v for v in VARIANTS if issubclass(cls, v.base)]


def layer_cases() -> Iterator[Case]:
    for twin in registered().values():
        if twin.example is None:
            continue

        def run(dtype: np.dtype, seed: int, batch: int, numerical: bool = False,
                twin=twin) -> LayerReport:
            layer = twin.example(np.random.default_rng(1000 + seed), np.dtype(dtype))
            return check_layer(layer, dtype=dtype, seed=seed, batch=batch, name=twin.name,
                               numerical=numerical)

        yield Case(twin.name, run, "layer", numerical=True)


def _two_layer_net(dtype: np.dtype, seed: int, batch: int) -> LayerReport:
    from scratch import TwoLayerNet

    net = TwoLayerNet(24, 9, 10, weight_init_std=0.5, seed=seed)
    return check_net(net, dtype=dtype, seed=seed, input_shape=(batch, 24))


def net_cases() -> Iterator[Case]:
    yield Case("TwoLayerNet", _two_layer_net, "net")


def _load_plugins() -> None:
    """Modules that add their own cases when imported (optimizers, extra nets)."""
    import importlib

    for mod in ("reference.optimizers", "reference.nets", "harness.suite_extra"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise


def all_cases() -> list[Case]:
    """Every case; each runs with NumPy and PyTorch on one thread (:func:`one_thread`)."""
    _load_plugins()
    return [Case(c.name, one_thread(c.run), c.group, c.numerical)
            for c in (*layer_cases(), *net_cases(), *_EXTRA)]
