"""The three-way gradient check: numerical (central differences, float64) vs scratch backprop
vs torch autograd, per tensor, with the figures the classic ``gradient_check`` prints."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from harness.compare import NUMERICAL_TOLERANCE, VACUOUS, TensorResult, Tolerance, compare
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


SAME_POINT_CALLS = 3
"""Forwards at one point that must agree for central differences to mean anything."""


def _scratch_random(probe: Any, f: Any, what: str) -> str:
    """Why central differences of the scratch forward say nothing ("" if they do): ``f(probe)``
    (the scalar ``sum(forward(x) * dout)`` or the loss) differs between calls at one point (a
    fresh random mask at every call)."""
    try:
        values = [f(probe) for _ in range(SAME_POINT_CALLS)]
    except Exception:  # reported by the numerical gradient itself
        return ""
    if all(_same(v, values[0]) for v in values):
        return ""
    return (f"the scratch forward is not deterministic: {SAME_POINT_CALLS} forwards at the same "
            f"point gave {what} = {', '.join(f'{v:.9g}' for v in values)}; central "
            "differences of a random function say nothing (a fresh random mask at every call? "
            "draw it from a fixed seed, or let the twin's prepare hook inject one)")


def _torch_random(module: torch.nn.Module, x: np.ndarray, t: Any, is_loss: bool) -> str:
    """Why torch autograd cannot be compared with the scratch layer's central differences
    ("" if it can): the twin's forward differs between calls on one input (a stock
    ``nn.Dropout`` in training draws a new mask at every call)."""
    from harness.check import to_torch, torch_input

    try:
        with torch.no_grad():
            xt = torch_input(x, torch.float64, requires_grad=False)
            outs = [module(xt, to_torch(np.asarray(t))) if is_loss else module(xt)
                    for _ in range(SAME_POINT_CALLS)]
        if all(torch.equal(o, outs[0]) for o in outs):
            return ""
    except Exception:  # reported where the twin runs for its gradients
        return ""
    return ("the torch twin's forward is not deterministic: it gave different outputs in "
            f"{SAME_POINT_CALLS} calls on the same input (a stock nn.Dropout in training draws a "
            "new mask at every call), so its gradient is not that of the function the central "
            "differences measure; inject one mask into both sides (the twin's prepare hook)")


def _inline_eps_bound(work: Any, twin: Twin, x: np.ndarray, t: Any, kwargs: dict) -> float:
    """For a softmax cross-entropy whose classic ``-log(p + 1e-7)`` is written into the forward
    (the book's ``cross_entropy_error``; the twin's ``exact`` hook, which sets ``eps = 0``,
    cannot reach it): the relative gap ``eps / min p`` between the derivative of that forward
    and the exact backward ``(softmax - onehot) / N``. 0 where the forward is exact."""
    if twin.kind != "loss" or twin.exact is None or t is None or np.ndim(x) != 2:
        return 0.0
    from scratch.functions import CLASSIC_LOG_EPS

    try:
        z = x - x.max(axis=1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        labels = np.asarray(t)
        labels = labels.argmax(axis=1) if labels.ndim == 2 else labels.astype(int)
        p_t = p[np.arange(x.shape[0]), labels]
        exact = float(-np.log(p_t).mean())
        got = _scalar(copy.deepcopy(work), twin, x, t, None, kwargs)
    except Exception:  # not a softmax cross-entropy this can read: no allowance
        return 0.0
    if abs(got - exact) <= 1e-12 * max(1.0, abs(exact)):
        return 0.0
    return float(CLASSIC_LOG_EPS / max(p_t.min(), 1e-300))


def _same(a: float, b: float) -> bool:
    return a == b or abs(a - b) <= 1e-13 * max(abs(a), abs(b))


def _vacuous(name: str, tensor: str, arr: Any, why: str) -> TensorResult:
    return TensorResult(layer=name, tensor=tensor, status=VACUOUS, dtype="float64",
                        shape=tuple(np.shape(arr)), total=int(np.size(arr)), message=why)


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
        cast_targets,
        copy_layer,
        is_index,
        load_weights,
        run_pair,
        to_torch,
        torch_input,
    )

    f64 = np.dtype(np.float64)
    work = copy_layer(layer, f64, twin.buffer_map, name)
    if twin.exact is not None:  # e.g. the classic loss's 1e-7: backward differentiates without it
        work = twin.exact(work)
    index = is_index(x)
    x64 = np.array(x) if index else np.array(x, dtype=np.float64)
    d64 = None if dout is None else np.asarray(dout, dtype=np.float64)
    kwargs = {}
    from harness.check import accepts

    if accepts(work.forward, "train_flg"):
        kwargs["train_flg"] = train
    # analytic: scratch backprop and torch autograd at float64
    mod = copy.deepcopy(twin.torch_factory(work)).to(TORCH_DTYPE[f64])
    load_weights(work, mod, twin, name)
    if twin.prepare is not None:  # e.g. freeze one dropout mask for every evaluation: the one
        # run_pair below injects again (same rng), so backprop and the differences share it
        twin.prepare(work, mod, x64, np.random.default_rng(0))
    base = copy_layer(work, None, twin.buffer_map, name)
    analytic_results, arrays = run_pair(base, mod, twin, x64, dtype=f64,
                                        rng=np.random.default_rng(0), name=name, t=t, dout=d64,
                                        train=train)
    errors = [r for r in analytic_results if r.status == ERROR]
    if errors or "dx_torch" not in arrays:  # the layer raised: no gradient to compare
        return errors
    t = cast_targets(arrays.get("t"), f64)
    torch_grads = {"x": None}
    # torch gradients again, cleanly, for the three-way table
    mod2 = copy.deepcopy(twin.torch_factory(work)).to(TORCH_DTYPE[f64])
    load_weights(work, mod2, twin, name)
    mod2.train(train)
    mod_probe = copy.deepcopy(mod2)  # for the determinism check, before any forward
    xt = torch_input(x64, torch.float64)
    out = mod2(xt, to_torch(np.asarray(t))) if twin.kind == "loss" else mod2(xt)
    if out.requires_grad:  # not so for a parameter-free layer of indices (one-hot)
        out.backward() if twin.kind == "loss" else out.backward(to_torch(arrays["dout"]))
    torch_grads["x"] = None if index else xt.grad.numpy()
    tp = dict(mod2.named_parameters())
    for k, spec in twin.weight_map.items():
        g = tp[spec.torch_name].grad
        torch_grads[k] = spec.from_torch(g.numpy()) if g is not None else None

    d = arrays.get("dout")
    random_why = {
        "backprop": _scratch_random(copy_layer(work, None, twin.buffer_map, name),
                                    lambda p: _scalar(p, twin, x64, t, d, kwargs),
                                    "the loss" if twin.kind == "loss" else "sum(out * dout)"),
        "torch": _torch_random(mod_probe, x64, t, twin.kind == "loss")}
    if random_why["backprop"]:  # the numerical gradient itself is meaningless
        random_why["torch"] = random_why["backprop"]
    results: list[TensorResult] = []
    inline = _inline_eps_bound(work, twin, x64, t, kwargs)
    if inline:  # the classic -log(p + 1e-7) written into the forward: its exact hook cannot
        # remove it, and its derivative differs from the exact backward by up to eps/p
        tol = Tolerance(max(tol.rtol, 2 * inline), tol.atol, scaled=tol.scaled)
    targets = ([] if index else [("x", x64, arrays.get("dx"))]) + [
        (k, work.params[k], (getattr(base, "grads", None) or {}).get(k)) for k in twin.weight_map]
    for key, arr, analytic in targets:
        probe = copy_layer(work, None, twin.buffer_map, name)  # views of params stay views
        tensor = f"d{key}"
        if random_why["backprop"]:
            results.extend(_vacuous(name, f"{tensor} {side} vs numerical", arr, random_why[side])
                           for side in ("backprop", "torch"))
            continue
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
            if random_why[side]:
                results.append(_vacuous(name, f"{tensor} {side} vs numerical", arr, random_why[side]))
                continue
            r = compare(value, num, tensor=f"{tensor} {side} vs numerical", layer=name, tol=tol,
                        dtype=f64, sides=(side, "numerical"))
            if inline:
                r.tolerance_text += (f" (rtol widened to 2 x eps/min p = {2 * inline:.1e}: the "
                                     f"forward adds the classic 1e-7 inside its log, which the "
                                     f"exact backward leaves out)")
            if side == "torch" and r.status == "FAIL" and not random_why["backprop"]:
                # the differences are of the scratch forward: torch differs from them when the
                # two forwards differ, whatever its own backward does
                r.message = (f"{r.message} The numerical gradient is of the scratch forward: "
                             f"torch's autograd differs from it where the forwards differ (see "
                             f"the out row); backprop vs numerical says whether the scratch "
                             f"backward matches its own forward.").strip()
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
