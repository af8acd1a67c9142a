"""``nn-parity bench``: time named workloads, interleaved, and print medians and ratios.

Each :class:`Workload` has a name, a description and a ``setup(ctx)`` that returns a
zero-argument callable running the workload once (setup is not timed). :func:`run_bench` runs
the selected workloads round-robin (A B C A B C ...), ``repeats`` rounds, so that a slow
stretch of a shared machine hits every workload alike, and reports each one's median.
:data:`RATIOS` names the ratios printed from those medians, with their limits.

Built-in workloads: the classic experiment (two-layer net 784-50-10 on MNIST, SGD lr 0.1,
batch 100, 10,000 iterations, accuracy on all 70,000 images every 600 iterations) trained

* ``numpy``: by NumPy alone, ``torch``: by PyTorch alone, ``side-by-side``: by both at once
  with ``nn-parity train``'s defaults (free mode, the loss and every parameter compared each
  step; in float32 also the float64 shadows of the first 600 steps that measure the noise
  floor), all three with the trainer's thread policy (one thread each, harness/threads.py);
* ``*-default-threads`` (opt-in): the same with the libraries' default thread pools, which
  shows why the trainer limits them (side by side they fight over the cores).

More workloads (check timing, convolution timing, FLOP rates) join with
:func:`register_workload`; a workload may give ``flops(ctx)`` to have a rate printed.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
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
    dtype: str = "float64"
    iters: int = 10000
    batch: int = 100
    lr: float = 0.1
    seed: int = 0
    hidden: int = 50
    threads: int = 1
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


@dataclass
class Workload:
    name: str
    description: str
    setup: Callable[[BenchContext], RunOnce]
    group: str = "train"
    default: bool = True
    flops: Callable[[BenchContext], float] | None = None


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


def _train(frameworks: tuple[str, ...], threads_default: bool = False) -> Callable[[BenchContext], RunOnce]:
    def setup(ctx: BenchContext) -> RunOnce:
        from harness.train import make_net, train_side_by_side

        data = ctx.data

        def once() -> Any:
            net = make_net("two-layer", dtype=ctx.dtype, seed=ctx.seed, hidden=[ctx.hidden],
                           input_size=int(np.prod(data.x_train.shape[1:])))
            return train_side_by_side(net, data, iters=ctx.iters, batch=ctx.batch, lr=ctx.lr,
                                      dtype=ctx.dtype, seed=ctx.seed, frameworks=frameworks,
                                      threads=None if threads_default else ctx.threads,
                                      net_name="two-layer")

        return once

    return setup


def _classic_flops(ctx: BenchContext) -> float:
    """Multiply-adds x 2 of one framework's classic run: 3 matmuls per layer per step
    (forward, dW, dx; torch skips the first layer's dx) and one forward per evaluation."""
    from harness.train import evaluation_steps, iter_per_epoch

    n_in, h, out = 784, ctx.hidden, 10
    per_sample = n_in * h + h * out
    step = 3 * ctx.batch * per_sample
    n_train = 60000
    evals = len(evaluation_steps(ctx.iters, iter_per_epoch(n_train, ctx.batch)))
    return 2.0 * (ctx.iters * step + evals * 70000 * per_sample)


for _name, _fw, _desc in (
    ("numpy", ("numpy",), "classic experiment, NumPy alone"),
    ("torch", ("torch",), "classic experiment, PyTorch alone"),
    ("side-by-side", ("numpy", "torch"), "classic experiment, both in one run as nn-parity "
                                          "train runs it (free mode, loss and parameters compared "
                                          "every step; float32: float64 shadows for 600 steps)"),
):
    register_workload(Workload(_name, _desc, _train(_fw), flops=_classic_flops))
for _name, _fw, _desc in (
    ("numpy-default-threads", ("numpy",), "NumPy alone, library default threads"),
    ("torch-default-threads", ("torch",), "PyTorch alone, library default threads"),
    ("side-by-side-default-threads", ("numpy", "torch"),
     "both, library default threads (the pathological case)"),
):
    register_workload(Workload(_name, _desc, _train(_fw, threads_default=True), default=False,
                               flops=_classic_flops))
register_ratio(Ratio("side-by-side / (numpy + torch)", "side-by-side", ("numpy", "torch"), 1.3))
register_ratio(Ratio("side-by-side-default-threads / (numpy-default-threads + "
                     "torch-default-threads)", "side-by-side-default-threads",
                     ("numpy-default-threads", "torch-default-threads")))
register_ratio(Ratio("side-by-side / (numpy-default-threads + torch-default-threads)",
                     "side-by-side", ("numpy-default-threads", "torch-default-threads"), 1.3))


@dataclass
class BenchResult:
    workloads: list[str]
    times: dict[str, list[float]] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)

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


