"""``nn-parity selftest``: prove the harness catches injected bugs and stays quiet on correct code.

1. Mutation test: every mutant of :data:`harness.mutants.CATALOGUE` (a realistic bug in a copy
   of a correct component) must be caught by its check, and the same check on the correct
   component must PASS. Printed: one row per mutant (what caught it, how big the difference
   was) and the kill rate.
2. False alarms: every correct component, ``--false-alarms N`` random seeds and shapes per
   dtype (default 1000), must PASS every time (:mod:`harness.false_alarms`).

Exit status 1 if a mutant survives, a correct component fails, or any false alarm occurs.
"""

from __future__ import annotations

import argparse
import fnmatch
import math
import time

from harness.compare import ERROR, FAIL, PASS, VACUOUS, TensorResult, default_tolerance
from harness.false_alarms import DTYPES, Stats, iter_false_alarms
from harness.mutants import BROKEN, CRASHED, KILLED, SKIPPED, SURVIVED, Outcome, run_mutant, select
from harness.report import LayerReport, RunReport

DEFAULT_FALSE_ALARMS = 1000
# Random seeds and shapes per correct component and dtype, at most: the default 1,000 takes
# 3-4 minutes here (docs/selftest.md), so 10,000 is about half an hour.
MAX_FALSE_ALARMS = 10_000


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--only", metavar="PATTERN", action="append",
                   help="run only the mutants whose name matches (glob; repeatable)")
    p.add_argument("--false-alarms", type=int, default=DEFAULT_FALSE_ALARMS, metavar="N",
                   help="random seeds and shapes per correct component and dtype "
                        f"(0 to {MAX_FALSE_ALARMS}; default {DEFAULT_FALSE_ALARMS}; 0 skips the "
                        "false-alarm run)")
    p.add_argument("--false-alarms-only", metavar="PATTERN", action="append",
                   help="measure false alarms only for components matching (glob; repeatable)")
    p.add_argument("--no-mutants", action="store_true", help="skip the mutation test")
    p.add_argument("--list", action="store_true", help="list the mutants and exit")
    p.add_argument("--tables", metavar="PATH",
                   help="write the kill table and the false-alarm table as Markdown (docs)")


# ---------------------------------------------------------------------------------------
# Outcomes as report rows (generic writers: JSON, JUnit, HTML, Markdown)


def mutant_report(o: Outcome) -> LayerReport:
    """One mutant as a LayerReport whose single result PASSes when the mutant was killed."""
    m = o.mutant
    status = {KILLED: PASS, SKIPPED: VACUOUS}.get(o.status, FAIL)
    tensor = f"killed by {o.caught_by}" if o.status == KILLED else o.status.lower()
    r = TensorResult(layer=m.name, tensor=tensor, status=status, message=o.detail or o.difference)
    hit = o.report and next((x for x in o.report.results if x.status in (FAIL, ERROR)), None)
    if hit is not None:
        r.max_abs, r.max_rel, r.dtype, r.shape = hit.max_abs, hit.max_rel, hit.dtype, hit.shape
        r.total, r.max_abs_index = hit.total, hit.max_abs_index
    lr = LayerReport(layer=m.name, dtype=o.report.dtype if o.report else "", results=[r])
    lr.info.update(component=f"mutant {m.name}", group="mutant", target=m.target, check=m.check,
                   expected=m.expect, difference=o.difference, seconds=round(o.seconds, 3))
    return lr


def baseline_report(o: Outcome) -> LayerReport | None:
    if o.baseline is None:
        return None
    o.baseline.info.update(component=f"correct {o.mutant.target}", group="baseline",
                           mutant=o.mutant.name)
    return o.baseline


def false_alarm_report(st: Stats) -> LayerReport:
    bad = st.counts[FAIL] + st.counts[ERROR]
    status = FAIL if bad else (VACUOUS if st.counts[VACUOUS] else PASS)
    r = TensorResult(layer=st.component, tensor=f"{st.runs} random checks", status=status,
                     dtype=st.dtype, max_abs=st.max_abs, max_rel=st.max_rel, mismatched=bad,
                     total=st.runs, message="; ".join(st.examples))
    r.extra.update(worst_ratio=st.worst_ratio, worst_tensor=st.worst_tensor,
                   vacuous=st.counts[VACUOUS])
    lr = LayerReport(layer=st.component, dtype=st.dtype, results=[r])
    lr.info.update(component=f"false alarms {st.component}", group="false-alarms",
                   runs=st.runs, fails=bad, vacuous=st.counts[VACUOUS],
                   margin=None if math.isinf(st.margin) else round(st.margin, 1))
    return lr


# ---------------------------------------------------------------------------------------
# Terminal output


