"""``nn-parity bench``: time named workloads, interleaved, and print medians, ratios to PyTorch,
FLOP rates against the machine's measured matmul ceiling, and peak memory.

Each :class:`Workload` has a name, a description and a ``setup(ctx)`` that returns a
zero-argument callable running the workload once (setup is not timed). :func:`run_bench` runs
the selected workloads round-robin (A B C A B C ...), ``repeats`` rounds, so that a slow
stretch of a shared machine hits every workload alike, and reports each one's median.
:data:`RATIOS` names the ratios printed from those medians, with their limits.

Default workloads:

* ``scratch-float32``, ``scratch-float64``: the classic experiment (784-50-10, SGD lr 0.1,
  batch 100, 10,000 iterations, accuracy on all 70,000 images every 600 iterations) as a user
  writes it with the scratch code: ``TwoLayerNet``, ``net.gradient``, ``SGD.update``,
  ``x_train[idx]`` batches, ``net.predict`` in chunks of 2,000 rows for the accuracy;
* ``numpy-fused``: the same experiment as one flat float32 NumPy loop
  (:func:`fused_sgd_step`), the floor that shows what the layers cost on top of NumPy;
* ``torch-float32``: the same experiment as an idiomatic PyTorch loop (``nn.Sequential`` of
  ``Linear``/``ReLU``, ``F.cross_entropy``, ``optim.SGD``, batches indexed from a tensor,
  evaluation under ``torch.no_grad`` in chunks), from the same initial weights and batches;
* ``side-by-side``: both at once, as ``nn-parity train`` runs them (free mode, loss and every
  parameter compared each step, float32: float64 shadows for 600 steps, then the analysis),
  with the harness's thread policy (one thread per library, harness/threads.py);
* ``check``: ``nn-parity check`` (every layer, net and optimizer, both dtypes) in a fresh
  process, start-up included;
* ``convnet-scratch``, ``convnet-torch``: SimpleConvNet (conv 30x5x5, ReLU, max pool 2x2,
  affine 100, ReLU, affine 10) forward + backward on batches of 100 MNIST images, scratch and
  the equivalent ``nn.Sequential``.

The ``scratch-*``, ``torch-*`` and ``convnet-*`` workloads run with the libraries' default
thread counts (what a user's script gets; ``--alone-threads N`` changes that). Opt-in:
``numpy``/``torch`` (one framework through the side-by-side trainer) and their
``*-default-threads`` variants, which show why the trainer limits the thread pools.

More workloads join with :func:`register_workload`, more ratios with :func:`register_ratio`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.report import RunReport

RunOnce = Callable[[], Any]


@dataclass
class BenchContext:
    """Settings shared by the workloads; ``data`` is loaded on first use (or given)."""

    dataset: str = "mnist"
    data_dir: str | None = None
    download: bool = True
    dtype: str = "float32"
    iters: int = 10000
    batch: int = 100
    lr: float = 0.1
    seed: int = 0
    hidden: int = 50
    threads: int = 1
    """Threads per library in the harness workloads (side-by-side, numpy, torch)."""
    alone_threads: int | None = None
    """Threads per library in scratch-*, torch-*, convnet-*; None: the libraries' defaults."""
    eval_chunk: int = 2000
    """Rows per evaluation chunk in scratch-*/torch-*: 2,000 was the fastest for both (NumPy
    and PyTorch ~10% faster than 10,000 at 2 threads; the chunk's activations stay in cache)."""
    conv_batches: int = 20
    library_threads: tuple[int | None, int] | None = None
    """(NumPy BLAS, PyTorch) default thread counts, recorded when the bench starts."""
    _data: Any = None

    @property
    def data(self) -> Any:
        if self._data is None:
            from harness.data import load_dataset

            self._data = load_dataset(self.dataset, data_dir=self.data_dir, download=self.download)
        return self._data

    @data.setter
    def data(self, value: Any) -> None:
        self._data = value

    def alone_counts(self) -> tuple[int | None, int | None]:
        """(NumPy, PyTorch) thread counts for the workloads that time one library alone."""
        if self.alone_threads:
            return self.alone_threads, self.alone_threads
        if self.library_threads is None:
            self.library_threads = _current_threads()
        return self.library_threads

    def alone_text(self) -> str:
        n, t = self.alone_counts()
        return (f"{self.alone_threads}/{self.alone_threads}" if self.alone_threads
                else f"default {n if n is not None else '?'}/{t}")


@dataclass
class Workload:
    name: str
    description: str
    setup: Callable[[BenchContext], RunOnce]
    group: str = "train"
    default: bool = True
    flops: Callable[[BenchContext], float] | None = None
    """Useful floating-point operations of one run (for the GFLOP/s column)."""
    baseline: str | None = None
    """The PyTorch workload this one is compared with (the "x torch" column)."""
    threads: Callable[[BenchContext], str] | None = None
    """How many threads it runs with, for the table."""
    units: Callable[[BenchContext], tuple[int, str]] | None = None
    """(count, name) of the repeated unit, e.g. (10000, 'step'): the "ms/unit" column."""
    limit_s: float | None = None
    """An absolute limit on the median time (e.g. ``nn-parity check`` <= 15 s)."""
    dtype: str | None = None
    """float32/float64 (for the FLOP ceiling); None: ``ctx.dtype``."""


