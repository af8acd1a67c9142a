"""The three-way gradient check: numerical (central differences, float64) vs scratch backprop
vs torch autograd, per tensor, with the figures the classic ``gradient_check`` prints."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from harness.compare import NUMERICAL_TOLERANCE, TensorResult, Tolerance, compare
from reference.registry import Twin
from scratch.gradient import numerical_gradient

H = 1e-5
"""Central-difference step. In float64 the truncation error is ~h^2 = 1e-10 and rounding
~eps/h = 1e-11, both far below the 1e-5 relative tolerance; inputs are kept >= 0.05 away
from kinks (ReLU at 0) so no difference straddles one."""


def _scalar(work: Any, twin: Twin, x: np.ndarray, t: Any, dout: Any, kwargs: dict) -> float:
    if twin.kind == "loss":
        return float(work.forward(x, t, **kwargs))
    return float(np.sum(np.asarray(work.forward(x, **kwargs), dtype=np.float64) * dout))


def numerical_results(
    layer: Any,
    twin: Twin,
    x: np.ndarray,
    *,
    name: str,
    t: Any = None,
    dout: np.ndarray | None = None,
    train: bool = True,
    tol: Tolerance = NUMERICAL_TOLERANCE,
    h: float = H,
) -> list[TensorResult]:
    """Numerical gradients of ``sum(forward(x) * dout)`` (or of the loss) in float64, compared
    with scratch backprop and with torch autograd (both in float64).

    If the scratch layer raises (in its analytic run or while the differences are taken),
    the result is that ERROR, as :func:`~harness.check.check_layer` reports it: there is no
    gradient to compare.

    Integer ``x`` (indices, an Embedding's) is used as it is and never perturbed: the
    numerical gradients are those of the float parameters only (indices have no gradient)."""
    from harness.check import (
        ERROR,
        TORCH_DTYPE,
        _error,
        copy_layer,
        is_index,
        load_weights,
        run_pair,
        torch_input,
    )

    f64 = np.dtype(np.float64)
    work = copy_layer(layer, f64, twin.buffer_map)
    if twin.exact is not None:  # e.g. the classic loss's 1e-7: backward differentiates without it
        work = twin.exact(work)
    index = is_index(x)
    x64 = np.array(x) if index else np.array(x, dtype=np.float64)
    d64 = None if dout is None else np.asarray(dout, dtype=np.float64)
    kwargs = {}
    from harness.check import accepts

    if accepts(work.forward, "train_flg"):
        kwargs["train_flg"] = train
    if twin.prepare is not None:  # e.g. freeze one dropout mask for every evaluation
        twin.prepare(work, None, x64, np.random.default_rng(0))
    # analytic: scratch backprop and torch autograd at float64
    mod = copy.deepcopy(twin.torch_factory(work)).to(TORCH_DTYPE[f64])
    load_weights(work, mod, twin, name)
    base = copy.deepcopy(work)
    analytic_results, arrays = run_pair(base, mod, twin, x64, dtype=f64,
                                        rng=np.random.default_rng(0), name=name, t=t, dout=d64,
                                        train=train)
    errors = [r for r in analytic_results if r.status == ERROR]
    if errors or "dx_torch" not in arrays:  # the layer raised: no gradient to compare
        return errors
    t = arrays.get("t")
    torch_grads = {"x": None}
    # torch gradients again, cleanly, for the three-way table
    mod2 = copy.deepcopy(twin.torch_factory(work)).to(TORCH_DTYPE[f64])
    load_weights(work, mod2, twin, name)
    mod2.train(train)
    xt = torch_input(x64, torch.float64)
    out = mod2(xt, torch.from_numpy(np.asarray(t))) if twin.kind == "loss" else mod2(xt)
    if out.requires_grad:  # not so for a parameter-free layer of indices (one-hot)
        out.backward() if twin.kind == "loss" else out.backward(torch.from_numpy(arrays["dout"]))
    torch_grads["x"] = None if index else xt.grad.numpy()
    tp = dict(mod2.named_parameters())
    for k, spec in twin.weight_map.items():
        g = tp[spec.torch_name].grad
        torch_grads[k] = spec.from_torch(g.numpy()) if g is not None else None

    d = arrays.get("dout")
    results: list[TensorResult] = []
    targets = ([] if index else [("x", x64, arrays.get("dx"))]) + [
        (k, work.params[k], base.grads.get(k)) for k in twin.weight_map]
    for key, arr, analytic in targets:
        probe = copy.deepcopy(work)
        tensor = f"d{key}"
        try:
            if key == "x":
                num = numerical_gradient(lambda v, p=probe: _scalar(p, twin, v, t, d, kwargs),
                                         arr.copy(), h)
            else:
                num = numerical_gradient(lambda _v, p=probe: _scalar(p, twin, x64, t, d, kwargs),
                                         probe.params[key], h)
        except Exception as exc:  # the scratch forward raised on a perturbed input
            results.append(_error(name, f"{tensor} numerical", exc, f64))
            continue
        for side, value in (("backprop", analytic), ("torch", torch_grads.get(key))):
            r = compare(value, num, tensor=f"{tensor} {side} vs numerical", layer=name, tol=tol,
                        dtype=f64)
            if value is not None and np.shape(value) == num.shape:
                diff = np.abs(np.asarray(value, dtype=np.float64) - num)
                denom = np.maximum(np.abs(value) + np.abs(num), 1e-300)
                r.extra.update(mean_abs=float(diff.mean()), max_abs=float(diff.max()),
                               rel_error=float(np.max(2 * diff / denom)))
            results.append(r)
    return results


def gradient_check(layer: Any, module: torch.nn.Module | None = None, **kwargs: Any) -> Any:
    """``check_layer(layer, module, numerical=True, dtype=float64, ...)``: the three-way check.
    A layer that raises gives the same ERROR result as ``check_layer``."""
    from harness.check import check_layer

    kwargs.setdefault("dtype", np.float64)
    return check_layer(layer, module, numerical=True, **kwargs)
