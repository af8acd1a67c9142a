"""The measured false-alarm rate: every correct component over many random seeds and shapes.

``run_false_alarms(n)`` checks each correct component ``n`` times per dtype, each time with a
fresh random shape (batch 1 to 64, fan-in up to 300, odd sizes included) and input magnitude,
and counts the verdicts. On correct code every check must PASS: a FAIL is a false alarm (the
tolerance is too tight), a VACUOUS means the generated input left a code path unexercised.
It also records the largest difference seen per component and dtype, and the margin to the
tolerance (``1 / worst ratio``, where ratio = |diff| / allowed at the worst element).

``python -m harness.false_alarms --scaling`` prints how the scratch-vs-torch rounding
difference grows with fan-in and with magnitude (docs/tolerances.md explains the numbers).
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from harness.compare import ERROR, FAIL, PASS, VACUOUS, TensorResult, default_tolerance
from harness.report import LayerReport

DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
Case = Callable[[np.dtype, int], LayerReport]


# ---------------------------------------------------------------------------------------
# Random cases: shapes, magnitudes and inputs that exercise every code path


def both_signs(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``x`` with at least one negative and one positive element (both sides of a kink)."""
    flat = x.reshape(-1)
    if flat.size >= 2 and (np.all(flat > 0) or np.all(flat < 0)):
        flat[rng.integers(flat.size)] *= -1
    return x


def away(shape: tuple[int, ...], dtype: np.dtype, rng: np.random.Generator, scale: float = 1.0,
         margin: float = 0.05) -> np.ndarray:
    z = rng.standard_normal(shape)
    return both_signs((scale * np.sign(z) * (margin + np.abs(z))).astype(dtype), rng)


def size(rng: np.random.Generator, lo: int, hi: int) -> int:
    """A log-uniform integer in [lo, hi]: mostly small (fast), the largest sizes still drawn."""
    return int(np.exp(rng.uniform(np.log(lo), np.log(hi + 1))))


def magnitude(rng: np.random.Generator, lo: float = -1.0, hi: float = 1.0) -> float:
    return float(10 ** rng.uniform(lo, hi))


