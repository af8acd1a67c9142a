"""``nn-parity check``: every registered layer, net and optimizer, float32 and float64,
several batch sizes (1 included) and seeds; one table row per component x tensor."""

from __future__ import annotations

import argparse
import fnmatch
import sys
import time
from collections import OrderedDict

import numpy as np

from harness.compare import ERROR, FAIL, PASS, VACUOUS, TensorResult
from harness.report import LayerReport, RunReport
from harness.suite import BATCHES, DTYPES, SEEDS, all_cases

SEVERITY = {PASS: 0, VACUOUS: 1, FAIL: 2, ERROR: 3}

# Upper bounds of the grid. Every seed repeats every check (300 checks a seed for the whole
# suite, ~3 s here) and every report keeps every run: 100 seeds is ~5 minutes.
# Many random draws are the job of `nn-parity selftest --false-alarms N`. A batch of 1024
# rows is ~100x the default's largest; larger ones only cost memory (a convolution's im2col).
MAX_SEEDS = 100
MAX_BATCH = 1024


def _ints(text: str) -> tuple[int, ...]:
    """``"3"`` or ``"1,3,8"`` (argparse ``type=``): ``--batches 1 3 8`` and ``--batches 1,3,8``
    mean the same."""
    try:
        return tuple(int(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 3 or 1,3,8, got {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--only", metavar="PATTERN", action="append",
                   help="check only components whose name matches (glob; repeatable)")
    p.add_argument("--dtype", choices=["float32", "float64", "both"], default="both",
                   help="dtype of the checks (default both)")
    p.add_argument("--seeds", type=int, default=len(SEEDS), metavar="N",
                   help=f"seeds per shape, 1 to {MAX_SEEDS} (default {len(SEEDS)})")
    p.add_argument("--batches", type=_ints, nargs="+", default=[tuple(BATCHES)], metavar="N",
                   help=f"batch sizes, 1 to {MAX_BATCH} (default 1 3 8; 1 3 8 or 1,3,8)")
    p.add_argument("--module", metavar="PATH_OR_MODULE", action="append",
                   help="import a user module (file path or dotted name) and check its layers "
                        "(only those; repeatable)")
    from harness.user_modules import parse_shape

    p.add_argument("--input-shape", metavar="DIMS", type=parse_shape, default=None,
                   help="per-sample input shape (e.g. 9 or 3,8,8; the batch is prepended) for "
                        "--module layers whose registration gives no input_shape")
    p.add_argument("--numerical", action="store_true",
                   help="also check every layer's backprop and its twin's autograd against "
                        "central differences (float64; nets and optimizers: PyTorch only)")
    p.add_argument("--list", action="store_true", help="list the components and exit")


def run_suite(cases, dtypes, seeds, batches, progress=None, numerical: bool = False) -> RunReport:
    """Every case x dtype x batch x seed. A case that cannot be checked at all (a CheckError:
    a registration to fix, a layer that cannot be built) is one ERROR row with the message,
    listed in ``summary["setup_errors"]``; the other cases still run (the command then exits
    2 after writing its reports)."""
    from harness.check import CheckError

    report = RunReport(command="check")
    setup_errors: dict[str, str] = {}
    for case in cases:
        opts = {"numerical": True} if numerical and case.numerical else {}
        runs = [(np.dtype(d), b, s) for d in dtypes for b in batches for s in range(seeds)]
        for i, (dtype, batch, seed) in enumerate(runs):
            start = time.perf_counter()
            try:
                lr = _run_case(case, dtype, seed, batch, opts)
            except CheckError as exc:
                setup_errors[case.name] = str(exc)
                lr = LayerReport(layer=case.name, dtype=dtype.name, seed=seed, results=[
                    TensorResult(layer=case.name, tensor="setup", status=ERROR, dtype=dtype.name,
                                 message=str(exc))])
            lr.elapsed = time.perf_counter() - start
            lr.info.setdefault("component", case.name)
            lr.info.setdefault("group", case.group)
            lr.info.setdefault("batch", batch)
            report.layers.append(lr)
            if progress:
                progress()
            if case.name in setup_errors:
                if progress:
                    for _ in range(len(runs) - i - 1):
                        progress()
                break
    report.summary = {"dtypes": [np.dtype(d).name for d in dtypes], "seeds": seeds,
                      "batches": list(batches), "components": [c.name for c in cases],
                      "checks": len(report.layers)}
    if numerical:
        report.summary["numerical"] = [c.name for c in cases if c.numerical]
    if setup_errors:
        report.summary["setup_errors"] = setup_errors
    return report


def _run_case(case, dtype: np.dtype, seed: int, batch: int, opts: dict):
    """``case.run(...)``; an exception that escapes it (a CheckError says what to fix; anything
    else is a check that could not run) is a CheckError naming the case, dtype, batch and seed,
    so the command exits 2 with a message, never with a raw traceback."""
    from harness.check import CheckError

    where = f"{case.name} [{dtype.name}, batch {batch}, seed {seed}]"
    try:
        return case.run(dtype, seed, batch, **opts)
    except CheckError:
        raise
    except Exception as exc:
        import traceback

        tb = traceback.extract_tb(exc.__traceback__)
        at = f" (at {tb[-1].filename}:{tb[-1].lineno})" if tb else ""
        raise CheckError(f"{where}: the check could not run: {type(exc).__name__}: {exc}{at}") from exc


def _judge_vacuous_runs(report: RunReport) -> None:
    """A run that proves nothing (VACUOUS: the drawn input left a ReLU's side unexercised,
    BatchNorm on one row, a saturated softmax) does not fail the command when another run of
    the same component and dtype passes, as in the pytest plugin: the inputs were the tool's
    choice, not the user's. FAIL and ERROR always fail; a component x dtype with no passing
    run at all fails. The covered runs are listed in ``summary["vacuous_covered"]``."""
    runs: dict[tuple[str, str], list[LayerReport]] = {}
    for lr in report.layers:
        runs.setdefault((lr.info.get("component", lr.layer), lr.dtype), []).append(lr)
    covered = []
    ok = True
    for (component, dtype), group in runs.items():
        statuses = {lr.status for lr in group}
        if statuses & {FAIL, ERROR} or PASS not in statuses:
            ok = False
        elif VACUOUS in statuses:
            for lr in group:
                if lr.status == VACUOUS:
                    lr.info["vacuous_covered"] = True  # reports: skipped, not a failure
                    covered.append(f"{component} [{dtype}, batch {lr.info.get('batch')}, "
                                   f"seed {lr.seed}]")
    if covered:
        report.summary["vacuous_covered"] = covered
    report.ok_override = ok and bool(report.layers)


def aggregate(report: RunReport) -> list[dict]:
    """One row per component x dtype x tensor: worst status and largest differences."""
    rows: OrderedDict[tuple, dict] = OrderedDict()
    for lr in report.layers:
        comp = lr.info.get("component", lr.layer)
        for r in lr.results:
            tensor = r.tensor if r.layer in (lr.layer, comp) else f"{r.layer}.{r.tensor}"
            key = (comp, lr.dtype, tensor)
            row = rows.setdefault(key, {"component": comp, "dtype": lr.dtype, "tensor": tensor,
                                        "max_abs": 0.0, "max_rel": 0.0, "status": PASS,
                                        "tolerance": r.tolerance_text, "runs": 0, "detail": None})
            row["runs"] += 1
            row["max_abs"] = max(row["max_abs"], r.max_abs)
            row["max_rel"] = max(row["max_rel"], r.max_rel)
            if SEVERITY.get(r.status, 3) > SEVERITY[row["status"]]:
                row["status"], row["detail"] = r.status, r
    return list(rows.values())


def print_table(rows: list[dict], report: RunReport, args: argparse.Namespace) -> None:
    """``--quiet``: the verdict line only. Default: the table, the full report of every row
    that does not pass, the verdict. ``--verbose``: also every passing row and every tensor's
    report, run by run."""
    from rich.table import Table

    from harness.terminal import console, detail_text, print_text, status_text, table_diff_cells

    con = console()
    if getattr(args, "quiet", False):
        print_text(con, verdict_line(report))
        return
    verbose = getattr(args, "verbose", False)
    table = Table(title=f"nn-parity {report.command}: scratch vs PyTorch", show_lines=False)
    for col in ("component", "dtype", "tensor", "max abs diff", "max rel diff", "tolerance",
                "result"):
        table.add_column(col, justify="right" if "diff" in col else "left")
    for row in rows:
        if row["tensor"].endswith("unchanged") and row["status"] == PASS and not verbose:
            continue
        d_abs, d_rel = table_diff_cells(row)
        table.add_row(row["component"], row["dtype"], row["tensor"], d_abs, d_rel,
                      row["tolerance"].split(" (=")[0], status_text(row["status"]))
    con.print(table)
    if verbose:
        for lr in report.layers:
            print_text(con, str(lr))
    else:
        for row in rows:
            if row["detail"] is not None:
                print_text(con, detail_text(row["detail"], report))
    print_text(con, verdict_line(report), style="bold green" if report.ok else "bold red")


def _print_run(notes: dict[str, list[str]], not_checked: list[str], rows: list[dict],
               report: RunReport, args: argparse.Namespace) -> None:
    """The notes (a class found but not checked is a warning on stderr, even with -q), then
    the table and the verdict."""
    for name, lines in notes.items():
        for line in lines:
            if name in not_checked:
                print(f"warning: {name}: {line}", file=sys.stderr)
            elif not args.quiet:
                print(f"note: {name}: {line}")
    print_table(rows, report, args)
    sys.stdout.flush()


def verdict_line(report: RunReport) -> str:
    from harness.reports import verdict_line as line

    return line(report)


def _check_arguments(args: argparse.Namespace) -> None:
    from harness.check import CheckError

    batches = [b for part in args.batches for b in (part if isinstance(part, tuple) else (part,))]
    args.batches = list(dict.fromkeys(batches))  # --batches 3 3: once (JUnit names stay unique)
    if args.list:
        from harness.reports import output_paths

        flags = sorted({flag for flag, _ in output_paths(args)})
        if flags:
            raise CheckError(f"--list prints the components and writes no report: drop "
                             f"{', '.join(flags)}")
    if args.seeds < 1:
        raise CheckError(f"--seeds must be >= 1, got {args.seeds} (nothing would be checked)")
    if args.seeds > MAX_SEEDS:
        raise CheckError(f"--seeds must be <= {MAX_SEEDS}, got {args.seeds} (each seed repeats "
                         f"every check; for many random draws use `nn-parity selftest "
                         f"--false-alarms N`)")
    if any(b < 1 for b in args.batches):
        raise CheckError(f"--batches must be positive integers, got {args.batches}")
    if any(b > MAX_BATCH for b in args.batches):
        raise CheckError(f"--batches must be <= {MAX_BATCH}, got {max(args.batches)} (a larger "
                         f"batch finds no more bugs and may not fit in memory)")
    if getattr(args, "input_shape", None) is not None and not args.module:
        raise CheckError("--input-shape applies to --module layers only (the built-in "
                         "components have their own shapes)")


def run(args: argparse.Namespace) -> RunReport:
    _check_arguments(args)
    if args.module:  # the user's layers only
        from harness.user_modules import load_user_modules, user_cases

        load_user_modules(args.module, input_shape=getattr(args, "input_shape", None))
        cases = user_cases()
    else:
        cases = all_cases()
    if args.only:
        unmatched = [p for p in args.only if not any(fnmatch.fnmatch(c.name, p) for c in cases)]
        if unmatched:  # a typo in one of several patterns must not pass silently
            from harness.check import CheckError

            which = "no component matches" if len(unmatched) == len(args.only) else (
                "no component matches the pattern(s)")
            near = sorted({c.name for p in unmatched for c in cases
                           if fnmatch.fnmatch(c.name.lower(), p.lower())})[:5]
            prefixed = sorted({c.name for p in unmatched for c in cases
                               if fnmatch.fnmatch(c.name, f"*.{p}")})[:5]
            hint = (f"; matching is case-sensitive: did you mean {near}?" if near else
                    f"; a --module's components are named <module>.<Class>: did you mean "
                    f"{prefixed}, or the pattern '*.{unmatched[0]}'?" if prefixed else "")
            raise CheckError(f"{which} {unmatched} (see --list){hint}")
        cases = [c for c in cases if any(fnmatch.fnmatch(c.name, p) for p in args.only)]
    if args.list:
        for c in cases:
            print(f"{c.group:10s} {c.name}")
        return 0  # type: ignore[return-value]
    numerical = bool(getattr(args, "numerical", False))
    if numerical and not any(c.numerical for c in cases):
        from harness.check import CheckError

        raise CheckError("--numerical applies to layers, and none of the selected components "
                         "is a layer (nets and optimizers are checked against PyTorch only)")
    dtypes = DTYPES if args.dtype == "both" else (np.dtype(args.dtype),)
    from harness.terminal import progress_bar

    total = len(cases) * len(dtypes) * len(args.batches) * args.seeds
    with progress_bar("checking", total, enabled=not args.quiet) as advance:
        report = run_suite(cases, dtypes, args.seeds, args.batches, progress=advance,
                           numerical=numerical)
    _judge_vacuous_runs(report)
    rows = aggregate(report)
    report.summary["rows"] = [
        {k: (v if k != "detail" else (str(v) if v is not None else None)) for k, v in r.items()}
        for r in rows]
    notes: dict[str, list[str]] = {}
    if args.module:
        from harness.user_modules import user_notes

        notes = user_notes()
    for lr in report.layers:  # what a check could not compare, or let pass with a caveat
        for line in lr.info.get("notes", ()):
            name = lr.info.get("component", lr.layer)
            if line not in notes.setdefault(name, []):
                notes[name].append(line)
    notes = {k: v for k, v in notes.items() if v}
    not_checked: list[str] = []
    if notes:
        report.summary["notes"] = notes
        not_checked = sorted(n for n, lines in notes.items()
                             if any("so it was not checked" in line for line in lines))
        if not_checked:  # classes of a --module it found but could not check: even with -q
            report.summary["not_checked"] = not_checked
    try:
        _print_run(notes, not_checked, rows, report, args)
    except BrokenPipeError:  # `nn-parity check --junit-xml j.xml | head`: the run is done,
        from harness.cli import silence_stdout  # its reports are still written

        silence_stdout()
        report.output_closed = True
    errors = report.summary.get("setup_errors", {})
    for name, message in errors.items():
        if any(name.startswith(f"{other} (") for other in errors):
            continue  # a setting of a component that fails the same way: told once
        print(f"nn-parity check: error: {message}" if name in message else
              f"nn-parity check: error: {name}: {message}", file=sys.stderr)
    return report
