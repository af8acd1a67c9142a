"""PyTorch twins of the scratch layers, nets and optimizers, and weight transfer both ways."""

from reference.registry import Twin, WeightSpec, identity, lookup, register, registered, transpose

__all__ = ["Twin", "WeightSpec", "identity", "lookup", "register", "registered", "transpose"]