def _affine(dtype: np.dtype, seed: int) -> LayerReport:
    from harness.check import check_layer
    from reference.layers import affine_example

    r = np.random.default_rng(seed)
    n_in, n_out, batch = size(r, 1, 300), size(r, 1, 64), size(r, 1, 64)
    layer = affine_example(r, dtype, n_in, n_out)
    shape = (batch, n_in) if n_in % 2 or r.random() < 0.5 else (batch, 2, n_in // 2)
    x = magnitude(r) * r.standard_normal(shape)
    return check_layer(layer, dtype=dtype, seed=seed, x=x)


def _elementwise(cls_name: str, hi: float) -> Case:
    def case(dtype: np.dtype, seed: int) -> LayerReport:
        import scratch
        from harness.check import check_layer

        r = np.random.default_rng(seed)
        shape = (size(r, 1, 64), size(r, 2, 300))
        x = away(shape, dtype, r, magnitude(r, -1, hi))
        return check_layer(getattr(scratch, cls_name)(), dtype=dtype, seed=seed, x=x)
    return case


def _softmax_loss(dtype: np.dtype, seed: int) -> LayerReport:
    import scratch
    from harness.check import check_layer

    r = np.random.default_rng(seed)
    batch, classes = size(r, 1, 64), size(r, 2, 100)
    x = magnitude(r, -1, 1.3) * r.standard_normal((batch, classes))
    t = r.integers(0, classes, batch)
    layer = scratch.SoftmaxWithLoss(eps=0.0 if r.random() < 0.3 else 1e-7)
    return check_layer(layer, dtype=dtype, seed=seed, x=x, t=t)


def _mse(dtype: np.dtype, seed: int) -> LayerReport:
    import scratch
    from harness.check import check_layer

    r = np.random.default_rng(seed)
    shape = (size(r, 1, 64), size(r, 1, 50))
    m = magnitude(r)
    x, t = m * r.standard_normal(shape), m * r.standard_normal(shape)
    layer = scratch.MeanSquaredError("mean" if r.random() < 0.5 else "classic")
    return check_layer(layer, dtype=dtype, seed=seed, x=x, t=t)


def covering_input(net: Any, r: np.random.Generator, shape: tuple[int, ...],
                   tries: int = 50) -> np.ndarray:
    """A standard normal input on which every ReLU of ``net`` sees both signs (redrawn until
    it does), so check_net exercises both sides of every kink."""
    import copy

    from scratch.layers import Relu

    layers = list(net.layers.values()) if isinstance(net.layers, dict) else list(net.layers)
    for _ in range(tries):
        x = r.standard_normal(shape)
        h, ok = x, True
        for layer in copy.deepcopy(layers):
            if isinstance(layer, Relu) and not ((h > 0).any() and (h < 0).any()):
                ok = False
                break
            h = layer.forward(h)
        if ok:
            break
    return x


def _two_layer_net(dtype: np.dtype, seed: int) -> LayerReport:
    import scratch
    from harness.check import check_net

    r = np.random.default_rng(seed)
    n_in, hidden, out = size(r, 2, 300), size(r, 16, 64), size(r, 2, 20)
    net = scratch.TwoLayerNet(n_in, hidden, out, weight_init_std=magnitude(r, -2, 0), seed=seed)
    return check_net(net, covering_input(net, r, (size(r, 1, 64), n_in)), dtype=dtype, seed=seed)


def _batchnorm(dtype: np.dtype, seed: int) -> LayerReport:
    from harness.check import check_layer
    from reference.extra_layers import bn_example, check_running_stats

    r = np.random.default_rng(seed)
    batch, mode = size(r, 3, 64), ("classic", "per_channel")[int(r.integers(2))]
    torch_like = r.random() < 0.3
    kw: dict[str, Any] = ({"eps": 1e-5, "running_var_init": 1.0, "unbiased_running_var": True}
                          if torch_like else {})
    if mode == "per_channel" or r.random() < 0.3:  # 4-D input
        c, h, w = size(r, 1, 8), size(r, 1, 5), size(r, 1, 5)
        features, shape = (c if mode == "per_channel" else c * h * w), (batch, c, h, w)
    else:
        features = size(r, 1, 64)
        shape = (batch, features)
    if r.random() < 0.15:  # several steps from each side's own initial running statistics
        # (stats=False: batchnorm_factory copies given statistics into float32 buffers before
        # the module is cast, so random float64 statistics lose precision there)
        layer = bn_example(r, dtype, features, mode, stats=False, **kw)
        return check_running_stats(layer, dtype=dtype, seed=seed, input_shape=shape,
                                   name="BatchNormalization")
    layer = bn_example(r, dtype, features, mode, **kw)
    x = magnitude(r) * r.standard_normal(shape) + r.standard_normal()
    return check_layer(layer, dtype=dtype, seed=seed, x=x, train=bool(r.random() < 0.8),
                       name="BatchNormalization")


def _dropout(dtype: np.dtype, seed: int) -> LayerReport:
    from torch import nn

    import scratch.normalization as sn
    from harness.check import check_layer

    r = np.random.default_rng(seed)
    # p in [0.3, 0.6] and >= 32 units: a mask that keeps all (the identity) or none (all
    # zeros) has probability < 1e-5, so every draw exercises both branches
    p, scale = float(r.uniform(0.3, 0.6)), ("classic", "inverted")[int(r.integers(2))]
    batch = size(r, 1, 64)
    shape = (batch, max(size(r, 4, 300), -(-32 // batch)))
    stock = scale == "inverted" and r.random() < 0.5
    module = nn.Dropout(p) if stock else None
    return check_layer(sn.Dropout(p, scale), module, dtype=dtype, seed=seed,
                       x=magnitude(r) * r.standard_normal(shape), train=bool(r.random() < 0.7),
                       name="Dropout")


def _convolution(dtype: np.dtype, seed: int) -> LayerReport:
    from harness.check import check_layer
    from reference.extra_layers import conv_example

    r = np.random.default_rng(seed)
    c, fn, fh, fw = size(r, 1, 8), size(r, 1, 12), size(r, 1, 5), size(r, 1, 5)
    # pad < kernel and stride <= kernel: every window overlaps the real input, so every input
    # element is seen (a window over padding alone would leave dx all zeros: vacuous)
    pad = int(r.integers(0, min(fh, fw, 3)))
    stride = size(r, 1, min(fh, fw, 3))
    h, w = fh + size(r, 1, 11) - 1, fw + size(r, 1, 11) - 1
    layer = conv_example(r, dtype, fn, c, fh, fw, stride, pad)
    x = magnitude(r) * r.standard_normal((size(r, 1, 16), c, h, w))
    return check_layer(layer, dtype=dtype, seed=seed, x=x, name="Convolution")


def _pooling(dtype: np.dtype, seed: int) -> LayerReport:
    from harness.check import check_layer
    from reference.extra_layers import distinct_values
    from scratch.convolution import Pooling

    r = np.random.default_rng(seed)
    ph, pw = size(r, 1, 4), size(r, 1, 4)
    if ph * pw == 1:
        pw = 2  # a 1x1 window is the identity
    pad = int(r.integers(0, min(ph, pw) // 2 + 1))
    stride = size(r, 1, min(ph, pw) - (1 if pad else 0))  # no window holding one real value
    shape = (size(r, 1, 16), size(r, 1, 6), ph + size(r, 1, 10) - 1, pw + size(r, 1, 10) - 1)
    layer = Pooling(ph, pw, stride, pad)
    for _ in range(20):  # not every window may hold the global maximum (a constant output)
        x = magnitude(r) * distinct_values(None, shape, dtype, r)
        out = layer.forward(x)
        if out.size == 1 or not np.all(out == out.flat[0]):
            break
    return check_layer(Pooling(ph, pw, stride, pad), dtype=dtype, seed=seed, x=x, name="Pooling")


def _flatten(dtype: np.dtype, seed: int) -> LayerReport:
    from harness.check import check_layer
    from scratch.convolution import Flatten

    r = np.random.default_rng(seed)
    shape = (size(r, 1, 64), *(size(r, 1, 8) for _ in range(int(r.integers(2, 4)))))
    return check_layer(Flatten(), dtype=dtype, seed=seed, x=r.standard_normal(shape),
                       name="Flatten")


def _multi_layer_net(dtype: np.dtype, seed: int) -> LayerReport:
    from harness.check import check_net
    from scratch.multi_layer_net import MultiLayerNet

    r = np.random.default_rng(seed)
    n_in, out = size(r, 2, 100), size(r, 2, 10)
    hidden = [size(r, 16, 40) for _ in range(int(r.integers(1, 3)))]
    act = ("relu", "sigmoid", "tanh")[int(r.integers(3))]
    net = MultiLayerNet(n_in, hidden, out, act, weight_init_std="he" if act == "relu" else "xavier",
                        weight_decay_lambda=float(r.choice([0.0, 0.1])),
                        use_batchnorm=bool(r.random() < 0.5), use_dropout=bool(r.random() < 0.3),
                        dropout_ratio=0.3, seed=seed)
    batch = size(r, 3, 32)
    return check_net(net, covering_input(net, r, (batch, n_in)), dtype=dtype, seed=seed)


def _simple_convnet(dtype: np.dtype, seed: int) -> LayerReport:
    from harness.check import check_net
    from scratch.simple_convnet import SimpleConvNet

    r = np.random.default_rng(seed)
    c, fs = size(r, 1, 3), size(r, 2, 4)
    h, w = fs + size(r, 1, 7), fs + size(r, 1, 7)
    net = SimpleConvNet((c, h, w), {"filter_num": size(r, 2, 8), "filter_size": fs},
                        hidden_size=size(r, 16, 32), output_size=size(r, 2, 10),
                        weight_init_std="he", seed=seed)
    return check_net(net, covering_input(net, r, (size(r, 1, 8), c, h, w)), dtype=dtype,
                     seed=seed)


def _optimizer(cls_name: str) -> Case:
    """Random hyper-parameters, forms, shapes, step counts, gradient scales and (where both
    sides agree on its meaning) a learning-rate change mid-run."""
    def case(dtype: np.dtype, seed: int) -> LayerReport:
        import scratch.optimizers as so
        from reference.optimizers import check_optimizer

        r = np.random.default_rng(seed)
        adaptive = cls_name in ("AdaGrad", "RMSprop", "Adam")  # steps ~lr whatever the grads
        lr, m = magnitude(r, -2.5 if adaptive else -2, -0.5), float(r.uniform(0.5, 0.95))
        form = ""
        if cls_name == "Momentum":
            form = ("classic", "torch")[int(r.integers(2))]
            opt = so.Momentum(lr, m, form=form)
        elif cls_name == "Nesterov":
            form = ("bengio", "torch")[int(r.integers(2))]
            opt = so.Nesterov(lr, m, form=form)
        elif cls_name == "RMSprop":
            opt = so.RMSprop(lr, decay_rate=float(r.uniform(0.8, 0.999)))
        elif cls_name == "Adam":
            opt = so.Adam(lr, beta1=float(r.uniform(0.8, 0.95)), beta2=float(r.uniform(0.99, 0.9999)))
        else:
            opt = getattr(so, cls_name)(lr)
        steps = size(r, 2, 12)
        # the classic Momentum and Bengio-form Nesterov fold lr into the velocity: with a lr
        # change the two sides are different optimizers (documented), not a false alarm
        schedule = ({int(r.integers(1, steps + 1)): lr / 3} if form not in ("classic", "bengio")
                    and r.random() < 0.3 else None)
        shapes = {"W1": (size(r, 1, 30), size(r, 1, 30)), "b1": (size(r, 1, 30),)}
        # Steps must stay above float32 resolution (a trajectory that never leaves its start
        # is VACUOUS: a no-op update would pass): SGD-like ones get lr * grad_scale >= 0.03;
        # adaptive ones step ~lr (>= 3e-3) whatever the grads, and also get grads ~1e-7 (where
        # eps matters) with lr >= 0.05
        grad_scale = (1e-7 if adaptive and r.random() < 0.2 else
                      magnitude(r, -3, 1) if adaptive else max(magnitude(r, -1, 1), 0.03 / lr))
        if grad_scale == 1e-7:  # eps then shrinks Adam's step to ~3% of lr: keep it visible
            opt.lr, steps = max(opt.lr, 0.05), max(steps, 5)  # over a few steps and elements
            shapes = {k: tuple(max(n, 2) for n in v) for k, v in shapes.items()}
            schedule = None
        return check_optimizer(opt, dtype=dtype, seed=seed, steps=steps, shapes=shapes,
                               lr_schedule=schedule, grad_scale=grad_scale, name=cls_name)
    return case


def _weight_decay(dtype: np.dtype, seed: int) -> LayerReport:
    from reference.optimizers import check_weight_decay
    from scratch.multi_layer_net import MultiLayerNet

    r = np.random.default_rng(seed)
    net = MultiLayerNet(size(r, 2, 30), [size(r, 4, 20) for _ in range(int(r.integers(1, 3)))],
                        size(r, 2, 10), weight_init_std="he",
                        weight_decay_lambda=magnitude(r, -3, 0), use_dropout=bool(r.random() < 0.3),
                        dropout_ratio=0.3, dtype=dtype, seed=seed)
    return check_weight_decay(net, seed=seed, batch=size(r, 3, 32), steps=size(r, 1, 3),
                              lr=magnitude(r, -2, -0.5), name="weight decay")


SPECIFIC: dict[str, Case] = {
    "Affine": _affine,
    "Relu": _elementwise("Relu", 1.0),
    "Sigmoid": _elementwise("Sigmoid", 0.7),
    "Tanh": _elementwise("Tanh", 0.5),
    "SoftmaxWithLoss": _softmax_loss,
    "MeanSquaredError": _mse,
    "TwoLayerNet": _two_layer_net,
    "BatchNormalization": _batchnorm,
    "Dropout": _dropout,
    "Convolution": _convolution,
    "Pooling": _pooling,
    "Flatten": _flatten,
    "MultiLayerNet": _multi_layer_net,
    "SimpleConvNet": _simple_convnet,
    **{name: _optimizer(name) for name in ("SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop",
                                           "Adam")},
    "MultiLayerNet weight decay": _weight_decay,
}
"""Components with a hand-written generator (random fan-in, width, classes, reduction...)."""


def _registered_case(twin: Any) -> Case:
    """Any other registered layer: its example, its default input, a random batch of 2..64."""
    def case(dtype: np.dtype, seed: int) -> LayerReport:
        from harness.check import check_layer

        r = np.random.default_rng(seed)
        layer = twin.example(r, dtype)
        return check_layer(layer, dtype=dtype, seed=seed, batch=size(r, 2, 64),
                           name=twin.name)
    return case


def _suite_case(run: Callable[[np.dtype, int, int], LayerReport]) -> Case:
    def case(dtype: np.dtype, seed: int) -> LayerReport:
        return run(dtype, seed, int(np.random.default_rng(seed).integers(2, 17)))
    return case


def components() -> dict[str, Case]:
    """Every correct component: the hand-written generators, every other registered layer
    with an example, and every extra suite case (optimizers, nets) added by plugins."""
    from harness.suite import _EXTRA, _load_plugins
    from reference.registry import registered

    _load_plugins()
    out: dict[str, Case] = dict(SPECIFIC)
    for twin in registered().values():
        if twin.example is not None and twin.name not in out:
            out[twin.name] = _registered_case(twin)
    for c in _EXTRA:  # variants of a component generated above ("Pooling (3x3, ...)") are
        if c.name.split(" ")[0].rstrip(",") not in out:  # already drawn at random by its generator
            out[c.name] = _suite_case(c.run)
    return out


# ---------------------------------------------------------------------------------------
# Running and tallying


@dataclass
class Stats:
    """One component in one dtype: verdict counts and the largest differences seen."""

    component: str
    dtype: str
    runs: int = 0
    counts: dict[str, int] = field(default_factory=lambda: {PASS: 0, FAIL: 0, VACUOUS: 0, ERROR: 0})
    max_abs: float = 0.0
    max_rel: float = 0.0
    worst_ratio: float = 0.0  # the largest |diff| / allowed seen, over every tensor
    worst_tensor: str = ""
    examples: list[str] = field(default_factory=list)  # the first few non-PASS, reproducible
    seconds: float = 0.0

    @property
    def margin(self) -> float:
        """How many times larger the tolerance is than the worst difference seen."""
        return math.inf if self.worst_ratio == 0 else 1.0 / self.worst_ratio

    def add(self, seed: int, report: LayerReport) -> None:
        self.runs += 1
        status = report.status
        self.counts[status] = self.counts.get(status, 0) + 1
        for r in report.results:
            self._tensor(r)
        if status != PASS and len(self.examples) < 3:
            bad = report.first_divergence
            self.examples.append(f"seed {seed}, input {report.input_shape}: {status} "
                                 f"{bad.name if bad else ''} {bad.message if bad else ''}".strip())

    def _tensor(self, r: TensorResult) -> None:
        if r.status not in (PASS, FAIL) or not r.total or "unchanged" in r.tensor:
            return
        ratio = float(r.extra.get("worst_ratio", 0.0))
        if math.isfinite(r.max_abs):
            self.max_abs = max(self.max_abs, r.max_abs)
        if math.isfinite(r.max_rel):
            self.max_rel = max(self.max_rel, r.max_rel)
        if ratio > self.worst_ratio:
            self.worst_ratio, self.worst_tensor = ratio, r.name

    def row(self) -> dict[str, Any]:
        return {"component": self.component, "dtype": self.dtype, "runs": self.runs,
                "fail": self.counts[FAIL], "vacuous": self.counts[VACUOUS],
                "error": self.counts[ERROR], "max_abs": self.max_abs, "max_rel": self.max_rel,
                "worst_ratio": self.worst_ratio, "worst_tensor": self.worst_tensor,
                "margin": None if math.isinf(self.margin) else self.margin,  # None: no difference
                "examples": self.examples, "seconds": self.seconds}


def iter_false_alarms(n: int, dtypes: tuple[np.dtype, ...] = DTYPES,
                      only: list[str] | None = None) -> Iterator[Stats]:
    """Yield one :class:`Stats` per component x dtype after ``n`` random checks of it."""
    import fnmatch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is faster and leaves the other core free
    try:
        for name, case in components().items():
            if only and not any(fnmatch.fnmatch(name, p) for p in only):
                continue
            for dtype in dtypes:
                st = Stats(name, dtype.name)
                t0 = time.perf_counter()
                with np.errstate(all="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    for seed in range(n):
                        st.add(seed, case(dtype, seed))
                st.seconds = time.perf_counter() - t0
                yield st
    finally:
        torch.set_num_threads(threads)


def run_false_alarms(n: int = 1000, dtypes: tuple[np.dtype, ...] = DTYPES,
                     only: list[str] | None = None) -> list[Stats]:
    return list(iter_false_alarms(n, dtypes, only))


# ---------------------------------------------------------------------------------------
# How the rounding difference scales (the basis of the tolerances)


def _affine_pair(dtype: np.dtype, fan_in: int, mag: float, batch: int,
                 seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Scratch Affine and torch Linear on the same weights, input (scaled by ``mag``) and
    upstream gradient: (scratch, torch) for out, dx and dW."""
    from harness.check import TORCH_DTYPE
    from reference.layers import affine_example

    r = np.random.default_rng(seed)
    layer = affine_example(r, dtype, fan_in, 16)
    x = (mag * r.standard_normal((batch, fan_in))).astype(dtype)
    dout = r.standard_normal((batch, 16)).astype(dtype)
    out, dx = layer.forward(x), layer.backward(dout)
    W = torch.tensor(layer.params["W"], dtype=TORCH_DTYPE[dtype], requires_grad=True)
    xt = torch.tensor(x, requires_grad=True)
    out_t = torch.nn.functional.linear(xt, W.T, torch.tensor(layer.params["b"]))
    out_t.backward(torch.tensor(dout))
    return {"out": (out, out_t.detach().numpy()), "dx": (dx, xt.grad.numpy()),
            "dW": (layer.grads["W"], W.grad.numpy())}


def scaling(fan_ins: tuple[int, ...] = (4, 16, 64, 256, 1024, 4096),
            magnitudes: tuple[float, ...] = (1e-3, 1.0, 1e3), batch: int = 32,
            seeds: int = 5) -> list[dict[str, Any]]:
    """Affine scratch vs torch: the largest |diff| of ``out``, ``dx`` and ``dW`` per fan-in and
    input magnitude, absolute and relative to max|expected| (what the scaled atol judges) in
    units of the dtype's machine epsilon."""
    rows = []
    for dtype in DTYPES:
        eps = float(np.finfo(dtype).eps)
        for fan_in in fan_ins:
            for mag in magnitudes:
                row: dict[str, Any] = {"dtype": dtype.name, "fan_in": fan_in, "magnitude": mag}
                for seed in range(seeds):
                    for t, (a, e) in _affine_pair(dtype, fan_in, mag, batch, seed).items():
                        d = float(np.max(np.abs(a.astype(np.float64) - e)))
                        rel = d / float(np.max(np.abs(e))) / eps
                        row[f"{t}_abs"] = max(row.get(f"{t}_abs", 0.0), d)
                        row[f"{t}_scaled_eps"] = max(row.get(f"{t}_scaled_eps", 0.0), rel)
                rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.false_alarms",
                                description="measure the false-alarm rate of the checks")
    p.add_argument("-n", type=int, default=1000, help="random seeds per component and dtype")
    p.add_argument("--only", action="append", metavar="PATTERN")
    p.add_argument("--scaling", action="store_true",
                   help="print how the difference grows with fan-in and magnitude")
    args = p.parse_args(argv)
    if args.scaling:
        print_scaling(scaling())
        return 0
    t0 = time.perf_counter()
    stats = []
    for st in iter_false_alarms(args.n, only=args.only):
        stats.append(st)
        print(format_stats(st), flush=True)
    fails = sum(s.counts[FAIL] + s.counts[ERROR] for s in stats)
    print(f"{fails} false alarm(s) in {sum(s.runs for s in stats)} checks "
          f"({time.perf_counter() - t0:.1f} s)")
    return 1 if fails else 0


def format_stats(s: Stats) -> str:
    tol = default_tolerance(s.dtype)
    return (f"{s.component:24s} {s.dtype:8s} runs {s.runs:5d}  FAIL {s.counts[FAIL]:3d}  "
            f"VACUOUS {s.counts[VACUOUS]:3d}  ERROR {s.counts[ERROR]:3d}  max_abs {s.max_abs:8.2e}  "
            f"max_rel {s.max_rel:8.2e}  worst {s.worst_ratio:8.2e} of tol "
            f"(rtol {tol.rtol:.0e}) at {s.worst_tensor}  {s.seconds:5.1f}s")


def print_scaling(rows: list[dict[str, Any]]) -> None:
    print("| dtype | fan-in | magnitude | out max abs | out / (eps max|out|) | dx / (eps max|dx|) "
          "| dW / (eps max|dW|) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['dtype']} | {r['fan_in']} | {r['magnitude']:g} | {r['out_abs']:.2e} | "
              f"{r['out_scaled_eps']:.2f} | {r['dx_scaled_eps']:.2f} | {r['dW_scaled_eps']:.2f} |")


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