@dataclass
class Ratio:
    """``median(numerator) / sum(median(d) for d in denominators)``, with an optional limit."""

    name: str
    numerator: str
    denominators: tuple[str, ...]
    limit: float | None = None


WORKLOADS: list[Workload] = []
RATIOS: list[Ratio] = []


def register_workload(w: Workload) -> Workload:
    """Add (or replace, by name) a workload."""
    for i, old in enumerate(WORKLOADS):
        if old.name == w.name:
            WORKLOADS[i] = w
            return w
    WORKLOADS.append(w)
    return w


def register_ratio(r: Ratio) -> Ratio:
    RATIOS[:] = [x for x in RATIOS if x.name != r.name] + [r]
    return r


# ---------------------------------------------------------------------------------------
# Threads and memory


def _current_threads() -> tuple[int | None, int]:
    import torch

    from harness.threads import numpy_threads

    return numpy_threads(), int(torch.get_num_threads())


@contextlib.contextmanager
def _threads(numpy: int | None, torch: int | None) -> Iterator[None]:
    from harness.threads import limit_threads

    with limit_threads(numpy, torch):
        yield


def _status_mib(key: str) -> float | None:
    try:
        m = re.search(rf"^{key}:\s+(\d+) kB", open("/proc/self/status").read(), re.M)
    except OSError:
        return None
    return int(m.group(1)) / 1024 if m else None


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------
# The classic experiment as a user writes it: scratch NumPy, and idiomatic PyTorch


def _schedule(ctx: BenchContext) -> tuple[int, set[int]]:
    from harness.train import evaluation_steps, iter_per_epoch

    n_train = int(ctx.data.x_train.shape[0])
    return n_train, set(evaluation_steps(ctx.iters, iter_per_epoch(n_train, ctx.batch)))


def _labels(t: np.ndarray) -> np.ndarray:
    t = np.asarray(t)
    return (t.argmax(axis=1) if t.ndim == 2 else t).astype(np.int64, copy=False)


def classic_scratch(ctx: BenchContext, dtype: Any) -> dict[str, Any]:
    """The classic experiment with the scratch code, the way its script is written."""
    from scratch import SGD, TwoLayerNet

    data = ctx.data
    x_train, x_test = data.x_train, data.x_test
    t_train, t_test = _labels(data.t_train), _labels(data.t_test)
    n_train, eval_at = _schedule(ctx)
    net = TwoLayerNet(int(np.prod(x_train.shape[1:])), ctx.hidden, 10, dtype=dtype, seed=ctx.seed)
    opt = SGD(lr=ctx.lr)
    rng = np.random.default_rng(ctx.seed)

    def accuracy(x: np.ndarray, t: np.ndarray) -> float:
        correct = 0
        for i in range(0, x.shape[0], ctx.eval_chunk):  # argmax of the scores: no softmax
            y = net.predict(x[i:i + ctx.eval_chunk])
            correct += int(np.count_nonzero(y.argmax(axis=1) == t[i:i + ctx.eval_chunk]))
        return correct / x.shape[0]

    evals, eval_s = [], 0.0
    for step in range(ctx.iters):
        idx = rng.integers(0, n_train, size=ctx.batch)
        grads = net.gradient(x_train[idx], t_train[idx])  # predict casts the batch to dtype
        opt.update(net.params, grads)
        if step in eval_at:
            t0 = time.perf_counter()
            evals.append((accuracy(x_train, t_train), accuracy(x_test, t_test)))
            eval_s += time.perf_counter() - t0
    return {"train_acc": evals[-1][0], "test_acc": evals[-1][1], "evaluations": len(evals),
            "eval_s": eval_s}


def fused_sgd_step(x: np.ndarray, t: np.ndarray, W1: np.ndarray, b1: np.ndarray,
                   W2: np.ndarray, b2: np.ndarray, lr: np.floating) -> None:
    """One SGD step of the two-layer net (Affine, ReLU, Affine, softmax cross-entropy), in
    place on ``W1, b1, W2, b2``: the same arithmetic as ``TwoLayerNet.gradient`` followed by
    ``SGD.update``, written flat. The scores are kept transposed, (C, N), so that the softmax
    reduces along contiguous rows."""
    n = x.shape[0]
    h = x @ W1
    h += b1
    np.maximum(h, 0, out=h)
    s = W2.T @ h.T  # scores, (C, N)
    s += b2[:, None]
    s -= s.max(axis=0)
    np.exp(s, out=s)
    s /= s.sum(axis=0)
    s[t, np.arange(n)] -= 1
    s *= s.dtype.type(1) / s.dtype.type(n)  # d loss / d scores, (C, N)
    dh = s.T @ W2.T
    dh *= h > 0
    W2 -= lr * (h.T @ s.T)
    b2 -= lr * s.sum(axis=1)
    W1 -= lr * (x.T @ dh)
    b1 -= lr * dh.sum(axis=0)


