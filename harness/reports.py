"""Writers for a :class:`~harness.report.RunReport`: JSON, JUnit XML, HTML and Markdown.

Every writer is generic over ``RunReport`` (``check``, ``train``, ``selftest`` all produce one):
``layers`` become rows/testcases, ``summary`` becomes a key/value table, ``figures`` (PNG paths)
are embedded (HTML) or listed (Markdown). The JSON schema is documented in ``docs/reports.md``
and versioned by :data:`SCHEMA_VERSION`.

Files are written atomically (a temp file beside the target, then a rename), so a failed or
interrupted run never leaves a half-written report nor clobbers the previous one.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import math
import os
import re
import socket
import stat
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.compare import ERROR, FAIL, PASS, VACUOUS, TensorResult
from harness.report import LayerReport, RunReport, unmeasured

SCHEMA_VERSION = 1
TOOL = "nn-parity"
EXIT_OK, EXIT_MISMATCH, EXIT_USAGE = 0, 1, 2
JUNIT_XSD = Path(__file__).with_name("junit.xsd")

# The documented keys of one tensor result in the JSON report (docs/reports.md).
RESULT_KEYS = (
    "layer", "tensor", "status", "dtype", "shape", "max_abs", "max_abs_index", "max_rel",
    "max_rel_index", "mismatched", "total", "rtol", "atol", "worst_index", "actual_at_worst",
    "expected_at_worst", "allowed_at_worst", "tolerance_text", "message", "extra",
)


# ---------------------------------------------------------------------------------------
# Atomic writes


def _atomic_write(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` without ever leaving it half-written.

    A regular file (or a new one) is written to a temp file beside it, then renamed over it.
    A symbolic link is followed: the file it points at is replaced, the link stays. A device,
    FIFO or socket (``/dev/null``, ``/dev/stdout``) is written into directly: renaming a file
    over it would replace the device itself.
    """
    path = Path(path)
    try:
        st = os.stat(path)  # follows links
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise OSError(e.errno, f"cannot write {path}: {e.strerror}") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(f"{path} is a directory")
    if st is not None and not stat.S_ISREG(st.st_mode):
        with open(path, "wb") as f:
            f.write(data)
        return path
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    target.parent.mkdir(parents=True, exist_ok=True)
    # the temp name stays short: a report named near the file system's limit still fits
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name[:40]}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:  # mkstemp makes 0600 files: give the report the mode a plain open() would
            mode = stat.S_IMODE(st.st_mode) if st is not None else 0o666 & ~_umask()
            os.chmod(tmp, mode)
        except OSError:
            pass
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to a temp file beside ``path``, then rename: never a half-written file."""
    return _atomic_write(path, text.encode("utf-8"))


# ---------------------------------------------------------------------------------------
# Shared helpers


def jsonable(obj: Any) -> Any:
    """``obj`` as strict JSON values: numpy scalars/arrays unwrapped, non-finite floats as the
    strings ``"inf"``, ``"-inf"``, ``"nan"``, tuples as lists, paths and the rest as strings."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else str(obj)
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy scalar or array
        return jsonable(obj.tolist())
    if isinstance(obj, TensorResult):
        return result_dict(obj)
    if isinstance(obj, LayerReport):
        return layer_dict(obj)
    return str(obj)


def result_dict(r: TensorResult, lr: LayerReport | None = None) -> dict[str, Any]:
    d = r.to_dict()
    out = {k: jsonable(d.get(k)) for k in RESULT_KEYS}
    out["unmeasured"] = unmeasured(r)
    out["name"] = r.name
    out["text"] = lr.result_text(r) if lr is not None else str(r)
    return out


def run_info(lr: LayerReport) -> dict[str, Any]:
    """``lr.info`` with ``batch`` the batch size the check ran at; where that differs from the
    one the run asked for (a layer's minimum batch), the asked one as ``batch_requested``."""
    info = dict(lr.info)
    asked, ran = lr.batch_requested, lr.batch
    if asked is not None and ran is not None and ran != asked:
        info["batch"] = ran
        info["batch_requested"] = asked
    return info


