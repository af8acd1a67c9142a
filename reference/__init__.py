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

__all__ = ["Twin", "WeightSpec", "identity", "index_input", "lookup", "register", "registered",
           "transpose"]