def classic_numpy_fused(ctx: BenchContext) -> dict[str, Any]:
    """The floor for NumPy: the classic experiment as one flat float32 loop
    (:func:`fused_sgd_step`: no layers, no label checks, no loss value, only its gradient).
    Same initial weights, batches and evaluations as ``scratch-float32``. Not a way to write a
    net: the measure of what the layered scratch code costs on top of NumPy itself."""
    from scratch import TwoLayerNet

    data = ctx.data
    x_train = np.ascontiguousarray(data.x_train, dtype=np.float32)
    x_test = np.ascontiguousarray(data.x_test, dtype=np.float32)
    t_train, t_test = _labels(data.t_train), _labels(data.t_test)
    n_train, eval_at = _schedule(ctx)
    params = TwoLayerNet(int(np.prod(x_train.shape[1:])), ctx.hidden, 10, dtype=np.float32,
                         seed=ctx.seed).params
    W1, b1, W2, b2 = (params[k] for k in ("W1", "b1", "W2", "b2"))
    lr = np.float32(ctx.lr)
    rng = np.random.default_rng(ctx.seed)

    def accuracy(x: np.ndarray, t: np.ndarray) -> float:
        correct = 0
        for i in range(0, x.shape[0], ctx.eval_chunk):
            h = x[i:i + ctx.eval_chunk] @ W1
            h += b1
            np.maximum(h, 0, out=h)
            scores = h @ W2
            scores += b2
            correct += int(np.count_nonzero(scores.argmax(axis=1) == t[i:i + ctx.eval_chunk]))
        return correct / x.shape[0]

    evals, eval_s = [], 0.0
    for step in range(ctx.iters):
        idx = rng.integers(0, n_train, size=ctx.batch)
        fused_sgd_step(x_train[idx], t_train[idx], W1, b1, W2, b2, lr)
        if step in eval_at:
            t0 = time.perf_counter()
            evals.append((accuracy(x_train, t_train), accuracy(x_test, t_test)))
            eval_s += time.perf_counter() - t0
    return {"train_acc": evals[-1][0], "test_acc": evals[-1][1], "evaluations": len(evals),
            "eval_s": eval_s}


def classic_torch(ctx: BenchContext) -> dict[str, Any]:
    """The classic experiment as an idiomatic PyTorch float32 loop, from the scratch net's
    initial weights and on the same batches (one shared index stream)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from scratch import TwoLayerNet

    data = ctx.data
    n_train, eval_at = _schedule(ctx)
    n_in = int(np.prod(data.x_train.shape[1:]))
    init = TwoLayerNet(n_in, ctx.hidden, 10, dtype=np.float32, seed=ctx.seed).params
    model = nn.Sequential(nn.Linear(n_in, ctx.hidden), nn.ReLU(), nn.Linear(ctx.hidden, 10))
    with torch.no_grad():
        for layer, w, b in ((model[0], "W1", "b1"), (model[2], "W2", "b2")):
            layer.weight.copy_(torch.from_numpy(init[w].T.copy()))
            layer.bias.copy_(torch.from_numpy(init[b]))
    opt = torch.optim.SGD(model.parameters(), lr=ctx.lr)
    x_train = torch.from_numpy(np.ascontiguousarray(data.x_train, dtype=np.float32))
    x_test = torch.from_numpy(np.ascontiguousarray(data.x_test, dtype=np.float32))
    t_train = torch.from_numpy(_labels(data.t_train))
    t_test = torch.from_numpy(_labels(data.t_test))
    rng = np.random.default_rng(ctx.seed)

    def accuracy(x: torch.Tensor, t: torch.Tensor) -> float:
        correct = 0
        with torch.no_grad():
            for i in range(0, x.shape[0], ctx.eval_chunk):
                y = model(x[i:i + ctx.eval_chunk])
                correct += int((y.argmax(dim=1) == t[i:i + ctx.eval_chunk]).sum())
        return correct / x.shape[0]

    evals, eval_s = [], 0.0
    for step in range(ctx.iters):
        idx = torch.from_numpy(rng.integers(0, n_train, size=ctx.batch))
        loss = F.cross_entropy(model(x_train[idx]), t_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step in eval_at:
            t0 = time.perf_counter()
            evals.append((accuracy(x_train, t_train), accuracy(x_test, t_test)))
            eval_s += time.perf_counter() - t0
    return {"train_acc": evals[-1][0], "test_acc": evals[-1][1], "evaluations": len(evals),
            "eval_s": eval_s}


def _warm_torch() -> None:
    """Pay PyTorch's one-time costs outside the timings: the first optimizer imports
    torch._dynamo (~1 s), the first kernels initialise their libraries."""
    import torch

    p = torch.zeros(2, 3, requires_grad=True)
    opt = torch.optim.SGD([p], lr=0.1)
    (p @ torch.ones(3, 2)).sum().backward()
    opt.step()


def _alone(fn: Callable[[BenchContext], Any]) -> Callable[[BenchContext], RunOnce]:
    def setup(ctx: BenchContext) -> RunOnce:
        _ = ctx.data
        _warm_torch()

        def once() -> Any:
            with _threads(*ctx.alone_counts()):
                return fn(ctx)

        return once

    return setup


def _train(frameworks: tuple[str, ...], threads_default: bool = False,
           parallel: bool | None = None) -> Callable[[BenchContext], RunOnce]:
    """One or both frameworks through the side-by-side trainer (as ``nn-parity train``;
    ``parallel`` as there: None lets the trainer choose)."""
    def setup(ctx: BenchContext) -> RunOnce:
        from harness.train import analyse, make_net, train_side_by_side

        data = ctx.data
        _warm_torch()

        def once() -> Any:
            net = make_net("two-layer", dtype=ctx.dtype, seed=ctx.seed, hidden=[ctx.hidden],
                           input_size=int(np.prod(data.x_train.shape[1:])))
            res = train_side_by_side(net, data, iters=ctx.iters, batch=ctx.batch, lr=ctx.lr,
                                     dtype=ctx.dtype, seed=ctx.seed, frameworks=frameworks,
                                     threads=None if threads_default else ctx.threads,
                                     parallel=parallel, net_name="two-layer")
            an = analyse(res)
            last = res.evals[-1]
            return {"test_acc": dict(last.test_acc), "train_acc": dict(last.train_acc),
                    "agree": an.agree}

        return once

    return setup


def _classic_flops(ctx: BenchContext) -> float:
    """Useful floating-point operations of one framework's classic run: per step the forward
    products of both layers, both weight gradients and the second layer's input gradient (the
    first layer's input gradient is not needed); one forward per image per evaluation."""
    from harness.train import evaluation_steps, iter_per_epoch

    n_in, h, out = 784, ctx.hidden, 10
    n_train, n_all = 60000, 70000
    if ctx._data is not None:
        d = ctx._data
        n_in = int(np.prod(d.x_train.shape[1:]))
        n_train, n_all = int(d.x_train.shape[0]), int(d.x_train.shape[0] + d.x_test.shape[0])
    step = ctx.batch * (2 * n_in * h + 3 * h * out)
    evals = len(evaluation_steps(ctx.iters, iter_per_epoch(n_train, ctx.batch)))
    return 2.0 * (ctx.iters * step + evals * n_all * (n_in * h + h * out))


