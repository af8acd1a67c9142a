"""Element-wise comparison of two arrays with a report as useful as ``assert_close``'s.

``compare(actual, expected, ...)`` never raises for a numerical difference: it returns a
:class:`TensorResult` whose ``status`` is PASS, FAIL or VACUOUS and whose ``str()`` says where
and by how much the two differ, against which tolerance, for which layer and tensor.

Tolerance: element ``i`` passes when ``|a_i - e_i| <= atol_eff + rtol * |e_i|`` with
``atol_eff = atol * max|e|`` (``scaled=True``, the default) or ``atol`` (``scaled=False``).
Rounding error of a sum of products grows with the magnitude of the terms, not of the result,
so an element that cancels to near zero is judged against the tensor's scale, not its own.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

PASS, FAIL, VACUOUS, ERROR = "PASS", "FAIL", "VACUOUS", "ERROR"


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float
    scaled: bool = True

    def atol_for(self, expected: np.ndarray) -> float:
        if not self.scaled:
            return self.atol
        finite = np.abs(expected[np.isfinite(expected)]) if expected.size else expected
        scale = float(finite.max()) if finite.size else 0.0
        return self.atol * scale

    def describe(self, expected: np.ndarray | None = None) -> str:
        if not self.scaled:
            return f"rtol={self.rtol:.1e}, atol={self.atol:.1e}"
        s = f"rtol={self.rtol:.1e}, atol={self.atol:.1e} x max|expected|"
        if expected is not None:
            s += f" (= {self.atol_for(expected):.2e})"
        return s


# Chosen from measured false-alarm runs (docs/tolerances.md): the largest difference seen
# between correct scratch code and torch over thousands of seeds and shapes, times a margin.
DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "float64": Tolerance(rtol=1e-9, atol=1e-10),
    "float32": Tolerance(rtol=1e-4, atol=1e-5),
}
# Numerical (central-difference, float64) gradients carry O(h^2) truncation error.
NUMERICAL_TOLERANCE = Tolerance(rtol=1e-5, atol=1e-6)


def default_tolerance(dtype: Any) -> Tolerance:
    name = np.dtype(dtype).name
    if name not in DEFAULT_TOLERANCES:
        raise TypeError(f"no default tolerance for dtype {name}; use float32 or float64")
    return DEFAULT_TOLERANCES[name]


def _index(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(flat, shape)) if shape else ()


@dataclass
class TensorResult:
    layer: str
    tensor: str
    status: str
    dtype: str = ""
    shape: tuple[int, ...] = ()
    max_abs: float = 0.0
    max_abs_index: tuple[int, ...] | None = None
    max_rel: float = 0.0
    max_rel_index: tuple[int, ...] | None = None
    mismatched: int = 0
    total: int = 0
    rtol: float = 0.0
    atol: float = 0.0
    worst_index: tuple[int, ...] | None = None
    actual_at_worst: float | None = None
    expected_at_worst: float | None = None
    allowed_at_worst: float | None = None
    tolerance_text: str = ""
    message: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == PASS

    @property
    def name(self) -> str:
        return f"{self.layer}.{self.tensor}" if self.layer else self.tensor

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
            elif isinstance(v, float) and not np.isfinite(v):
                d[k] = str(v)
        return d

    def __str__(self) -> str:
        # an ERROR (the layer raised) compared no tensor: no shape to show, maybe no dtype
        where = [self.dtype] if self.dtype else []
        if self.total or self.shape or (self.dtype and self.status != ERROR):
            where.append(f"shape {self.shape}")
        head = f"{self.name} [{', '.join(where)}]: {self.status}" if where else \
            f"{self.name}: {self.status}"
        if self.status == PASS:
            tol = f"; {self.tolerance_text}" if self.tolerance_text else ""  # none: "unchanged" rows
            return f"{head} (max abs diff {self.max_abs:.3g}, max rel diff {self.max_rel:.3g}{tol})"
        lines = [head]
        if self.message:
            lines.append(f"  {self.message}")
        if self.total and self.status == FAIL and self.max_abs_index is not None:
            pct = 100.0 * self.mismatched / self.total
            lines.append(f"  Mismatched elements: {self.mismatched} / {self.total} ({pct:.1f}%)")
            lines.append(
                f"  Greatest absolute difference: {self.max_abs:.6g} at index {self.max_abs_index}"
            )
            lines.append(
                f"  Greatest relative difference: {self.max_rel:.6g} at index {self.max_rel_index}"
            )
            if self.worst_index is not None:
                # which sides were compared: scratch vs torch, unless extra names them (the
                # numerical rows: backprop or torch vs central differences)
                ours, ref = self.extra.get("actual", "scratch"), self.extra.get("expected", "torch")
                lines.append(
                    f"  Worst element vs tolerance: index {self.worst_index}: actual ({ours}) "
                    f"{self.actual_at_worst:.9g}, expected ({ref}) {self.expected_at_worst:.9g}, "
                    f"allowed |diff| <= {self.allowed_at_worst:.3g}"
                )
            lines.append(f"  Tolerance: {self.tolerance_text}")
        return "\n".join(lines)


def _as_array(x: Any) -> np.ndarray | None:
    if x is None:
        return None
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def is_python_scalar(x: Any) -> bool:
    """A Python ``float``/``int`` (e.g. a loss returned as ``float(...)``): it has no dtype, so
    only its value can be compared (``np.asarray`` would call it float64)."""
    return isinstance(x, (float, int)) and not isinstance(x, (bool, np.generic))


WHO_RETURNS = {"out": "forward", "loss": "forward", "dx": "backward"}
"""The method whose return value each compared tensor is."""


def compare(
    actual: Any,
    expected: Any,
    *,
    tensor: str,
    layer: str = "",
    tol: Tolerance | None = None,
    dtype: Any = None,
    check_dtype: bool = True,
    vacuous_check: bool = True,
    sides: tuple[str, str] = ("scratch", "torch"),
) -> TensorResult:
    """Compare ``actual`` (scratch) with ``expected`` (reference). Never raises for a mismatch.

    A Python ``float`` or ``int`` as ``actual`` has no dtype: its value is compared, its type
    is not (``float(loss)`` is a common way to return a loss). ``sides`` names what
    ``actual`` and ``expected`` are in the report (e.g. ``("torch", "numerical")``)."""
    e = _as_array(expected)
    if e is None:
        raise ValueError(f"{layer}.{tensor}: the reference value is None")
    want = np.dtype(dtype) if dtype is not None else (e.dtype if e.dtype.kind == "f" else None)
    tol = tol or default_tolerance(want or np.float64)
    res = TensorResult(layer=layer, tensor=tensor, status=FAIL, dtype=str(want or e.dtype),
                       shape=tuple(e.shape), total=int(e.size), rtol=tol.rtol, atol=tol.atol)
    res.tolerance_text = tol.describe(e.astype(np.float64) if e.dtype.kind in "fiu" else None)
    if tuple(sides) != ("scratch", "torch"):
        res.extra.update(actual=sides[0], expected=sides[1])
    if actual is None:
        res.message = f"{sides[0]} returned None" + (
            f" (a missing return in {WHO_RETURNS[tensor]}?)" if tensor in WHO_RETURNS
            and tuple(sides) == ("scratch", "torch") else "")
        return res
    ours, ref = sides
    if is_python_scalar(actual):
        check_dtype = False
    if isinstance(actual, (list, tuple)):  # the layer protocol returns arrays
        res.message = (f"{ours} returned a Python {type(actual).__name__}, not an ndarray "
                       f"(NumPy would make it float64 whatever its elements were)")
        return res
    try:
        a = _as_array(actual)
    except Exception as exc:  # an object numpy cannot convert
        res.message = (f"{ours} returned a {type(actual).__name__} that is not an array "
                       f"({type(exc).__name__}: {exc})")
        return res
    assert a is not None
    if a.shape != e.shape:
        other = ref if tuple(sides) != ("scratch", "torch") else "reference"
        res.message = f"shape mismatch: {ours} {a.shape} vs {other} {e.shape}"
        return res
    if a.dtype.kind not in "fiub":
        res.message = f"{ours} returned non-numeric dtype {a.dtype}"
        return res
    if check_dtype and want is not None and a.dtype != want:
        res.message = f"dtype mismatch: {ours} {a.dtype}, expected {want}"
        if a.dtype.kind == "f":  # say whether the math is right apart from the dtype
            values = compare(a.astype(want), e, tensor=tensor, layer=layer, tol=tol, dtype=want,
                             vacuous_check=False, sides=sides)
            res.message += (f" (cast to {want}, the values agree within its tolerance: only "
                            f"the dtype is wrong)" if values.status == PASS else
                            f" (the values differ as well: {values.mismatched} / {values.total} "
                            f"elements beyond the tolerance, greatest absolute difference "
                            f"{values.max_abs:.3g})" if values.mismatched else "")
        return res
    if e.size == 0:
        res.status = VACUOUS
        res.message = "empty tensor: nothing was compared"
        return res
    a64, e64 = a.astype(np.float64), e.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(a64 - e64)
    a_fin, e_fin = np.isfinite(a64), np.isfinite(e64)
    both_same_inf = (~a_fin) & (~e_fin) & (a64 == e64)  # +inf vs +inf is equal, NaN never is
    diff = np.where(both_same_inf, 0.0, diff)
    diff = np.where(np.isnan(diff), np.inf, diff)
    atol_eff = tol.atol_for(e64)
    allowed = atol_eff + tol.rtol * np.where(e_fin, np.abs(e64), 0.0)
    bad = diff > allowed
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(diff == 0, 0.0, diff / np.abs(e64))
    res.mismatched = int(bad.sum())
    i_abs, i_rel = int(np.argmax(diff)), int(np.argmax(rel))
    res.max_abs, res.max_abs_index = float(diff.flat[i_abs]), _index(i_abs, e.shape)
    res.max_rel, res.max_rel_index = float(rel.flat[i_rel]), _index(i_rel, e.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(diff == 0, 0.0, diff / np.where(allowed > 0, allowed, np.inf))
    ratio = np.where((diff > 0) & (allowed == 0), np.inf, ratio)
    i_w = int(np.argmax(ratio))
    res.worst_index = _index(i_w, e.shape)
    res.actual_at_worst, res.expected_at_worst = float(a64.flat[i_w]), float(e64.flat[i_w])
    res.allowed_at_worst = float(allowed.flat[i_w])
    res.extra["worst_ratio"] = float(ratio.flat[i_w])
    nonfinite = ~(a_fin & e_fin)
    if nonfinite.any():
        first = _index(int(np.argmax(nonfinite.reshape(-1))), e.shape)
        res.extra["nonfinite"] = int(nonfinite.sum())
        side = ours if not a_fin.flat[int(np.argmax(nonfinite.reshape(-1)))] else ref
        res.message = (f"{int(nonfinite.sum())} non-finite element(s) (NaN/Inf); first at index "
                       f"{first} on the {side} side")
    if res.mismatched:
        return res
    res.status = PASS
    if vacuous_check and e.size > 0:
        if not np.any(e64) and not np.any(a64):
            res.status, res.message = VACUOUS, "both sides are all zeros: the check proves nothing"
        elif e.size > 1 and np.all(e64 == e64.flat[0]) and np.all(a64 == a64.flat[0]):
            res.status = VACUOUS
            res.message = f"both sides are constant ({e64.flat[0]:.6g}): the check proves nothing"
    return res


def check_accuracy(fn: Any, x: np.ndarray, labels: np.ndarray, pred: np.ndarray, *, layer: str,
                   tensor: str = "accuracy()", extra: dict[str, Any] | None = None
                   ) -> TensorResult:
    """A net's own ``accuracy(x, t)`` (``fn``) against the argmax of its prediction ``pred``
    on the same rows: the same count of correct rows (a value computed in float32 may differ
    from the exact fraction in its last bits). It is called with integer ``labels`` and with
    the same labels as one-hot rows (the book's ``accuracy`` takes either; a user's data may
    be either): every form it accepts must count right. One that raises is not judged in that
    form (some take one form only); an ``accuracy`` that raises both ways, or wants other
    arguments, is VACUOUS (not compared), not a disagreement."""
    n = int(labels.shape[0])
    correct = int(np.count_nonzero(np.asarray(pred).argmax(axis=1) == labels))
    res = TensorResult(layer=layer, tensor=tensor, status=PASS, dtype="float64", total=1,
                       tolerance_text="the same count of correct rows", extra=dict(extra or {}))
    errors, answers = [], []
    one_hot = np.eye(np.asarray(pred).shape[1], dtype=np.float64)[labels]
    for form, t in (("integer labels", labels), ("one-hot rows", one_hot)):
        try:
            answers.append((form, float(fn(x, t))))
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
    if not answers:
        res.status = VACUOUS
        res.message = (f"accuracy(x, t) raised with integer labels ({errors[0]}) and with "
                       f"one-hot rows ({errors[1]}): not compared")
        return res
    want = correct / n
    wrong = [(form, got) for form, got in answers
             if not math.isfinite(got) or round(got * n) != correct]
    form, got = wrong[0] if wrong else max(answers, key=lambda a: abs(a[1] - want))
    res.max_abs = abs(got - want)
    res.max_rel = res.max_abs / want if want else (math.inf if res.max_abs else 0.0)
    if wrong:
        res.status, res.mismatched = FAIL, 1
        res.actual_at_worst, res.expected_at_worst = got, want
        hint = (" (a percentage? accuracy() should return a fraction of 1)"
                if math.isfinite(got) and round(got) == round(100 * want) and want else "")
        other = [f for f, _ in answers if f != form]
        also = (f"; with {other[0]} it counts right" if other and len(wrong) == 1 else "")
        res.message = (f"accuracy(x, t) on these {n} rows returns {got:.9g} given {form}, "
                       f"but the argmax of predict(x) is right on {correct} of them ({want:.9g})"
                       f"{hint}{also}")
    return res
    want = correct / n
    res.max_abs = abs(got - want)
    res.max_rel = res.max_abs / want if want else (math.inf if res.max_abs else 0.0)
    if not math.isfinite(got) or round(got * n) != correct:
        res.status, res.mismatched = FAIL, 1
        res.actual_at_worst, res.expected_at_worst = got, want
        hint = (" (a percentage? accuracy() should return a fraction of 1)"
                if math.isfinite(got) and round(got) == round(100 * want) and want else "")
        res.message = (f"accuracy(x, t) on these {n} rows returns {got:.9g}, but the argmax of "
                       f"predict(x) is right on {correct} of them ({want:.9g}){hint}")
    return res
