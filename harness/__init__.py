"""Compare scratch NumPy layers with their PyTorch twins and report every difference."""

from harness.check import CheckError, check_layer, check_net
from harness.compare import DEFAULT_TOLERANCES, TensorResult, Tolerance, compare
from harness.gradcheck import gradient_check
from harness.report import LayerReport, RunReport

__all__ = [
    "DEFAULT_TOLERANCES",
    "CheckError",
    "LayerReport",
    "RunReport",
    "TensorResult",
    "Tolerance",
    "check_layer",
    "check_net",
    "compare",
    "gradient_check",
]