def run_bench(names: Sequence[str], ctx: BenchContext, repeats: int = 3,
              progress: Callable[[str, int, float], None] | None = None) -> BenchResult:
    """Run the named workloads round-robin ``repeats`` times; setup once per workload."""
    by_name = {w.name: w for w in WORKLOADS}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"unknown workload(s) {unknown}; available: {list(by_name)}")
    runners = {n: by_name[n].setup(ctx) for n in names}
    result = BenchResult(list(names), {n: [] for n in names}, machine=machine_info())
    for r in range(repeats):
        for n in names:
            t0 = time.perf_counter()
            runners[n]()
            dt = time.perf_counter() - t0
            result.times[n].append(dt)
            if progress is not None:
                progress(n, r, dt)
    return result


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


def add_arguments(p: argparse.ArgumentParser) -> None:
    names = [w.name for w in WORKLOADS]
    p.add_argument("--workloads", nargs="+", choices=names, metavar="NAME",
                   default=[w.name for w in WORKLOADS if w.default],
                   help=f"workloads to run, interleaved (default: the default ones); all: {names}")
    p.add_argument("--repeats", type=int, default=3, help="rounds of A B C ... (default 3)")
    p.add_argument("--dataset", choices=["mnist", "fashion-mnist"], default="mnist")
    p.add_argument("--data-dir", metavar="D")
    p.add_argument("--no-download", action="store_true")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    p.add_argument("--iters", type=int, default=10000)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--threads", type=int, default=1,
                   help="threads per library in the non-default-threads workloads (default 1)")
    p.add_argument("--check", action="store_true",
                   help="exit 1 when a ratio is over its limit (timing is noisy: off by default)")


def run(args: argparse.Namespace) -> RunReport:
    from harness.terminal import console

    con = console()
    ctx = BenchContext(dataset=args.dataset, data_dir=args.data_dir,
                       download=not args.no_download, dtype=args.dtype, iters=args.iters,
                       batch=args.batch, threads=args.threads)
    _ = ctx.data  # load once, before timing (a DataError here is exit 2)
    quiet = bool(getattr(args, "quiet", False))

    def progress(name: str, r: int, dt: float) -> None:
        if not quiet:
            con.print(f"  round {r + 1}/{args.repeats} {name}: {dt:.2f} s", markup=False,
                      highlight=False)

    result = bench_and_print(args.workloads, ctx, args.repeats, con, quiet, progress)
    ratios = result.ratios()
    ok = all(r["ok"] is not False for r in ratios) if args.check else True
    summary = {"machine": result.machine, "context": result.context,
               "times_s": result.times,
               "median_s": {n: result.median(n) for n in result.workloads},
               "ratios": ratios}
    return RunReport(command="bench", summary=summary, ok_override=ok)


def bench_and_print(names: Sequence[str], ctx: BenchContext, repeats: int, con: Any,
                    quiet: bool = False,
                    progress: Callable[[str, int, float], None] | None = None) -> BenchResult:
    from rich.table import Table

    mi = machine_info()
    if not quiet:
        con.print(f"machine: {mi['cpu']}, {mi['cores']} cores; Python {mi['python']}, numpy "
                  f"{mi['numpy']} (BLAS {', '.join(mi['numpy_blas'])}, kernel {mi['numpy_blas_core']}), "
                  f"torch {mi['torch']} "
                  f"(BLAS {mi['torch_blas']}, {mi['torch_parallel_backend']})", markup=False,
                  highlight=False)
        con.print(f"workload: {ctx.dataset}, {ctx.dtype}, {ctx.iters} iterations, batch "
                  f"{ctx.batch}, hidden {ctx.hidden}; {repeats} interleaved rounds of "
                  f"{', '.join(names)}", markup=False, highlight=False)
    result = run_bench(names, ctx, repeats, progress)
    result.context = {"dataset": ctx.dataset, "dtype": ctx.dtype, "iters": ctx.iters,
                      "batch": ctx.batch, "hidden": ctx.hidden, "threads": ctx.threads,
                      "repeats": repeats}
    by_name = {w.name: w for w in WORKLOADS}
    t = Table(title="nn-parity bench (seconds per run)")
    for col in ("workload", "median", "min", "max", "runs", "ms / iteration", "GFLOP/s",
                "description"):
        t.add_column(col, justify="left" if col in ("workload", "description") else "right")
    for n in names:
        ts = result.times[n]
        med = result.median(n)
        w = by_name[n]
        rate = "-"
        if w.flops is not None:
            mult = 2 if "side-by-side" in n else 1
            rate = f"{mult * w.flops(ctx) / med / 1e9:.2f}"
        t.add_row(n, f"{med:.2f}", f"{min(ts):.2f}", f"{max(ts):.2f}", str(len(ts)),
                  f"{1000 * med / max(ctx.iters, 1):.3f}", rate, w.description)
    con.print(t)
    for r in result.ratios():
        lim = "" if r["limit"] is None else (f" (limit {r['limit']:g}: "
                                              f"{'OK' if r['ok'] else 'OVER'})")
        con.print(f"{r['name']} = {r['value']:.3f}{lim}", markup=False, highlight=False)
    sys.stdout.flush()
    return result
