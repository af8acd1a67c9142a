"""The built-in check suite that ``nn-parity check`` runs: every registered layer, the nets,
and any extra cases (optimizers, user modules) added with :func:`add_case`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from harness.check import check_layer, check_net, one_thread
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
    yield Case("Affine (4-D input)", _affine_4d, "layer", numerical=True)


def _affine_4d(dtype: np.dtype, seed: int, batch: int, numerical: bool = False) -> LayerReport:
    from reference.layers import affine_example

    layer = affine_example(np.random.default_rng(1000 + seed), np.dtype(dtype), n_in=2 * 3 * 2)
    return check_layer(layer, dtype=dtype, seed=seed, input_shape=(batch, 2, 3, 2),
                       name="Affine (4-D input)", numerical=numerical)


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