def _both_flops(ctx: BenchContext) -> float:
    return 2 * _classic_flops(ctx)


def _steps(ctx: BenchContext) -> tuple[int, str]:
    return ctx.iters, "step"


def _alone_threads(ctx: BenchContext) -> str:
    return ctx.alone_text()


def _harness_threads(ctx: BenchContext) -> str:
    return f"{ctx.threads}/{ctx.threads} (harness)" if ctx.threads else "default"


# ---------------------------------------------------------------------------------------
# nn-parity check, in a fresh process


_CHECK_CHILD = """\
import re, runpy, sys
sys.argv = ["nn-parity", "check", "-q"]
try:
    runpy.run_module("harness", run_name="__main__", alter_sys=True)
finally:  # the child's own peak: a forked child's ru_maxrss starts at its parent's RSS
    try:
        hwm = re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)
        print("nn-parity-bench VmHWM_kB", hwm, flush=True)
    except (OSError, AttributeError):
        pass
"""


def _check(ctx: BenchContext) -> RunOnce:
    """``nn-parity check -q`` in a fresh interpreter (what a user's command costs)."""
    from pathlib import Path

    import harness

    root = str(Path(harness.__file__).resolve().parent.parent)  # where `-m harness` resolves
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [root, *filter(None, [os.environ.get("PYTHONPATH")])])}

    def once() -> dict[str, Any]:
        proc = subprocess.run([sys.executable, "-c", _CHECK_CHILD], capture_output=True,
                              text=True, cwd=root, env=env)
        out = proc.stdout + proc.stderr
        line = next((ln for ln in out.splitlines() if ln.startswith(("PASS", "FAIL"))), out[-300:])
        result: dict[str, Any] = {"ok": proc.returncode == 0, "verdict": line.strip()}
        m = re.search(r"nn-parity-bench VmHWM_kB (\d+)", out)
        if m:
            result["peak_rss_mib"] = int(m.group(1)) / 1024
        return result

    return once


# ---------------------------------------------------------------------------------------
# SimpleConvNet forward + backward


def _conv_batches(ctx: BenchContext) -> list[tuple[np.ndarray, np.ndarray]]:
    data = ctx.data
    x = data.x_train.reshape(-1, 1, 28, 28)
    t = _labels(data.t_train)
    rng = np.random.default_rng(ctx.seed)
    out = []
    for _ in range(ctx.conv_batches):
        idx = rng.integers(0, x.shape[0], size=ctx.batch)
        out.append((np.ascontiguousarray(x[idx], dtype=np.float32), t[idx]))
    return out


def _convnet_scratch(ctx: BenchContext) -> RunOnce:
    from scratch import SimpleConvNet

    batches = _conv_batches(ctx)
    net = SimpleConvNet((1, 28, 28), dtype=np.float32, seed=ctx.seed)

    def once() -> None:
        with _threads(*ctx.alone_counts()):
            for xb, tb in batches:
                net.gradient(xb, tb)

    net.gradient(*batches[0])  # warm-up, untimed
    return once


def _convnet_torch(ctx: BenchContext) -> RunOnce:
    import torch
    import torch.nn.functional as F
    from torch import nn

    batches = [(torch.from_numpy(xb), torch.from_numpy(tb)) for xb, tb in _conv_batches(ctx)]
    model = nn.Sequential(nn.Conv2d(1, 30, 5), nn.ReLU(), nn.MaxPool2d(2, 2), nn.Flatten(),
                          nn.Linear(30 * 12 * 12, 100), nn.ReLU(), nn.Linear(100, 10))

    def once() -> None:
        with _threads(*ctx.alone_counts()):
            for xb, tb in batches:
                model.zero_grad()
                F.cross_entropy(model(xb), tb).backward()

    F.cross_entropy(model(batches[0][0]), batches[0][1]).backward()  # warm-up, untimed
    return once


def _convnet_flops(ctx: BenchContext) -> float:
    """Per batch: the convolution's forward and weight gradient (its input gradient is not
    needed), and forward, weight and input gradient of both affine layers."""
    conv = 24 * 24 * 30 * 1 * 5 * 5
    affine = 30 * 12 * 12 * 100 + 100 * 10
    return 2.0 * ctx.conv_batches * ctx.batch * (2 * conv + 3 * affine)


