"""PyTorch twins of the scratch layers, nets and optimizers, and weight transfer both ways."""

from reference.registry import (
    Twin,
    WeightSpec,
    identity,
    index_input,
    lookup,
    register,
    registered,
    transpose,
)

__all__ = [
    "Twin",
    "WeightSpec",
    "identity",
    "index_input",
    "lookup",
    "register",
    "register_optimizer",
    "registered",
    "transpose",
]


def __getattr__(name: str) -> object:
    # reference.optimizers imports the layer twins and the harness: loaded on first use
    if name == "register_optimizer":
        from reference.optimizers import register_optimizer

        return register_optimizer
    raise AttributeError(f"module 'reference' has no attribute {name!r}")