def layer_dict(lr: LayerReport) -> dict[str, Any]:
    first = lr.first_divergence
    return {
        "layer": lr.layer,
        "dtype": lr.dtype,
        "input_shape": jsonable(lr.input_shape),
        "seed": lr.seed,
        "status": lr.status,
        "ok": lr.ok,
        "first_divergence": first.name if first else None,
        "info": jsonable(run_info(lr)),
        "elapsed": jsonable(layer_elapsed(lr)),
        "results": [result_dict(r, lr) for r in lr.results],
        "text": str(lr),
    }


def verdict_line(report: RunReport) -> str:
    """``PASS: 96 checks, 624 tensors passed, 0 failed, 0 vacuous, 0 errors``, or the
    command's own verdict (``RunReport.verdict``) where it sets one: the same line the
    terminal printed."""
    if report.verdict:
        return report.verdict
    c = report.counts()
    word = "ERROR" if report.summary.get("setup_errors") else "PASS" if report.ok else "FAIL"
    if not report.layers:
        return f"{word}: {report.command}"
    covered = len(report.summary.get("vacuous_covered", ()))
    skipped = report.summary.get("not_checked", ())
    unchecked = (f"; not checked (no PyTorch twin): {', '.join(skipped)}" if skipped else "")
    return (f"{word}: {_count(len(report.layers), 'check')}, {_count(c[PASS], 'tensor')} passed, "
            f"{c[FAIL]} failed, {c[VACUOUS]} vacuous, {_count(c[ERROR], 'error')}" + (
                f" ({covered} run{'s' if covered > 1 else ''} proving nothing, each beside a "
                f"passing run of the same component and dtype)" if covered and report.ok else "")
            + unchecked)


def _count(n: int, noun: str) -> str:
    """``1 check``, ``2 checks``, ``0 errors``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def tool_version() -> str | None:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover
        return None
    try:
        return version(TOOL)
    except PackageNotFoundError:
        return None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def component_of(lr: LayerReport) -> str:
    return str(lr.info.get("component", lr.layer))


def run_label(lr: LayerReport) -> str:
    """What distinguishes this run of a component: ``batch=3, seed=1`` (plus any scalar info)."""
    parts = []
    info = run_info(lr)
    for k, v in info.items():
        if k in ("component", "group", "batch_requested", "elapsed") or isinstance(
                v, (dict, list, tuple)):  # elapsed: a time is no name for a run
            continue
        if k == "batch" and "batch_requested" in info:
            v = f"{v} (requested {info['batch_requested']})"
        parts.append(f"{k}={v}")
    if lr.seed is not None:
        parts.append(f"seed={lr.seed}")
    if lr.input_shape and "batch" not in lr.info:
        parts.append(f"input={tuple(lr.input_shape)}")
    return ", ".join(parts)


def worst(lr: LayerReport) -> tuple[float, float]:
    finite = [r for r in lr.results if r.total]
    return (max((r.max_abs for r in finite), default=0.0),
            max((r.max_rel for r in finite), default=0.0))


NO_DIFF = "\u2014"  # an em dash: no difference was computed


def unmeasured_label(why: str | None) -> str | None:
    """The table cell for a difference that was not measured (``unmeasured``): ``shape``,
    ``dtype`` or an em dash (an error, nothing compared); None for a measured one."""
    if why is None:
        return None
    return why if why in ("shape", "dtype") else NO_DIFF


def diff_cells(r: TensorResult, digits: int = 3) -> tuple[str, str]:
    """A result's max abs and max rel diff as table cells: the numbers, or ``shape``/
    ``dtype``/an em dash where no difference was computed (never a misleading 0)."""
    label = unmeasured_label(unmeasured(r))
    if label is not None:
        return label, label
    return fmt_num(r.max_abs, digits), fmt_num(r.max_rel, digits)


def worst_cells(lr: LayerReport, digits: int = 3) -> tuple[str, str]:
    """The largest max abs/rel diff over a run's measured results, as cells. Where nothing
    was measured, or the tensors that do not pass were not (a passing tensor's tiny difference
    beside a shape mismatch would hide it), the reason: ``shape``, ``dtype`` or an em dash."""
    bad = [r for r in lr.results if r.status != PASS]
    whys = [why for r in bad if (why := unmeasured(r)) is not None]
    measured = [r for r in lr.results if unmeasured(r) is None and (r.total or r.status == PASS)]
    if measured and not (bad and len(whys) == len(bad)):
        return (fmt_num(max(r.max_abs for r in measured), digits),
                fmt_num(max(r.max_rel for r in measured), digits))
    label = unmeasured_label(whys[0]) if whys else NO_DIFF
    return label or NO_DIFF, label or NO_DIFF


def row_unmeasured(row: dict[str, Any]) -> str | None:
    """For one row of check's table (``summary["rows"]``, ``harness.check_command.aggregate``):
    why its largest differences are not measured, or None. A row's numbers are the largest
    over its runs; they are unmeasured when they are 0 and its worst run (``detail``: a
    TensorResult, or its text in the JSON) computed none."""
    if row.get("status") in (None, PASS) or row.get("max_abs") or row.get("max_rel"):
        return None
    detail = row.get("detail")
    if isinstance(detail, TensorResult):
        return unmeasured(detail)
    if not isinstance(detail, str):
        return None
    if row.get("status") == ERROR:
        return "error"
    text = detail.lower()
    if "shape mismatch" in text or "changed the shape" in text:
        return "shape"
    if "dtype mismatch" in text or "non-numeric dtype" in text:
        return "dtype"
    if "mismatched elements:" in text or "proves nothing" in text:
        return None  # measured (a real 0: both sides all zeros or constant)
    return "not compared"


def fmt_num(v: Any, digits: int = 3) -> str:
    """Floats to ``digits`` significant digits (scientific when tiny or huge); rest as str."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v == 0 or 1e-3 <= abs(v) < 1e6:
            return f"{v:.{digits}g}"
        return f"{v:.{max(digits - 1, 1)}e}"
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
        return fmt_num(v.item(), digits)
    return str(v)