def _conv_units(ctx: BenchContext) -> tuple[int, str]:
    return ctx.conv_batches, "batch"


# ---------------------------------------------------------------------------------------
# Registration

for _name, _dt, _fn, _desc in (
    ("scratch-float32", "float32", lambda ctx: classic_scratch(ctx, np.float32),
     "classic experiment, scratch TwoLayerNet float32 (plain loop: gradient, SGD, predict)"),
    ("scratch-float64", "float64", lambda ctx: classic_scratch(ctx, np.float64),
     "classic experiment, scratch TwoLayerNet float64 (the book's dtype)"),
    ("numpy-fused", "float32", classic_numpy_fused,
     "classic experiment as one flat float32 NumPy loop, no layers (the floor for NumPy)"),
    ("torch-float32", "float32", classic_torch,
     "classic experiment, idiomatic PyTorch float32 (Sequential, cross_entropy, optim.SGD)"),
):
    register_workload(Workload(_name, _desc, _alone(_fn), flops=_classic_flops,
                               baseline="torch-float32", threads=_alone_threads, units=_steps,
                               dtype=_dt))
register_workload(Workload(
    "side-by-side", "classic experiment, both frameworks in one run as nn-parity train runs "
    "it (free mode, loss and parameters compared every step; float32: float64 shadows for 600 "
    "steps; then the analysis)", _train(("numpy", "torch")), flops=_both_flops,
    baseline="torch-float32", threads=_harness_threads, units=_steps))
register_workload(Workload(
    "side-by-side-sequential", "side-by-side with the two sides one after the other in one "
    "thread (nn-parity train --no-parallel)", _train(("numpy", "torch"), parallel=False),
    default=False, flops=_both_flops, baseline="torch-float32", threads=_harness_threads,
    units=_steps))
register_workload(Workload(
    "check", "nn-parity check -q in a fresh process (every layer, net and optimizer, float32 "
    "and float64, batches 1 3 8, 2 seeds; start-up included)", _check, group="check",
    threads=lambda ctx: "1/1 (check)", limit_s=15.0))
register_workload(Workload(
    "convnet-scratch", "SimpleConvNet float32 forward + backward, batch 100 MNIST images, "
    "scratch (im2col convolution, strided-window max pooling)", _convnet_scratch, group="conv",
    flops=_convnet_flops, baseline="convnet-torch", threads=_alone_threads, units=_conv_units,
    dtype="float32"))
register_workload(Workload(
    "convnet-torch", "the same net as nn.Sequential(Conv2d, ReLU, MaxPool2d, Flatten, Linear, "
    "ReLU, Linear), forward + cross_entropy + backward", _convnet_torch, group="conv",
    flops=_convnet_flops, baseline="convnet-torch", threads=_alone_threads, units=_conv_units,
    dtype="float32"))
for _name, _fw, _desc in (
    ("numpy", ("numpy",), "classic experiment, NumPy alone through the side-by-side trainer"),
    ("torch", ("torch",), "classic experiment, PyTorch alone through the side-by-side trainer"),
):
    register_workload(Workload(_name, _desc, _train(_fw), default=False, flops=_classic_flops,
                               baseline="torch", threads=_harness_threads, units=_steps))
for _name, _fw, _desc in (
    ("numpy-default-threads", ("numpy",), "NumPy alone (trainer), library default threads"),
    ("torch-default-threads", ("torch",), "PyTorch alone (trainer), library default threads"),
    ("side-by-side-default-threads", ("numpy", "torch"),
     "both (trainer), library default threads (the pathological case)"),
):
    register_workload(Workload(_name, _desc, _train(_fw, threads_default=True), default=False,
                               flops=_both_flops if "side" in _name else _classic_flops,
                               threads=lambda ctx: "default", units=_steps))

register_ratio(Ratio("scratch-float32 / torch-float32", "scratch-float32", ("torch-float32",), 0.5))
register_ratio(Ratio("numpy-fused / torch-float32", "numpy-fused", ("torch-float32",)))
register_ratio(Ratio("scratch-float32 / numpy-fused", "scratch-float32", ("numpy-fused",)))
register_ratio(Ratio("scratch-float64 / torch-float32", "scratch-float64", ("torch-float32",)))
register_ratio(Ratio("side-by-side / (scratch-float32 + torch-float32)", "side-by-side",
                     ("scratch-float32", "torch-float32"), 1.2))
register_ratio(Ratio("convnet-scratch / convnet-torch", "convnet-scratch", ("convnet-torch",), 3.0))
register_ratio(Ratio("side-by-side / (numpy + torch)", "side-by-side", ("numpy", "torch"), 1.3))
register_ratio(Ratio("side-by-side-sequential / (scratch-float32 + torch-float32)",
                     "side-by-side-sequential", ("scratch-float32", "torch-float32")))
register_ratio(Ratio("side-by-side / side-by-side-sequential", "side-by-side",
                     ("side-by-side-sequential",)))
register_ratio(Ratio("side-by-side-default-threads / (numpy-default-threads + "
                     "torch-default-threads)", "side-by-side-default-threads",
                     ("numpy-default-threads", "torch-default-threads")))