def print_mutants(outcomes: list[Outcome], quiet: bool) -> None:
    from rich.table import Table

    from harness.terminal import console

    con = console()
    if quiet:
        return
    table = Table(title="nn-parity selftest: injected bugs (mutants)")
    for col in ("mutant", "component", "caught by", "difference", "result"):
        table.add_column(col)
    style = {KILLED: "green", SURVIVED: "bold red", BROKEN: "bold magenta", CRASHED: "bold magenta",
             SKIPPED: "yellow"}
    for o in outcomes:
        table.add_row(o.mutant.name, o.mutant.target.split(":")[-1], o.caught_by or "-",
                      o.difference or o.detail, f"[{style[o.status]}]{o.status}[/]")
    con.print(table)
    for o in outcomes:
        if o.status != KILLED or not o.expected_hit:
            con.print(f"{o.mutant.name}: {o.status}: {o.detail}", markup=False, highlight=False)


def print_false_alarms(stats: list[Stats], quiet: bool) -> None:
    from rich.table import Table

    from harness.terminal import console

    if quiet or not stats:
        return
    table = Table(title="false alarms: correct components over random seeds and shapes")
    for col in ("component", "dtype", "runs", "FAIL", "VACUOUS", "max abs diff", "max rel diff",
                "worst / tolerance", "margin", "seconds"):
        table.add_column(col, justify="left" if col in ("component", "dtype") else "right")
    for st in stats:
        table.add_row(st.component, st.dtype, str(st.runs), str(st.counts[FAIL] + st.counts[ERROR]),
                      str(st.counts[VACUOUS]), f"{st.max_abs:.2e}", f"{st.max_rel:.2e}",
                      f"{st.worst_ratio:.2e}", "inf" if math.isinf(st.margin) else f"{st.margin:.0f}x",
                      f"{st.seconds:.1f}")
    console().print(table)
    for st in stats:
        for ex in st.examples:
            console().print(f"{st.component} {st.dtype}: {ex}", markup=False, highlight=False)


# ---------------------------------------------------------------------------------------


def run_selftest(patterns: list[str] | None = None, false_alarms: int = DEFAULT_FALSE_ALARMS,
                 fa_patterns: list[str] | None = None, mutants: bool = True,
                 progress: bool = True, quiet: bool = False) -> RunReport:
    from harness.terminal import progress_bar

    t0 = time.perf_counter()
    report = RunReport(command="selftest")
    outcomes: list[Outcome] = []
    if mutants:
        chosen = select(patterns)
        with progress_bar("mutants", len(chosen), enabled=progress) as advance:
            for m in chosen:
                outcomes.append(run_mutant(m))
                advance()
        print_mutants(outcomes, quiet)
    t_mut = time.perf_counter() - t0
    stats: list[Stats] = []
    if false_alarms > 0:
        from harness.false_alarms import components

        names = components()
        with progress_bar("false alarms", len(names) * len(DTYPES), enabled=progress) as advance:
            for st in iter_false_alarms(false_alarms, DTYPES, fa_patterns):
                stats.append(st)
                advance()
        print_false_alarms(stats, quiet)
    for o in outcomes:
        report.layers.append(mutant_report(o))
        base = baseline_report(o)
        if base is not None:
            report.layers.append(base)
    report.layers.extend(false_alarm_report(st) for st in stats)

    judged = [o for o in outcomes if o.status != SKIPPED]
    killed = sum(o.status == KILLED for o in judged)
    per_dtype = {d.name: {"checks": sum(s.runs for s in stats if s.dtype == d.name),
                          "false_alarms": sum(s.counts[FAIL] + s.counts[ERROR] for s in stats
                                              if s.dtype == d.name),
                          "vacuous": sum(s.counts[VACUOUS] for s in stats if s.dtype == d.name),
                          "tolerance": default_tolerance(d).describe()} for d in DTYPES}
    report.summary = {
        "mutants": len(judged),
        "killed": killed,
        "kill_rate": f"{100.0 * killed / len(judged):.1f}%" if judged else "n/a",
        "skipped": [o.mutant.name for o in outcomes if o.status == SKIPPED],
        "baselines_failing": [o.mutant.name for o in outcomes if o.status == BROKEN],
        "checks_crashed": [o.mutant.name for o in outcomes if o.status == CRASHED],
        "false_alarm_seeds_per_dtype": false_alarms,
        "false_alarms": per_dtype,
        "seconds_mutants": round(t_mut, 1),
        "seconds_total": round(time.perf_counter() - t0, 1),
        "mutant_table": [o.row() for o in outcomes],
        "false_alarm_table": [st.row() for st in stats],
    }
    return report