# ---------------------------------------------------------------------------------------
# JSON


def to_json_dict(report: RunReport) -> dict[str, Any]:
    """The JSON document (schema ``SCHEMA_VERSION``; keys documented in docs/reports.md)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": TOOL,
        "tool_version": tool_version(),
        "command": report.command,
        "created": _now(),
        "ok": report.ok,
        "exit_code": (EXIT_USAGE if report.output_errors or report.summary.get("setup_errors")
                      else EXIT_OK if report.ok else EXIT_MISMATCH),
        "verdict": verdict_line(report),
        "output_errors": list(report.output_errors),
        "counts": report.counts(),
        "summary": jsonable(report.summary),
        "layers": [layer_dict(lr) for lr in report.layers],
        "figures": [str(p) for p in report.figures],
    }


def to_json(report: RunReport) -> str:
    return json.dumps(to_json_dict(report), indent=2, allow_nan=False) + "\n"


def write_json(report: RunReport, path: str | os.PathLike) -> Path:
    return atomic_write_text(path, to_json(report))


# ---------------------------------------------------------------------------------------
# JUnit XML

# XML 1.0 forbids most control characters, even escaped.
_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _x(s: Any) -> str:
    return _XML_BAD.sub("?", str(s))


def _ident(s: str) -> str:
    """A classname segment: runs of anything but letters, digits, ``_-.`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9_.\-]+", "_", s).strip("_.") or "_"


def _first_line(r: TensorResult) -> str:
    lines = str(r).splitlines()
    detail = r.message or (lines[1].strip() if len(lines) > 1 else "")
    return f"{r.name}: {r.status}" + (f": {detail}" if detail else "")


def layer_elapsed(lr: LayerReport) -> float | None:
    """The run's wall-clock seconds: ``lr.elapsed``, else ``info["elapsed"]`` or
    ``info["seconds"]`` (selftest); None when the run was not timed."""
    for value in (lr.elapsed, lr.info.get("elapsed"), lr.info.get("seconds")):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return max(float(value), 0.0)
    return None


def layer_seconds(lr: LayerReport) -> float:
    """How long the run took (``layer_elapsed``), 0 when it was not timed."""
    return layer_elapsed(lr) or 0.0


def case_seconds(lr: LayerReport) -> float:
    """One testcase's share of its run's time: a run's tensors are checked together, so its
    time is split evenly between them (the suite's and the file's totals stay the run times)."""
    return layer_seconds(lr) / max(len(lr.results), 1)


def _secs(v: float) -> str:
    return f"{v:.3f}"


def junit_suites(report: RunReport) -> OrderedDict[tuple[str, str], list[tuple[LayerReport, TensorResult]]]:
    suites: OrderedDict[tuple[str, str], list[tuple[LayerReport, TensorResult]]] = OrderedDict()
    for lr in report.layers:
        bucket = suites.setdefault((component_of(lr), lr.dtype), [])
        bucket.extend((lr, r) for r in lr.results)
    return suites


def to_junit_xml(report: RunReport) -> str:
    """JUnit XML: a ``<testsuite>`` per component x dtype, a ``<testcase>`` per layer x tensor.

    ``classname`` is ``nn_parity.<command>.<component>.<dtype>``, ``name`` is
    ``<layer>.<tensor>`` (plus ``[batch=.., seed=..]`` where one component ran several times).
    FAIL is a ``<failure type="mismatch">``, VACUOUS a ``<failure type="vacuous">`` (a
    ``<skipped>`` where another run of the same component and dtype passed: the command
    passes) and ERROR an ``<error>``, each with the full report text. Validates against
    ``harness/junit.xsd``.
    """
    cmd = _ident(report.command)
    stamp = _dt.datetime.now().replace(microsecond=0).isoformat()
    host = _x(socket.gethostname())
    root = ET.Element("testsuites", name=f"nn_parity.{cmd}")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    total_seconds = 0.0
    suites = junit_suites(report)
    if not suites:  # e.g. a command whose report has only a summary: one testcase for the run
        suites[(report.command, "")] = []
    for (component, dtype), cases in suites.items():
        cls = ".".join(p for p in ("nn_parity", cmd, _ident(component), dtype) if p)
        suite = ET.SubElement(root, "testsuite", name=cls)
        props = ET.SubElement(suite, "properties")
        for k, v in (("command", report.command), ("component", component), ("dtype", dtype)):
            ET.SubElement(props, "property", name=k, value=_x(v))
        n = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        suite_seconds = sum(layer_seconds(lr) for lr in {id(lr): lr for lr, _ in cases}.values())
        runs_per_layer = len({id(lr) for lr, _ in cases})
        if not cases:
            tc = ET.SubElement(suite, "testcase", name=report.command, classname=cls, time="0")
            n["tests"] += 1
            if not report.ok:
                n["failures"] += 1
                f = ET.SubElement(tc, "failure", type="mismatch", message=verdict_line(report))
                f.text = _x(verdict_line(report))
        for lr, r in cases:
            name = r.name if r.layer else f"{lr.layer}.{r.tensor}"
            if runs_per_layer > 1 and run_label(lr):
                name += f" [{run_label(lr)}]"
            tc = ET.SubElement(suite, "testcase", name=_x(name), classname=cls,
                               time=_secs(case_seconds(lr)))
            n["tests"] += 1
            text = _x(f"{lr.layer} [{lr.dtype}, input {tuple(lr.input_shape)}, seed {lr.seed}]\n"
                      f"{lr.result_text(r)}")
            if r.status == VACUOUS and lr.info.get("vacuous_covered"):
                # proves nothing, beside a passing run of the same component: the command
                # passes it (harness.check_command._judge_vacuous_runs), CI must not fail it
                n["skipped"] += 1
                el = ET.SubElement(tc, "skipped", type="vacuous", message=_x(
                    f"{_first_line(r)} (another run of this component and dtype passes)"))
                el.text = text
            elif r.status in (FAIL, VACUOUS):
                n["failures"] += 1
                kind = "mismatch" if r.status == FAIL else "vacuous"
                el = ET.SubElement(tc, "failure", type=kind, message=_x(_first_line(r)))
                el.text = text
            elif r.status == ERROR:
                n["errors"] += 1
                el = ET.SubElement(tc, "error", type="error", message=_x(_first_line(r)))
                el.text = text
            elif r.status != PASS:  # an unknown status is never silently a pass
                n["failures"] += 1
                el = ET.SubElement(tc, "failure", type=_x(r.status.lower()), message=_x(_first_line(r)))
                el.text = text
        suite.set("tests", str(n["tests"]))
        suite.set("failures", str(n["failures"]))
        suite.set("errors", str(n["errors"]))
        suite.set("skipped", str(n["skipped"]))
        suite.set("time", _secs(suite_seconds))
        total_seconds += suite_seconds
        suite.set("timestamp", stamp)
        suite.set("hostname", host)
        for k in totals:
            totals[k] += n[k]
    if not report.ok and totals["failures"] + totals["errors"] == 0:
        # The command failed on something no tensor row carries (e.g. a training verdict):
        # JUnit must not read green while the exit code is red.
        cls = f"nn_parity.{cmd}.verdict"
        suite = ET.SubElement(root, "testsuite", name=cls, tests="1", failures="1", errors="0",
                              skipped="0", time="0.000", timestamp=stamp, hostname=host)
        tc = ET.SubElement(suite, "testcase", name="verdict", classname=cls, time="0")
        f = ET.SubElement(tc, "failure", type="verdict", message=_x(verdict_line(report)))
        f.text = _x(verdict_line(report))
        totals["tests"] += 1
        totals["failures"] += 1
    for k, v in totals.items():
        root.set(k, str(v))
    root.set("time", _secs(total_seconds))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(report: RunReport, path: str | os.PathLike) -> Path:
    return atomic_write_text(path, to_junit_xml(report))


# ---------------------------------------------------------------------------------------
# Markdown (CI job summaries, e.g. $GITHUB_STEP_SUMMARY)

MARKDOWN_MAX_ROWS = 200


def _md(s: Any) -> str:
    return str(s).replace("\\", "\\\\").replace("|", "\\|").replace("\n", "<br>")


def _flat(v: Any) -> bool:
    return not isinstance(v, (dict, list, tuple))


def _md_value(v: Any) -> str:
    if isinstance(v, (list, tuple)) and all(_flat(x) for x in v):
        return ", ".join(fmt_num(x, 6) for x in v)
    if isinstance(v, dict) and all(_flat(x) for x in v.values()):
        return ", ".join(f"{k}={fmt_num(x, 6)}" for k, x in v.items())
    if isinstance(v, dict) and all(_flat(x) or (isinstance(x, (list, tuple)) and all(map(_flat, x)))
                                   for x in v.values()):  # one line per key: "key: a, b"
        return "\n".join(f"{k}: {_md_value(x)}" for k, x in v.items())
    return fmt_num(v, 6)


def note_lines(notes: Any) -> list[str]:
    """``summary["notes"]`` (``{component: [note, ...]}``, or a list) as ``component: note``
    lines."""
    if isinstance(notes, dict):
        return [f"{k}: {n}" for k, v in notes.items()
                for n in (v if isinstance(v, (list, tuple)) else [v])]
    if isinstance(notes, (list, tuple)):
        return [str(n) for n in notes]
    return [str(notes)] if notes else []


def _md_message(r: TensorResult, limit: int = 300) -> str:
    msg = " ".join(r.message.split())
    return msg if len(msg) <= limit else msg[:limit - 1] + "\u2026"


def _is_table(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def to_markdown(report: RunReport) -> str:
    icon = "✅" if report.ok else "❌"
    word = "PASS" if report.ok else "FAIL"
    out = [f"## {icon} nn-parity {report.command}: {word}", "", f"`{verdict_line(report)}`", ""]
    c = report.counts()
    if report.layers:
        out += ["| PASS | FAIL | VACUOUS | ERROR |", "|---:|---:|---:|---:|",
                f"| {c[PASS]} | {c[FAIL]} | {c[VACUOUS]} | {c[ERROR]} |", ""]
    scalars = {k: v for k, v in report.summary.items() if not _is_table(v) and k != "notes"}
    if scalars:
        out += ["### Summary", "", "| key | value |", "|---|---|"]
        out += [f"| {_md(k)} | {_md(_md_value(v))} |" for k, v in scalars.items()]
        out.append("")
    notes = note_lines(report.summary.get("notes"))
    if notes:
        out += ["### Notes", ""] + [f"- {_md(n)}" for n in notes] + [""]
    bad = [(lr, r) for lr in report.layers for r in lr.results if r.status != PASS
           and not (r.status == VACUOUS and lr.info.get("vacuous_covered"))]
    covered = report.summary.get("vacuous_covered")
    if covered:
        out += [f"### Runs that proved nothing, beside a passing run ({len(covered)})", ""]
        out += [f"- {_md(c)}" for c in covered] + [""]
    if bad:
        out += [f"### Failures ({len(bad)})", "",
                "| component | dtype | run | tensor | status | max abs diff | max rel diff | tolerance "
                "| message |",
                "|---|---|---|---|---|---:|---:|---|---|"]
        for lr, r in bad[:MARKDOWN_MAX_ROWS]:
            d_abs, d_rel = diff_cells(r)
            out.append(f"| {_md(component_of(lr))} | {lr.dtype} | {_md(run_label(lr))} | {_md(r.name)} "
                       f"| **{r.status}** | {d_abs} | {d_rel} "
                       f"| {_md(r.tolerance_text.split(' (=')[0])} | {_md(_md_message(r))} |")
        if len(bad) > MARKDOWN_MAX_ROWS:
            out.append(f"\n_{len(bad) - MARKDOWN_MAX_ROWS} more failures not shown (see the JSON "
                       "or HTML report)._")
        out.append("")
        shown = 0
        for lr in report.layers:
            if lr.ok or shown >= 20:
                continue
            shown += 1
            out += [f"<details><summary>{_md(component_of(lr))} {lr.dtype} {_md(run_label(lr))}: "
                    f"{lr.status}</summary>", "", "```text", str(lr), "```", "", "</details>", ""]
    if report.layers:
        out += ["### Layers", "", "| # | component | dtype | run | status | first divergence | "
                "max abs diff | max rel diff |", "|---:|---|---|---|---|---|---:|---:|"]
        for i, lr in enumerate(report.layers[:MARKDOWN_MAX_ROWS]):
            first = lr.first_divergence
            a, r = worst_cells(lr)
            st = lr.status if lr.ok else f"**{lr.status}**"
            out.append(f"| {i} | {_md(component_of(lr))} | {lr.dtype} | {_md(run_label(lr))} | {st} | "
                       f"{_md(first.name) if first else ''} | {a} | {r} |")
        if len(report.layers) > MARKDOWN_MAX_ROWS:
            out.append(f"\n_{len(report.layers) - MARKDOWN_MAX_ROWS} more rows not shown._")
        out.append("")
    if report.figures:
        out += ["### Figures", ""] + [f"- `{p}`" for p in report.figures] + [""]
    return "\n".join(out)


def write_markdown(report: RunReport, path: str | os.PathLike) -> Path:
    return atomic_write_text(path, to_markdown(report))


# ---------------------------------------------------------------------------------------
# All of them, from the shared command-line options


def _html(report: RunReport) -> str:
    from harness.html_report import render_html

    return render_html(report)


RENDERERS: dict[str, tuple[str, Callable[[RunReport], str]]] = {
    "json": ("--json", to_json),
    "junit_xml": ("--junit-xml", to_junit_xml),
    "html": ("--html", _html),
    "markdown": ("--markdown", to_markdown),
}


# Options of some subcommands that also name files to write (attribute, flag).
EXTRA_OUTPUTS: tuple[tuple[str, str], ...] = (("plot", "--plot"), ("curves", "--curves"),
                                              ("tables", "--tables"))


def output_paths(args: Any) -> list[tuple[str, Path]]:
    """Every (flag, path) the parsed options ask to write: the four reports and the
    subcommands' own outputs (``--plot`` may be given several times)."""
    out: list[tuple[str, Path]] = []
    for attr, flag in [(a, f) for a, (f, _) in RENDERERS.items()] + list(EXTRA_OUTPUTS):
        value = getattr(args, attr, None)
        for v in value if isinstance(value, list | tuple) else [value]:
            if v is None:
                continue
            if str(v) == "":
                _usage_exit(f"{flag}: empty path (an unset variable? e.g. $GITHUB_STEP_SUMMARY "
                            f"outside GitHub Actions)")
            out.append((flag, Path(v)))
    return out


def check_output_paths(args: Any) -> None:
    """Before a run: every output path must be writable as a file and no two may name the
    same file. A problem is a usage error (message on stderr, ``SystemExit(2)``), so a long
    run never ends with nothing written."""
    seen: dict[Path, str] = {}
    for flag, path in output_paths(args):
        try:
            _check_output_path(flag, path, seen)
        except OSError as exc:  # a name too long, a folder that cannot be searched, ...
            _usage_exit(f"{flag} {path}: {exc.strerror or exc}")


def _check_output_path(flag: str, path: Path, seen: dict[Path, str]) -> None:
    key = Path(os.path.realpath(path))
    if key in seen:
        _usage_exit(f"{flag} and {seen[key]} name the same file {path}")
    seen[key] = flag
    if len(key.name.encode()) > _name_max(key.parent):
        raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG))
    try:
        os.stat(path)  # a symlink loop, a folder that cannot be searched: said now, not after
    except (FileNotFoundError, NotADirectoryError):  # a new file; a file as folder: below
        pass
    if path.is_dir():
        _usage_exit(f"{flag} {path}: is a directory")
    if path.exists() and not path.is_file():  # a device or FIFO: written into directly
        if not os.access(path, os.W_OK):
            _usage_exit(f"{flag} {path}: not writable")
        return
    if path.is_file() and not os.access(path, os.W_OK):  # the rename would replace it anyway
        _usage_exit(f"{flag} {path}: the file is not writable (write-protected, or a read-only "
                    f"file system): not replaced")
    parent = key.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        _usage_exit(f"{flag} {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        _usage_exit(f"{flag} {path}: cannot write into {parent}")


def _name_max(folder: Path) -> int:
    """The longest file name the file system of ``folder`` (or its nearest existing parent)
    takes, 255 where it cannot be asked."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255


def write_reports(report: RunReport, args: Any) -> None:
    """Write every report the options ask for (``--json``, ``--junit-xml``, ``--html``,
    ``--markdown``). All are rendered before any is written; each is written atomically.
    A path that cannot be written does not stop the others: each failure is named on stderr,
    and then ``SystemExit(2)`` (a usage error) once all the others are written."""
    check_output_paths(args)
    wanted = [(flag, getattr(args, attr, None), render) for attr, (flag, render) in RENDERERS.items()]
    wanted = [(flag, Path(p), render) for flag, p, render in wanted if p]
    rendered = [(flag, path, render(report)) for flag, path, render in wanted]
    failed = []
    for flag, path, text in rendered:
        try:
            atomic_write_text(path, text)
        except OSError as exc:
            failed.append(f"{flag} {path}: cannot write the report: {exc.strerror or exc}")
            print(f"nn-parity: error: {failed[-1]}", file=sys.stderr)
    if failed:
        raise SystemExit(EXIT_USAGE)


def _usage_exit(msg: str) -> None:
    print(f"nn-parity: error: {msg}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)