register_ratio(Ratio("side-by-side / (numpy-default-threads + torch-default-threads)",
                     "side-by-side", ("numpy-default-threads", "torch-default-threads"), 1.3))


# ---------------------------------------------------------------------------------------
# Running


@dataclass
class BenchResult:
    workloads: list[str]
    times: dict[str, list[float]] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    peak_rss_mib: dict[str, float] = field(default_factory=dict)
    """Largest peak RSS over the runs (the process's, or the child's for ``check``)."""
    rss_growth_mib: dict[str, float] = field(default_factory=dict)
    """Largest peak RSS minus the RSS just before the run (in-process workloads)."""
    outputs: dict[str, Any] = field(default_factory=dict)
    """What each workload's last run returned (accuracies, verdicts)."""
    eval_times: dict[str, list[float]] = field(default_factory=dict)
    """Seconds each run of a classic workload spent in its evaluations (``eval_s``)."""
    ceiling: dict[str, Any] = field(default_factory=dict)

    def median(self, name: str) -> float:
        return statistics.median(self.times[name])

    def ratios(self) -> list[dict[str, Any]]:
        out = []
        for r in RATIOS:
            names = (r.numerator, *r.denominators)
            if not all(n in self.times and self.times[n] for n in names):
                continue
            denom = sum(self.median(n) for n in r.denominators)
            value = self.median(r.numerator) / denom if denom > 0 else float("inf")
            out.append({"name": r.name, "value": value, "limit": r.limit,
                        "ok": None if r.limit is None else value <= r.limit})
        return out

    def training_ratios(self) -> list[dict[str, Any]]:
        """The classic workloads' ratios to ``torch-float32`` with the evaluations taken out
        (median of each run's time minus its evaluation time): the training steps alone."""
        base = "torch-float32"
        if len(self.eval_times.get(base, ())) != len(self.times.get(base, ())):
            return []

        def steps(n: str) -> float:
            runs = zip(self.times[n], self.eval_times[n], strict=True)
            return statistics.median(t - e for t, e in runs)

        return [{"name": n, "eval_s": statistics.median(self.eval_times[n]), "steps_s": steps(n),
                 "ratio": steps(n) / steps(base) if steps(base) > 0 else float("inf")}
                for n in self.workloads if len(self.eval_times.get(n, ())) == len(self.times[n])]

    def limits(self) -> list[dict[str, Any]]:
        by_name = {w.name: w for w in WORKLOADS}
        return [{"name": f"{n} median", "value": self.median(n), "limit": by_name[n].limit_s,
                 "ok": self.median(n) <= by_name[n].limit_s}
                for n in self.workloads if n in by_name and by_name[n].limit_s is not None
                and self.times.get(n)]


def run_bench(names: Sequence[str], ctx: BenchContext, repeats: int = 3,
              progress: Callable[[str, int, float], None] | None = None) -> BenchResult:
    """Run the named workloads round-robin ``repeats`` times; setup once per workload."""
    by_name = {w.name: w for w in WORKLOADS}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"unknown workload(s) {unknown}; available: {list(by_name)}")
    if ctx.library_threads is None:
        ctx.library_threads = _current_threads()
    runners = {n: by_name[n].setup(ctx) for n in names}
    result = BenchResult(list(names), {n: [] for n in names}, machine=machine_info())
    for r in range(repeats):
        for n in names:
            before = _status_mib("VmRSS")
            reset = _reset_peak_rss()
            t0 = time.perf_counter()
            out = runners[n]()
            dt = time.perf_counter() - t0
            peak = _status_mib("VmHWM") if reset else None
            if isinstance(out, dict) and "peak_rss_mib" in out:  # a child process
                result.peak_rss_mib[n] = max(result.peak_rss_mib.get(n, 0.0), out["peak_rss_mib"])
            elif peak is not None:
                result.peak_rss_mib[n] = max(result.peak_rss_mib.get(n, 0.0), peak)
                if before is not None:
                    result.rss_growth_mib[n] = max(result.rss_growth_mib.get(n, 0.0),
                                                   peak - before)
            result.times[n].append(dt)
            result.outputs[n] = out
            if isinstance(out, dict) and "eval_s" in out:
                result.eval_times.setdefault(n, []).append(float(out["eval_s"]))
            if progress is not None:
                progress(n, r, dt)
    return result