def verdict(report: RunReport) -> str:
    s = report.summary
    parts = []
    if s["mutants"]:
        parts.append(f"{s['killed']}/{s['mutants']} mutants killed ({s['kill_rate']})")
    if s["false_alarm_seeds_per_dtype"]:
        fa = s["false_alarms"]
        parts.append("false alarms " + ", ".join(
            f"{d} {v['false_alarms']}/{v['checks']}" for d, v in fa.items()))
    if s["baselines_failing"]:
        parts.append(f"correct components failing: {s['baselines_failing']}")
    if s["checks_crashed"]:
        parts.append(f"checks crashed on: {s['checks_crashed']}")
    if s["skipped"]:
        parts.append(f"skipped (component missing): {s['skipped']}")
    word = "PASS" if report.ok else "FAIL"
    return f"{word}: " + "; ".join(parts) + f" ({s['seconds_total']:.0f} s)"


def markdown_tables(report: RunReport) -> str:
    """The kill table and the false-alarm table in Markdown (docs/selftest.md holds one)."""
    s = report.summary
    measured = {d: v for d, v in s["false_alarms"].items() if v["checks"]}
    alarms = (", ".join(f"{d} **{v['false_alarms']}** in {v['checks']} checks"
                        for d, v in measured.items())
              if measured else "not measured (--false-alarms 0)")
    out = [f"Kill rate: **{s['kill_rate']}** ({s['killed']}/{s['mutants']}); false alarms: "
           + alarms
           + f"; {s['seconds_total']:.0f} s in all ({s['seconds_mutants']:.0f} s for the mutants).",
           "", "| mutant | component | caught by | difference | result |", "|---|---|---|---|---|"]
    for r in s["mutant_table"]:
        out.append(f"| `{r['mutant']}` | {r['component'].split(':')[-1]} | {r['caught_by']} | "
                   f"{r['difference'].replace('|', '/')} | {r['status']} |")
    if s["false_alarm_table"]:
        out += ["", "| component | dtype | runs | FAIL | VACUOUS | max abs diff | max rel diff | "
                "worst diff / allowed | margin | worst tensor |",
                "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in s["false_alarm_table"]:
            margin = "∞" if r["margin"] is None else f"{r['margin']:.0f}x"
            out.append(f"| {r['component']} | {r['dtype']} | {r['runs']} | {r['fail'] + r['error']} "
                       f"| {r['vacuous']} | {r['max_abs']:.2e} | {r['max_rel']:.2e} | "
                       f"{r['worst_ratio']:.2e} | {margin} | {r['worst_tensor'] or '-'} |")
    return "\n".join(out) + "\n"


def run(args: argparse.Namespace) -> RunReport | int:
    if args.list:
        from harness.reports import output_paths

        flags = sorted({flag for flag, _ in output_paths(args)})
        if flags:
            from harness.check import CheckError

            raise CheckError(f"--list prints the mutants and writes no report: drop "
                             f"{', '.join(flags)}")
        for m in select(args.only):
            print(f"{m.name:34s} {m.check:12s} {m.target:42s} {m.description}")
        return 0
    if args.only and not select(args.only):
        from harness.check import CheckError

        raise CheckError(f"no mutant matches {args.only}")
    from harness.check import CheckError

    if args.false_alarms < 0:
        raise CheckError(f"--false-alarms must be >= 0, got {args.false_alarms}")
    if args.false_alarms > MAX_FALSE_ALARMS:
        raise CheckError(f"--false-alarms must be <= {MAX_FALSE_ALARMS}, got {args.false_alarms} "
                         f"(the default 1000 takes minutes; {MAX_FALSE_ALARMS} about half an hour)")
    if args.no_mutants and args.false_alarms == 0:
        raise CheckError("nothing to run: --no-mutants and --false-alarms 0")
    if args.no_mutants and args.only:  # an option that would be ignored is a mistake
        raise CheckError("--only selects mutants, and --no-mutants runs none: drop one of them")
    if args.false_alarms == 0 and args.false_alarms_only:
        raise CheckError("--false-alarms-only selects components of the false-alarm run, and "
                         "--false-alarms 0 skips it: drop one of them")
    if args.false_alarms and args.false_alarms_only:
        from harness.false_alarms import components

        names = [n for n in components()
                 if any(fnmatch.fnmatch(n, p) for p in args.false_alarms_only)]
        if not names:
            raise CheckError(f"no component matches --false-alarms-only {args.false_alarms_only}"
                             f" (components: {', '.join(components())})")
    report = run_selftest(args.only, args.false_alarms, args.false_alarms_only,
                          mutants=not args.no_mutants, quiet=args.quiet)
    from harness.terminal import console

    report.verdict = verdict(report)  # the JSON/JUnit/Markdown verdict is this same line
    console().print(report.verdict, markup=False, highlight=False)
    if args.tables:
        from harness.reports import atomic_write_text

        atomic_write_text(args.tables, markdown_tables(report))
    return report


def main(argv: list[str] | None = None) -> int:
    from harness.cli import main as cli_main

    return cli_main(["selftest", *(argv or [])])


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

