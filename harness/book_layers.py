"""Layers written the book's way: parameters as attributes, not a ``params`` dict.

"Deep Learning from Scratch" keeps an Affine's weights in ``self.W``, ``self.b`` and its
gradients in ``self.dW``, ``self.db`` (BatchNormalization: ``gamma``/``dgamma``...), where the
harness reads ``layer.params`` and ``layer.grads``. :func:`with_param_dicts` gives such a layer
the two dicts, backed by those attributes (reading and writing them), as an instance of a
subclass made on the fly that shares the layer's attributes: the twin, the weight transfer and
every comparison then work unchanged.

A class of the user's own that is named like a built-in layer (``Affine``, ``Relu``,
``SoftmaxWithLoss``, ``Convolution``, ...) and is neither registered nor a subclass of one is
checked against that built-in's twin (:func:`twin_by_name`), with a note saying so.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

import numpy as np

from reference.registry import Twin, registered

GRAD_PREFIX = "d"
"""The book names a parameter's gradient ``d<name>``: ``dW``, ``db``, ``dgamma``."""


class AttributeDict(MutableMapping):
    """``{name: getattr(layer, prefix + name)}`` for ``names``, writing through to the
    attributes; a gradient attribute that is still None (before backward) is absent."""

    def __init__(self, layer: Any, names: tuple[str, ...], prefix: str = "") -> None:
        self._layer, self._names, self._prefix = layer, names, prefix

    def __getitem__(self, key: str) -> Any:
        value = getattr(self._layer, self._prefix + key, None) if key in self._names else None
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        setattr(self._layer, self._prefix + key, value)

    def __delitem__(self, key: str) -> None:
        setattr(self._layer, self._prefix + key, None)

    def __iter__(self) -> Iterator[str]:
        return (k for k in self._names if getattr(self._layer, self._prefix + k, None) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


_SUBCLASSES: dict[tuple[type, tuple[str, ...]], type] = {}


def _subclass(cls: type, names: tuple[str, ...]) -> type:
    key = (cls, names)
    if key not in _SUBCLASSES:
        _SUBCLASSES[key] = type(cls.__name__, (cls,), {
            "__module__": cls.__module__, "__qualname__": cls.__qualname__,
            "__doc__": cls.__doc__, "_book_param_names": names,
            "params": property(lambda self: AttributeDict(self, names)),
            "grads": property(lambda self: AttributeDict(self, names, GRAD_PREFIX)),
        })
    return _SUBCLASSES[key]


def param_attributes(layer: Any, twin: Twin) -> tuple[str, ...] | None:
    """The twin's parameter names when ``layer`` keeps them as array attributes and has no
    ``params`` dict of its own; None otherwise (nothing to adapt)."""
    names = tuple(twin.weight_map)
    own = getattr(layer, "params", None)
    if (not names or not all(isinstance(k, str) for k in names)
            or (isinstance(own, (dict, MutableMapping)) and len(own))):
        return None  # an empty params dict (inherited from a base Layer) is no layout of its own
    if getattr(type(layer), "_book_param_names", None) is not None:
        return None  # already adapted
    if all(isinstance(getattr(layer, k, None), np.ndarray) for k in names):
        return names
    return None


def with_param_dicts(layer: Any, twin: Twin) -> tuple[Any, str | None]:
    """``layer`` with ``params``/``grads`` dicts over its attributes (``W``/``dW``, ...) if it
    keeps its parameters the book's way, else ``layer`` itself; and a note saying so."""
    names = param_attributes(layer, twin)
    if names is None:
        return layer, None
    adapted = object.__new__(_subclass(type(layer), names))
    adapted.__dict__.update(vars(layer))  # the same arrays: the copy is made by the check
    grads = ", ".join(GRAD_PREFIX + k for k in names)
    return adapted, (f"parameters read from the attributes {', '.join(names)} and gradients "
                     f"from {grads} (no params/grads dicts: the book's layout)")


BY_NAME = ("Affine", "Relu", "Sigmoid", "Tanh", "SoftmaxWithLoss", "Convolution", "Pooling")
"""The built-in layers a class of the user's own is matched to by its name: those whose twin
needs nothing of the scratch class but the book's attributes. Not Dropout (its twin injects
one mask through the scratch layer's own hook) nor BatchNormalization (its twin reads the
scratch layer's convention switches): subclass those, or register yours."""


def twin_by_name(cls: type) -> Twin | None:
    """The twin of the built-in layer named like ``cls`` or one of its base classes
    (:data:`BY_NAME`), for a class of the user's own that is neither registered nor a subclass
    of a registered one."""
    named = next((c.__name__ for c in cls.__mro__ if c.__name__ in BY_NAME), None)
    if named is None:  # its own name or a base class's (class MyAffine(Affine) of the book's)
        return None
    for builtin, twin in registered().items():
        if (builtin.__name__ == named and builtin not in cls.__mro__
                and builtin.__module__.split(".")[0] == "scratch"):
            return twin
    return None