def matmul_ceiling(threads: tuple[int | None, int | None] = (None, None),
                   shapes: Sequence[tuple[int, int, int]] = ((1024, 1024, 1024), (100, 784, 50),
                                                             (10000, 784, 50)),
                   dtypes: Sequence[str] = ("float32", "float64")) -> dict[str, Any]:
    """NumPy's matmul rate (GFLOP/s, best of several timings) per dtype and (m, k, n) shape,
    with NumPy's BLAS on ``threads[0]`` threads (None: as it is). ``ceiling`` per dtype is the
    best over the shapes: the rate a workload's FLOP count is measured against."""
    out: dict[str, Any] = {"threads": threads[0], "rates": {}, "ceiling": {}}
    rng = np.random.default_rng(0)
    with _threads(threads[0], threads[1]):
        for dt in dtypes:
            best_all = 0.0
            for m, k, n in shapes:
                a = rng.random((m, k)).astype(dt)
                b = rng.random((k, n)).astype(dt)
                flop = 2.0 * m * k * n
                reps = max(1, int(2e8 // flop))  # ~0.2 GFLOP per timing
                a @ b
                best = float("inf")
                for _ in range(7):
                    t0 = time.perf_counter()
                    for _ in range(reps):
                        a @ b
                    best = min(best, (time.perf_counter() - t0) / reps)
                rate = flop / best / 1e9
                out["rates"][f"{dt} {m}x{k}x{n}"] = rate
                best_all = max(best_all, rate)
            out["ceiling"][dt] = best_all
    return out


def machine_info() -> dict[str, Any]:
    """CPU model, cores, library versions and BLAS, for docs/benchmarks.md."""
    import torch

    from harness.threads import describe

    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    model = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        m = re.search(r"^Model name:\s*(.+)$", out, re.M)
        model = m.group(1).strip() if m else ""
    except (OSError, subprocess.SubprocessError):
        pass
    info["cpu"] = model or platform.processor() or "unknown"
    info["cores"] = os.cpu_count()
    info.update(describe())
    cfg = torch.__config__.show()
    m = re.search(r"BLAS_INFO=(\w+)", cfg)
    info["torch_blas"] = m.group(1) if m else "unknown"
    return info


def _count(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse type: an integer in [lo, hi], or a usage error naming the range."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be between {lo} and {hi:,}, got {value:,}")
        return value

    return parse


def add_arguments(p: argparse.ArgumentParser) -> None:
    names = [w.name for w in WORKLOADS]
    p.add_argument("--workloads", nargs="+", choices=names, metavar="NAME",
                   default=[w.name for w in WORKLOADS if w.default],
                   help=f"workloads to run, interleaved (default: the default ones); all: {names}")
    p.add_argument("--repeats", type=_count(1, 100), default=3,
                   help="rounds of A B C ... (1-100, default 3)")
    p.add_argument("--dataset", choices=["mnist", "fashion-mnist"], default="mnist")
    p.add_argument("--data-dir", metavar="D")
    p.add_argument("--no-download", action="store_true")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float32",
                   help="dtype of the side-by-side (trainer) workloads (default float32)")
    p.add_argument("--iters", type=_count(1, 1_000_000), default=10000,
                   help="training steps per classic run (1-1,000,000, default 10,000)")
    p.add_argument("--batch", type=_count(1, 4096), default=100,
                   help="batch size (1-4096, default 100)")
    p.add_argument("--threads", type=_count(1, 256), default=1,
                   help="threads per library in the trainer workloads (default 1, the trainer's "
                        "policy)")
    p.add_argument("--alone-threads", type=_count(1, 256), default=None, metavar="N",
                   help="threads per library in scratch-*, torch-*, convnet-* (default: the "
                        "libraries' defaults)")
    p.add_argument("--conv-batches", type=_count(1, 600), default=20,
                   help="batches per convnet run (1-600, default 20)")
    p.add_argument("--check", action="store_true",
                   help="exit 1 when a ratio or limit is exceeded (timing is noisy: off by "
                        "default)")


def run(args: argparse.Namespace) -> RunReport:
    from harness.terminal import console

    con = console()
    ctx = BenchContext(dataset=args.dataset, data_dir=args.data_dir,
                       download=not args.no_download, dtype=args.dtype, iters=args.iters,
                       batch=args.batch, threads=args.threads,
                       alone_threads=getattr(args, "alone_threads", None),
                       conv_batches=getattr(args, "conv_batches", 20))
    _ = ctx.data  # load once, before timing (a DataError here is exit 2)
    quiet = bool(getattr(args, "quiet", False))

    def progress(name: str, r: int, dt: float) -> None:
        if not quiet:
            con.print(f"  round {r + 1}/{args.repeats} {name}: {dt:.2f} s", markup=False,
                      highlight=False)

    result = bench_and_print(args.workloads, ctx, args.repeats, con, quiet, progress)
    checks = result.ratios() + result.limits()
    over = [r["name"] for r in checks if r["ok"] is False]
    ok = not over if args.check else True
    if over and not args.check and not quiet:
        con.print(f"{len(over)} over its limit, reported only: timing on a shared machine is "
                  "noisy, so the exit code ignores it unless --check is given", markup=False,
                  highlight=False)
    summary = {"machine": result.machine, "context": result.context,
               "times_s": result.times,
               "median_s": {n: result.median(n) for n in result.workloads},
               "peak_rss_mib": result.peak_rss_mib, "rss_growth_mib": result.rss_growth_mib,
               "outputs": _jsonable(result.outputs), "matmul": result.ceiling,
               "ratios": result.ratios(), "limits": result.limits(),
               "eval_s": result.eval_times, "training_steps": result.training_ratios()}
    return RunReport(command="bench", summary=summary, ok_override=ok)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return x.item()
    return x


def _acc_text(out: Any) -> str:
    if not isinstance(out, dict) or "test_acc" not in out:
        return "-"
    acc = out["test_acc"]
    if isinstance(acc, dict):
        return " / ".join(f"{v:.4f}" for v in acc.values())
    return f"{acc:.4f}"


def bench_and_print(names: Sequence[str], ctx: BenchContext, repeats: int, con: Any,
                    quiet: bool = False,
                    progress: Callable[[str, int, float], None] | None = None) -> BenchResult:
    from rich.table import Table

    mi = machine_info()
    if ctx.library_threads is None:
        ctx.library_threads = _current_threads()
    by_name = {w.name: w for w in WORKLOADS}
    if not quiet:
        con.print(f"machine: {mi['cpu']}, {mi['cores']} cores; Python {mi['python']}, numpy "
                  f"{mi['numpy']} (BLAS {', '.join(mi['numpy_blas'])}, kernel {mi['numpy_blas_core']}), "
                  f"torch {mi['torch']} "
                  f"(BLAS {mi['torch_blas']}, {mi['torch_parallel_backend']}); "
                  f"OMP_WAIT_POLICY={mi['omp_wait_policy']}", markup=False, highlight=False)
        con.print(f"workload: {ctx.dataset}, {ctx.iters} iterations, batch {ctx.batch}, hidden "
                  f"{ctx.hidden}, side-by-side {ctx.dtype}; {repeats} interleaved rounds of "
                  f"{', '.join(names)}", markup=False, highlight=False)
    flop_names = [n for n in names if by_name[n].flops is not None]
    ceiling: dict[str, Any] = {}
    if flop_names:
        ceiling = {"default": matmul_ceiling(ctx.alone_counts()),
                   "one thread": matmul_ceiling((1, 1))}
        if not quiet:
            for label, c in (("threads as scratch-*", ceiling["default"]),
                             ("1 thread", ceiling["one thread"])):
                rates = ", ".join(f"{k} {v:.0f}" for k, v in c["rates"].items())
                con.print(f"matmul rate, NumPy, {label}: GFLOP/s {rates}", markup=False,
                          highlight=False)
    result = run_bench(names, ctx, repeats, progress)
    result.ceiling = ceiling
    result.context = {"dataset": ctx.dataset, "dtype": ctx.dtype, "iters": ctx.iters,
                      "batch": ctx.batch, "hidden": ctx.hidden, "threads": ctx.threads,
                      "alone_threads": ctx.alone_text(), "conv_batches": ctx.conv_batches,
                      "repeats": repeats}
    t = Table(title="nn-parity bench (seconds per run; medians of interleaved rounds)")
    for col in ("workload", "threads", "median", "min", "max", "runs", "ms / unit", "x torch",
                "GFLOP/s", "% ceiling", "peak RSS MiB", "test acc"):
        t.add_column(col, justify="left" if col in ("workload", "threads") else "right")
    for n in names:
        ts = result.times[n]
        med = result.median(n)
        w = by_name[n]
        rate = pct = "-"
        if w.flops is not None and med > 0:
            gf = w.flops(ctx) / med / 1e9
            rate = f"{gf:.1f}"
            dt = w.dtype or ctx.dtype
            which = "one thread" if w.threads is _harness_threads and ctx.threads == 1 else "default"
            ceil = ceiling.get(which, {}).get("ceiling", {}).get(dt)
            if ceil:
                pct = f"{100 * gf / ceil:.0f}%"
        unit = "-"
        if w.units is not None:
            count, uname = w.units(ctx)
            unit = f"{1000 * med / max(count, 1):.3f} /{uname}"
        vs = "-"
        if w.baseline and w.baseline in result.times and result.times[w.baseline]:
            vs = f"{med / result.median(w.baseline):.2f}"
        mem = "-"
        if n in result.peak_rss_mib:
            mem = f"{result.peak_rss_mib[n]:.0f}"
            if n in result.rss_growth_mib:
                mem += f" (+{result.rss_growth_mib[n]:.0f})"
        t.add_row(n, w.threads(ctx) if w.threads else "-", f"{med:.2f}", f"{min(ts):.2f}",
                  f"{max(ts):.2f}", str(len(ts)), unit, vs, rate, pct, mem,
                  _acc_text(result.outputs.get(n)))
    con.print(t)
    if not quiet:
        for n in names:
            con.print(f"  {n}: {by_name[n].description}", markup=False, highlight=False)
        con.print("  threads: NumPy's BLAS / PyTorch; peak RSS: the process's high-water mark "
                  "during the run (in brackets: above its RSS before the run; check: the child "
                  "process's); % ceiling: GFLOP/s over the best matmul rate above at the same "
                  "threads and dtype", markup=False, highlight=False)
    for r in result.ratios() + result.limits():
        lim = "" if r["limit"] is None else (f" (limit {r['limit']:g}: "
                                              f"{'OK' if r['ok'] else 'OVER'})")
        con.print(f"{r['name']} = {r['value']:.3f}{lim}", markup=False, highlight=False)
    acc = {n: result.outputs[n]["test_acc"] for n in ("scratch-float32", "torch-float32")
           if isinstance(result.outputs.get(n), dict)}
    if len(acc) == 2:
        gap = 100 * abs(acc["scratch-float32"] - acc["torch-float32"])
        con.print(f"final test accuracy: scratch-float32 {acc['scratch-float32']:.4f}, "
                  f"torch-float32 {acc['torch-float32']:.4f} (difference {gap:.2f} points, "
                  f"limit 0.5: {'OK' if gap <= 0.5 else 'OVER'})", markup=False, highlight=False)
    parts = result.training_ratios()
    if parts:
        con.print("evaluations / training steps (medians, s): " + ", ".join(
            f"{p['name']} {p['eval_s']:.2f} / {p['steps_s']:.2f} ({p['ratio']:.3f}x torch's "
            "steps)" for p in parts), markup=False, highlight=False)
    if "check" in result.outputs and isinstance(result.outputs["check"], dict):
        con.print(f"check: {result.outputs['check']['verdict']}", markup=False, highlight=False)
    sys.stdout.flush()
    return result
