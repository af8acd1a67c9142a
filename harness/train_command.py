"""``nn-parity train``: the classic MNIST experiment in NumPy and PyTorch side by side.

Loads the data set (:func:`harness.data.load_dataset`), trains both frameworks from identical
weights on identical mini-batches (:func:`harness.train.train_side_by_side`), prints a line
per epoch for both (like the classic script), a summary table and the verdict of the
divergence analysis, and writes the plot. Exit code 0 when the runs agree (within the
float64 tolerance, or within the float32 rounding noise floor), 1 when they part, 2 for
usage and data errors (no data and no network: a message, not a traceback).
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

import numpy as np

from harness.report import RunReport
from harness.train import (
    DEFAULT_EVAL_CHUNK,
    DEFAULT_FREE_SHADOW_STEPS,
    DEFAULT_LR,
    FRAMEWORKS,
    MODES,
    NETS_WITH_ONE_HIDDEN,
    Analysis,
    TrainEvent,
    TrainResult,
    analyse,
    available_nets,
    available_optimizers,
    default_lr,
    evaluation_steps,
    iter_per_epoch,
    make_net,
    to_run_report,
    train_side_by_side,
)

DATASETS = ("mnist", "fashion-mnist")


def _shadow_steps(text: str) -> int | None:
    if text in ("auto", ""):
        return None
    if text == "all":
        return -1
    try:
        n = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a number, 'all' or 'auto', got {text!r}") from exc
    if n < 0:
        raise argparse.ArgumentTypeError("shadow steps must be >= 0")
    return n


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("experiment")
    g.add_argument("--dataset", choices=DATASETS, default="mnist")
    g.add_argument("--data-dir", metavar="D", help="folder with the four idx files "
                   "(else $NN_PARITY_DATA, the user cache, a download)")
    g.add_argument("--no-download", action="store_true", help="never download the data set")
    g.add_argument("--net", choices=sorted(available_nets()), default="two-layer")
    g.add_argument("--hidden", type=int, nargs="+", default=[50], metavar="N",
                   help="hidden size (two-layer, convnet: exactly one; multi-layer: one per "
                        "hidden layer); default 50")
    g.add_argument("--optimizer", choices=available_optimizers(), default="sgd")
    g.add_argument("--iters", type=int, default=10000, help="training steps (>= 1)")
    g.add_argument("--batch", type=int, default=100, help="mini-batch size (>= 1)")
    g.add_argument("--lr", type=float, default=None,
                   help="learning rate, a finite number > 0 (default per optimizer: " +
                        ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items()) + ")")
    g.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    g.add_argument("--seed", type=int, default=0, help="weight init and batch stream (>= 0)")
    g.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS, default=list(FRAMEWORKS),
                   help="both (default) or one of them alone")
    c = p.add_argument_group("comparison")
    c.add_argument("--mode", choices=MODES, default="free",
                   help="free: both runs evolve on their own; lockstep: torch is re-synchronised "
                        "to the NumPy weights before every step")
    c.add_argument("--no-param-diff", dest="param_diff", action="store_false",
                   help="do not compare the parameters every step (only the loss)")
    c.add_argument("--grad-diff", action="store_true",
                   help="compare the gradients every step in free mode too (always in lockstep)")
    c.add_argument("--shadow-steps", type=_shadow_steps, default=None, metavar="N|all",
                   help="float32: steps with float64 shadows for the noise floor (default: all "
                        f"in lockstep, {DEFAULT_FREE_SHADOW_STEPS} in free mode)")
    o = p.add_argument_group("run")
    o.add_argument("--plot", metavar="PATH", action="append", default=[],
                   help="write the figure; the extension picks the format (.png, .svg, .pdf, "
                        "...: any matplotlib writes; repeatable)")
    o.add_argument("--curves", metavar="PATH",
                   help="write the per-step records (losses, differences, noise floors) as CSV")
    o.add_argument("--threads", type=int, default=1,
                   help="threads for NumPy's BLAS and PyTorch while training (default 1, see "
                        "docs/benchmarks.md); 0 leaves the libraries' defaults")
    o.add_argument("--parallel", action=argparse.BooleanOptionalAction, default=None,
                   help="free mode: train the torch side in a worker process, each library on "
                        "its own core (default: on Linux with --threads 1 and 2+ cores, when the "
                        "mode and the layers allow it; the records are the same either way)")
    o.add_argument("--eval-chunk", type=int, default=None,
                   help=f"rows per evaluation chunk, >= 1 (default {DEFAULT_EVAL_CHUNK}, a tenth "
                        "of it for the convnet)")


def usage_problem(args: argparse.Namespace) -> str | None:
    """The first invalid option value, as ``--option: why`` (None when all are valid).
    Checked before the data is loaded: a bad value is a usage error (exit 2), never a
    traceback or a run that trains on nonsense."""
    from harness.plots import check_plot_path

    ints = (("--iters", args.iters, 1), ("--batch", args.batch, 1), ("--seed", args.seed, 0),
            ("--threads", args.threads, 0))
    for flag, v, least in ints:
        if v < least:
            return f"{flag} must be >= {least}, got {v}"
    if args.eval_chunk is not None and args.eval_chunk < 1:
        return f"--eval-chunk must be >= 1, got {args.eval_chunk}"
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        return f"--lr must be a finite number > 0, got {args.lr:g}"
    if any(h < 1 for h in args.hidden):
        return f"--hidden: hidden sizes must be >= 1, got {' '.join(map(str, args.hidden))}"
    if args.net in NETS_WITH_ONE_HIDDEN and len(args.hidden) != 1:
        return (f"--hidden: net {args.net!r} has one hidden layer: give one hidden size, got "
                f"{' '.join(map(str, args.hidden))} (--net multi-layer takes one per hidden layer)")
    if args.mode == "lockstep" and len(args.frameworks) < 2:
        return "--mode lockstep needs both frameworks"
    if args.parallel and (args.mode != "free" or len(args.frameworks) < 2 or args.threads != 1):
        return ("--parallel needs --mode free, both frameworks and --threads 1 (the torch worker "
                "process runs on one thread)")
    for path in args.plot:
        try:
            check_plot_path(path)
        except ValueError as exc:
            return f"--plot {exc}"
    return None


def _load(args: argparse.Namespace) -> Any:
    from harness.data import load_dataset

    return load_dataset(args.dataset, data_dir=args.data_dir, download=not args.no_download)


def _fmt(x: float | None, spec: str = ".3g") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return format(x, spec)


def run(args: argparse.Namespace) -> RunReport | int:
    from harness.terminal import console, progress_bar

    con = console()
    quiet = bool(getattr(args, "quiet", False))
    verbose = bool(getattr(args, "verbose", False))
    problem = usage_problem(args)
    if problem:
        print(f"nn-parity train: error: {problem}", file=sys.stderr)
        return 2
    lr = args.lr if args.lr is not None else default_lr(args.optimizer)
    data = _load(args)
    dtype = np.dtype(args.dtype)
    input_size = int(np.prod(data.x_train.shape[1:]))
    try:
        net = make_net(args.net, dtype=dtype, seed=args.seed, hidden=args.hidden,
                       input_size=input_size, output_size=10)
    except ValueError as exc:
        print(f"nn-parity train: error: --hidden: {exc}", file=sys.stderr)
        return 2
    shadow = args.shadow_steps
    if shadow == -1:
        shadow = args.iters
    ipe = iter_per_epoch(data.x_train.shape[0], args.batch)
    n_eval = len(evaluation_steps(args.iters, ipe))
    frameworks = tuple(f for f in FRAMEWORKS if f in args.frameworks)
    if not quiet:
        sizes = "-".join(str(v) for v in (input_size, *args.hidden, 10))
        con.print(f"nn-parity train: {args.net} net {sizes} on {data.name} "
                  f"({data.x_train.shape[0]} train / {data.x_test.shape[0]} test, from {data.source})",
                  markup=False, highlight=False)
        lr_text = f"lr {lr:g}" + ("" if args.lr is not None else
                                  f" (the default for {args.optimizer}; --lr to change)")
        con.print(f"  {args.dtype}, mode {args.mode}, {args.optimizer} {lr_text}, batch "
                  f"{args.batch}, {args.iters} iterations ({ipe:g} per epoch, {n_eval} evaluations), "
                  f"seed {args.seed}, frameworks: {', '.join(frameworks)}", markup=False,
                  highlight=False)

    def on_eval(ev: TrainEvent) -> None:
        if quiet or ev.kind != "eval" or ev.eval is None:
            return
        rec = ev.eval
        parts = [f"epoch {rec.epoch:3d} (step {rec.step:5d})"]
        for f in frameworks:
            parts.append(f"{f} train acc, test acc | {rec.train_acc[f]:.4f}, {rec.test_acc[f]:.4f}")
        if ev.result.both:
            d = ev.result.diffs["loss"]
            upto = d.abs[: ev.step + 1]
            parts.append(f"max |loss diff| so far {float(np.nanmax(upto)):.3g}")
        con.print(" | ".join(parts), markup=False, highlight=False)

    with progress_bar(f"training ({args.dtype}, {args.mode})", args.iters,
                      enabled=not quiet) as advance:
        def on_step(ev: TrainEvent) -> None:
            if ev.kind == "step":
                advance()

        result = train_side_by_side(
            net, data, iters=args.iters, batch=args.batch, lr=lr, optimizer=args.optimizer,
            mode=args.mode, dtype=dtype, seed=args.seed, frameworks=frameworks,
            record_param_diff=args.param_diff, record_grad_diff=True if args.grad_diff else None,
            shadow_steps=shadow, callbacks=[on_eval, on_step],
            threads=args.threads or None, parallel=args.parallel, eval_chunk=args.eval_chunk,
            net_name=args.net, hidden=args.hidden)
    analysis = analyse(result)
    figures, failed = [], []
    for path in args.plot:
        from harness.plots import plot_training

        try:
            figures.append(plot_training(result, path, analysis))
        except (OSError, ValueError, RuntimeError) as exc:
            failed.append(f"--plot {path}: cannot write the figure: {exc}")
    report = to_run_report(result, analysis, figures)
    if args.curves:
        from harness.train import write_curves

        try:
            report.summary["curves"] = str(write_curves(result, args.curves))
        except OSError as exc:
            failed.append(f"--curves {args.curves}: cannot write the curves: {exc}")
    # A file that cannot be written does not cost the user the other outputs of a long run:
    # the summary and every other report are still written, and the exit code is 2.
    report.output_errors = failed
    for msg in failed:
        print(f"nn-parity train: error: {msg}", file=sys.stderr)
    if quiet:  # exactly the verdict line of the reports (JSON, JUnit, Markdown), unwrapped
        print(report.verdict)
    else:
        print_summary(result, analysis, con, verbose=verbose)
        for f in figures:
            con.print(f"plot written: {f}", markup=False, highlight=False)
        if verbose:
            for r in report.results:
                con.print(str(r), markup=False, highlight=False)
    sys.stdout.flush()
    return report


def print_summary(result: TrainResult, an: Analysis, con: Any, *, verbose: bool = False) -> None:
    from rich.table import Table

    cfg = result.config
    tm = result.timings
    t = Table(title="results")
    # the accuracies are labelled with the step they were measured at: with fewer steps than
    # one epoch the last evaluation is the one at step 0 (the classic schedule)
    s0 = result.evals[0].step if result.evals else "-"
    s1 = result.evals[-1].step if result.evals else "-"
    several = len(result.evals) > 1  # one evaluation: no separate "first" column
    cols = (["framework"] + ([f"test acc (step {s0})"] if several else [])
            + [f"train acc (step {s1})", f"test acc (step {s1})",
               f"mean loss (last {min(100, cfg.iters)} steps)", "train steps (s)",
               "evaluation (s)"])
    for col in cols:
        t.add_column(col, justify="left" if col == "framework" else "right")
    for f in result.frameworks:
        first = result.evals[0].test_acc[f] if result.evals else None
        last = result.evals[-1] if result.evals else None
        t.add_row(f, *([_fmt(first, ".4f")] if several else []),
                  _fmt(last.train_acc[f] if last else None, ".4f"),
                  _fmt(last.test_acc[f] if last else None, ".4f"),
                  _fmt(float(np.mean(result.loss[f][-100:])), ".4f"),
                  f"{tm[f'{f}_step']:.2f}", f"{tm[f'{f}_eval']:.2f}")
    con.print(t)
    if len(result.evals) == 1 and result.evals[0].step == 0 and cfg.iters > 1:
        ipe = cfg.iter_per_epoch  # the classic's i % iter_per_epoch == 0: a float
        nxt = next((i for i in range(1, 10_000_001) if i % ipe == 0), None)
        con.print(f"the accuracies are of the untrained net: the only evaluation is at step 0 "
                  f"(the classic evaluates when step % {ipe:g} == 0, {ipe:g} steps being one "
                  f"epoch)" + (f"; --iters {nxt + 1} or more gives one after training"
                               if nxt is not None else ""), markup=False, highlight=False)
    extra = [f"{k} {v:.2f}" for k, v in tm.items()
             if k in ("compare", "shadow", "sync") and v > 0]
    con.print(f"wall time {tm['total']:.2f} s" + (f" (of which {', '.join(extra)} s)" if extra else "")
              + f"; threads: numpy {result.threads.get('numpy_threads')}, torch "
                f"{result.threads.get('torch_threads')}"
              + ("; the torch side ran in a worker process, in parallel (the step times overlap)"
                 if cfg.parallel else ""), markup=False, highlight=False)
    if result.both:
        f32 = cfg.dtype == "float32"
        d = Table(title=f"NumPy vs PyTorch ({cfg.mode}; {an.criterion})")
        cols = ["tensor", "max |diff|", "at step", "index", "max rel diff"]
        cols += (["noise floor numpy", "noise floor torch", "max gap/floor", "after window"]
                 if f32 else ["max diff/limit"])
        cols += ["first step exceeding"]
        for col in cols:
            d.add_column(col, justify="left" if col in ("tensor", "index") else "right")
        for name, ts in an.tensors.items():
            row = [name, _fmt(ts.max_abs), str(ts.max_abs_step), str(list(ts.max_abs_index)),
                   _fmt(ts.max_rel)]
            if f32:
                row += [_fmt(ts.floor_numpy), _fmt(ts.floor_torch), _fmt(ts.max_ratio, ".3g"),
                        _fmt(ts.unjudged_max_abs)]
            else:
                row += [_fmt(ts.max_ratio, ".3g")]
            first = "-" if ts.first_step is None else f"[bold red]{ts.first_step}[/bold red]"
            row.append(first)
            d.add_row(*row)
        con.print(d)
        if result.final_diff:
            con.print("after the last step, max |param diff|: " + ", ".join(
                f"{k} {v:.3g}" for k, v in result.final_diff.items()), markup=False,
                highlight=False)
    style = "green" if an.agree else ("bold red" if an.agree is False else "yellow")
    body = an.verdict
    notes = ([an.hint] if an.hint else []) + list(an.warnings)
    for w in notes:  # printed on their own, in yellow
        body = body.replace(" " + w, "")
    con.print(body, markup=False, highlight=False, style=style)
    for w in notes:
        con.print(w, markup=False, highlight=False, style="bold yellow")
