"""The report writers (JSON schema v1, JUnit XML against harness/junit.xsd, Markdown, HTML
structure), atomic writing, the CLI's output options, exit codes and terminal output."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import scratch
from harness import reports
from harness.check import check_layer
from harness.cli import main
from harness.compare import ERROR, FAIL, PASS, VACUOUS, TensorResult
from harness.html_report import render_html
from harness.report import LayerReport, RunReport
from harness.reports import (
    JUNIT_XSD,
    RESULT_KEYS,
    SCHEMA_VERSION,
    atomic_write_text,
    to_json,
    to_json_dict,
    to_junit_xml,
    to_markdown,
    write_reports,
)

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
ANSI = re.compile(r"\x1b\[")


class SoftmaxNoMean(scratch.SoftmaxWithLoss):
    """Forgets to divide the gradient by the batch size."""

    def backward(self, dout=1.0):
        return super().backward(dout) * self.y.shape[0]


def mixed_report() -> RunReport:
    """PASS, FAIL, VACUOUS and ERROR results, two components, two runs of one of them."""
    report = RunReport(command="check")
    for seed in (0, 1):
        lr = check_layer(scratch.Relu(), input_shape=(3, 9), seed=seed)
        lr.info.update(component="Relu", batch=3)
        report.layers.append(lr)
    bad = check_layer(SoftmaxNoMean(), input_shape=(4, 10), seed=0, name="SoftmaxWithLoss")
    bad.info.update(component="SoftmaxWithLoss", batch=4)
    report.layers.append(bad)
    odd = LayerReport(layer="Odd", dtype="float32", input_shape=(2, 3), seed=0, info={"component": "Odd"})
    odd.results = [
        TensorResult(layer="Odd", tensor="out", status=VACUOUS, dtype="float32", shape=(2, 3),
                     total=6, message="both sides are all zeros: the check proves nothing"),
        TensorResult(layer="Odd", tensor="backward", status=ERROR,
                     message="ValueError: bad <shape> & \x1b[31mcolour\x1b[0m (at odd.py:3)"),
        TensorResult(layer="Odd", tensor="dx", status=FAIL, dtype="float32", shape=(2, 3), total=6,
                     mismatched=6, max_abs=float("inf"), max_abs_index=(0, 0), max_rel=float("nan"),
                     max_rel_index=(0, 0), message="6 non-finite element(s) (NaN/Inf)"),
    ]
    report.layers.append(odd)
    report.summary = {"seeds": 2, "dtypes": ["float64"], "loss": np.float64(0.25), "n": np.int64(3),
                      "rows": [{"component": "Relu", "status": "PASS", "max_abs": 0.0}]}
    return report


# ---------------------------------------------------------------------------------------
# JSON


def test_json_schema_v1_is_strict_json_with_documented_keys() -> None:
    report = mixed_report()
    text = to_json(report)
    doc = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert doc["schema_version"] == SCHEMA_VERSION == 1
    assert set(doc) == {"schema_version", "tool", "tool_version", "command", "created", "ok",
                        "exit_code", "verdict", "output_errors", "counts", "summary", "layers", "figures"}
    assert doc["tool"] == "nn-parity" and doc["command"] == "check"
    assert doc["ok"] is False and doc["exit_code"] == 1 and doc["output_errors"] == []
    assert doc["counts"] == {PASS: report.counts()[PASS], FAIL: 2, VACUOUS: 1, ERROR: 1}
    assert doc["verdict"].startswith("FAIL: 4 checks")
    assert doc["summary"]["loss"] == 0.25 and doc["summary"]["n"] == 3
    layer = doc["layers"][2]
    assert set(layer) == {"layer", "dtype", "input_shape", "seed", "status", "ok",
                          "first_divergence", "info", "elapsed", "results", "text"}
    assert layer["status"] == FAIL and layer["first_divergence"] == "SoftmaxWithLoss.dx"
    assert layer["input_shape"] == [4, 10]
    for r in layer["results"]:
        assert set(r) == {*RESULT_KEYS, "name", "text", "unmeasured"}
    dx = next(r for r in layer["results"] if r["tensor"] == "dx")
    assert dx["status"] == FAIL and dx["mismatched"] == 40 and dx["shape"] == [4, 10]
    assert "Mismatched elements: 40 / 40" in dx["text"]
    inf = doc["layers"][3]["results"][2]
    assert inf["max_abs"] == "inf" and inf["max_rel"] == "nan"  # non-finite floats as strings


def test_json_of_a_passing_run() -> None:
    report = RunReport(command="selftest", layers=[check_layer(scratch.Tanh(), input_shape=(2, 3))])
    doc = to_json_dict(report)
    assert doc["ok"] is True and doc["exit_code"] == 0 and doc["counts"][FAIL] == 0


# ---------------------------------------------------------------------------------------
# JUnit XML


def validate_junit(text: str) -> None:
    """Validate against harness/junit.xsd with xmlschema, and lxml too where installed."""
    validated = False
    try:
        import xmlschema
    except ImportError:
        xmlschema = None
    if xmlschema is not None:
        xmlschema.XMLSchema(str(JUNIT_XSD)).validate(text)
        validated = True
    try:
        from lxml import etree
    except ImportError:
        etree = None
    if etree is not None:
        schema = etree.XMLSchema(etree.parse(str(JUNIT_XSD)))
        doc = etree.fromstring(text.encode("utf-8"))
        assert schema.validate(doc), schema.error_log
        validated = True
    if not validated:
        msg = "neither xmlschema nor lxml is installed (pip install -e '.[dev]')"
        pytest.fail(msg) if os.environ.get("CI") else pytest.skip(msg)


def test_junit_xml_validates_and_counts_are_right() -> None:
    report = mixed_report()
    text = to_junit_xml(report)
    validate_junit(text)
    root = ET.fromstring(text)
    assert root.tag == "testsuites"
    cases = root.findall("./testsuite/testcase")
    assert int(root.get("tests")) == len(cases) == len(report.results)
    assert int(root.get("failures")) == 3  # two FAIL and one VACUOUS
    assert int(root.get("errors")) == 1
    for suite in root.findall("testsuite"):
        tcs = suite.findall("testcase")
        assert int(suite.get("tests")) == len(tcs)
        assert int(suite.get("failures")) == sum(tc.find("failure") is not None for tc in tcs)
        assert int(suite.get("errors")) == sum(tc.find("error") is not None for tc in tcs)
        for tc in tcs:
            assert tc.get("classname") == suite.get("name")
    names = [s.get("name") for s in root.findall("testsuite")]
    assert names == ["nn_parity.check.Relu.float64", "nn_parity.check.SoftmaxWithLoss.float64",
                     "nn_parity.check.Odd.float32"]
    relu = root.find("testsuite[@name='nn_parity.check.Relu.float64']")
    relu_names = [tc.get("name") for tc in relu.findall("testcase")]
    assert "Relu.out [batch=3, seed=0]" in relu_names and "Relu.dx [batch=3, seed=1]" in relu_names
    assert len(set(relu_names)) == len(relu_names)  # repeated runs stay distinguishable
    soft = root.find("testsuite[@name='nn_parity.check.SoftmaxWithLoss.float64']")
    dx = soft.find("testcase[@name='SoftmaxWithLoss.dx']")
    failure = dx.find("failure")
    assert failure.get("type") == "mismatch"
    assert failure.get("message").startswith("SoftmaxWithLoss.dx: FAIL: Mismatched elements: 40 / 40")
    assert "Worst element vs tolerance" in failure.text and "seed 0" in failure.text
    assert soft.find("testcase[@name='SoftmaxWithLoss.loss']").find("failure") is None
    odd = root.find("testsuite[@name='nn_parity.check.Odd.float32']")
    assert odd.find("testcase[@name='Odd.out']/failure").get("type") == "vacuous"
    err = odd.find("testcase[@name='Odd.backward']/error")
    assert "bad <shape> &" in err.get("message") and "\x1b" not in err.text  # escaped, cleaned


def test_junit_xsd_rejects_a_bad_document() -> None:
    """The schema is not vacuous: a missing required attribute, a garbled count and an unknown
    element are each rejected."""
    good = to_junit_xml(RunReport(command="check", layers=[check_layer(scratch.Tanh(), input_shape=(2, 3))]))
    validate_junit(good)
    bads = [re.sub(r'(<testsuite name="[^"]*" tests="\d+" failures="\d+") errors="\d+"', r"\1", good),
            re.sub(r'(<testsuite name="[^"]*" tests="\d+") failures="0"', r'\1 failures="zero"', good),
            good.replace("<testcase ", "<testcas ", 1).replace("</testcase>", "</testcas>", 1)]
    for bad in bads:
        assert bad != good
        with pytest.raises(Exception):  # noqa: B017 - xmlschema and lxml raise different types
            validate_junit(bad)


def test_junit_for_a_report_without_layers() -> None:
    report = RunReport(command="train", summary={"epochs": 1}, ok_override=False)
    text = to_junit_xml(report)
    validate_junit(text)
    root = ET.fromstring(text)
    assert root.get("tests") == "1" and root.get("failures") == "1"


# ---------------------------------------------------------------------------------------
# Markdown and HTML structure (the browser test renders the HTML for real)


def test_markdown_summary() -> None:
    md = to_markdown(mixed_report())
    assert md.startswith("## ❌ nn-parity check: FAIL")
    assert "| PASS | FAIL | VACUOUS | ERROR |" in md
    assert "### Failures (4)" in md
    assert "| SoftmaxWithLoss | float64 | batch=4, seed=0 | SoftmaxWithLoss.dx | **FAIL** |" in md
    assert "```text\nSoftmaxWithLoss [float64, input (4, 10), seed 0]: FAIL" in md
    assert "| loss | 0.25 |" in md
    ok = to_markdown(RunReport(command="check", layers=[check_layer(scratch.Tanh(), input_shape=(2, 3))]))
    assert ok.startswith("## ✅ nn-parity check: PASS") and "Failures" not in ok


def test_html_is_self_contained_and_marks_failures(tmp_path: Path) -> None:
    png = tmp_path / "plot.png"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(2, 1))
    fig.savefig(png)
    plt.close(fig)
    report = mixed_report()
    report.figures = [png, tmp_path / "missing.png"]
    page = render_html(report)
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", page)  # nothing external
    assert 'src="data:image/png;base64,iVBOR' in page
    assert "figure not found" in page and "missing.png" in page
    assert page.count('<tr class="FAIL" id="layer-') == 1
    assert page.count('<tr class="ERROR" id="layer-') == 1
    assert '<pre class="report">SoftmaxWithLoss [float64, input (4, 10), seed 0]: FAIL' in page
    assert "bad &lt;shape&gt; &amp;" in page


# ---------------------------------------------------------------------------------------
# Writing: atomic, never clobbering, errors are usage errors


def test_atomic_write_replaces_whole_files_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "r.json"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["r.json"]
    assert target.stat().st_mode & 0o777 != 0o600  # not mkstemp's private mode


def test_a_failing_render_never_clobbers_existing_reports(tmp_path: Path, monkeypatch) -> None:
    paths = {k: tmp_path / f"r.{k}" for k in ("json", "xml", "html", "md")}
    for p in paths.values():
        p.write_text("previous")
    args = SimpleNamespace(json=paths["json"], junit_xml=paths["xml"], html=paths["html"],
                           markdown=paths["md"])

    def boom(report):
        raise RuntimeError("renderer crashed")

    monkeypatch.setitem(reports.RENDERERS, "html", ("--html", boom))
    with pytest.raises(RuntimeError):
        write_reports(mixed_report(), args)
    assert all(p.read_text() == "previous" for p in paths.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths.values())


def test_a_failing_write_leaves_the_old_file(tmp_path: Path, monkeypatch, capsys) -> None:
    target = tmp_path / "r.json"
    target.write_text("previous")

    def fail_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(reports.os, "replace", fail_replace)
    with pytest.raises(SystemExit) as exc:
        write_reports(mixed_report(), SimpleNamespace(json=str(target)))
    assert exc.value.code == 2
    assert "--json" in capsys.readouterr().err
    assert target.read_text() == "previous" and [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_one_failing_write_does_not_stop_the_others(tmp_path: Path, monkeypatch, capsys) -> None:
    js, md = tmp_path / "r.json", tmp_path / "r.md"
    real_replace = reports.os.replace

    def fail_json(src, dst):
        if str(dst).endswith(".json"):
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(reports.os, "replace", fail_json)
    with pytest.raises(SystemExit) as exc:
        write_reports(mixed_report(), SimpleNamespace(json=str(js), markdown=str(md)))
    assert exc.value.code == 2 and "--json" in capsys.readouterr().err
    assert not js.exists() and md.read_text().startswith("#")


def test_report_path_errors_are_usage_errors(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        write_reports(mixed_report(), SimpleNamespace(json=str(tmp_path), html=None))
    assert exc.value.code == 2 and "is a directory" in capsys.readouterr().err
    same = tmp_path / "same"
    with pytest.raises(SystemExit) as exc:
        write_reports(mixed_report(), SimpleNamespace(json=str(same), html=str(same)))
    assert exc.value.code == 2 and "same file" in capsys.readouterr().err
    assert not same.exists()


# ---------------------------------------------------------------------------------------
# The CLI: every output option, exit codes, quiet/verbose, no ANSI when not wanted

FAST = ["check", "--only", "Relu", "--dtype", "float64", "--seeds", "1", "--batches", "2"]


def test_check_writes_all_four_reports(tmp_path: Path, capsys) -> None:
    out = {k: tmp_path / f"out.{k}" for k in ("json", "xml", "html", "md")}
    code = main([*FAST, "--json", str(out["json"]), "--junit-xml", str(out["xml"]),
                 "--html", str(out["html"]), "--markdown", str(out["md"])])
    assert code == 0
    doc = json.loads(out["json"].read_text())
    assert doc["ok"] and doc["summary"]["components"] == ["Relu"] and len(doc["layers"]) == 1
    validate_junit(out["xml"].read_text())
    assert "<title>nn-parity check: PASS</title>" in out["html"].read_text()
    assert out["md"].read_text().startswith("## ✅ nn-parity check: PASS")
    assert not ANSI.search(capsys.readouterr().out)  # captured output is not a terminal


def test_exit_codes_and_quiet(capsys) -> None:
    from harness.user_modules import forget_user_modules

    try:
        assert main([*FAST, "-q"]) == 0
        quiet = capsys.readouterr().out.strip()
        assert quiet == "PASS: 1 check, 4 tensors passed, 0 failed, 0 vacuous, 0 errors"
        assert main(["check", "--module", str(EXAMPLES / "user_layers_buggy.py"), "--dtype", "float64",
                     "--seeds", "1", "--batches", "3", "--quiet"]) == 1
        out = capsys.readouterr().out
        verdict = "FAIL: 6 checks, 26 tensors passed, 2 failed, 0 vacuous, 0 errors"
        assert out.strip().splitlines() == [verdict]
    finally:
        forget_user_modules()
    assert main(["check", "--only", "NoSuchLayer*"]) == 2
    assert "no component matches" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # argparse: unknown option
        main(["check", "--no-such-option"])
    assert exc.value.code == 2


def test_verbose_prints_every_tensor(capsys) -> None:
    assert main([*FAST, "--seeds", "2", "-v"]) == 0
    out = capsys.readouterr().out
    assert out.count("Relu [float64, input (2, 9), seed ") == 2
    assert out.count("Relu.out [float64, shape (2, 9)]: PASS (max abs diff") == 2
    assert "Relu.input x unchanged [float64, shape (2, 9)]: PASS" in out
    assert main(FAST) == 0
    default = capsys.readouterr().out
    assert "max abs diff" in default and "Relu.out [float64" not in default  # table only


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colours_on_a_terminal_unless_no_color(monkeypatch) -> None:
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    tty = FakeTerminal()
    monkeypatch.setattr(sys, "stdout", tty)
    assert main(FAST) == 0
    assert ANSI.search(tty.getvalue()), "a terminal gets colours (the control for NO_COLOR)"
    monkeypatch.setenv("NO_COLOR", "1")
    tty = FakeTerminal()
    monkeypatch.setattr(sys, "stdout", tty)
    assert main(FAST) == 0
    assert not ANSI.search(tty.getvalue()) and "PASS: 1 check," in tty.getvalue()


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pty")
def test_no_color_on_a_real_terminal() -> None:
    import pty

    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "FORCE_COLOR"}
    env.update(PYTHONPATH=str(REPO), COLUMNS="200", TERM="xterm-256color", NO_COLOR="1")
    proc = subprocess.Popen([sys.executable, "-m", "harness", *FAST], stdin=slave, stdout=slave,
                            stderr=slave, env=env, cwd=REPO)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=120) == 0
    out = b"".join(chunks).decode("utf-8", "replace")
    assert "PASS: 1 check," in out and "component" in out
    assert not ANSI.search(out), repr(out[:500])


def test_piped_output_has_no_ansi() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    env.update(PYTHONPATH=str(REPO), TERM="xterm-256color")
    proc = subprocess.run([sys.executable, "-m", "harness", *FAST], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert not ANSI.search(proc.stdout) and not ANSI.search(proc.stderr)
    assert "PASS: 1 check," in proc.stdout


# ---------------------------------------------------------------------------------------
# Writing never replaces what is not a regular file, and bad paths fail before the run


def test_writing_into_a_fifo_keeps_the_fifo(tmp_path: Path) -> None:
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    atomic_write_text(fifo, "through the pipe")
    reader.join(timeout=10)
    assert got == [b"through the pipe"]
    assert fifo.is_fifo(), "a rename over the path would have replaced the FIFO (or /dev/null)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]


def test_writing_through_a_symlink_keeps_the_link(tmp_path: Path) -> None:
    target, link = tmp_path / "real.json", tmp_path / "link.json"
    target.write_text("old")
    link.symlink_to(target)
    atomic_write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "new"
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "sub" / "made.json")
    atomic_write_text(dangling, "made")
    assert dangling.is_symlink() and (tmp_path / "sub" / "made.json").read_text() == "made"


@pytest.mark.parametrize("extra", [
    ["--json", "{dir}"],
    ["--json", "{dir}/a.json", "--html", "{dir}/a.json"],
    ["--json", "{dir}/file/a.json"],
    ["--json", ""],
])
def test_bad_output_paths_fail_before_the_run(tmp_path: Path, capsys, monkeypatch,
                                               extra: list[str]) -> None:
    (tmp_path / "file").write_text("x")
    ran: list[bool] = []
    monkeypatch.setattr("harness.check_command.run", lambda args: ran.append(True))
    args = [a.format(dir=tmp_path) for a in extra]
    assert main(["check", "--only", "Relu", *args]) == 2
    assert ran == [], "the run must not start"
    assert "nn-parity: error:" in capsys.readouterr().err


def test_a_failed_verdict_without_failing_rows_is_a_junit_failure() -> None:
    report = RunReport(command="train", ok_override=False, verdict="DISAGREE: the runs part")
    lr = LayerReport(layer="loss", dtype="float32")
    lr.results.append(TensorResult(layer="loss", tensor="gap", status=PASS))
    report.layers.append(lr)
    root = ET.fromstring(to_junit_xml(report))
    assert root.get("failures") == "1", "JUnit must not read green while the exit code is red"
    failure = root.find(".//testcase[@name='verdict']/failure")
    assert failure is not None and failure.get("message") == "DISAGREE: the runs part"
    assert json.loads(to_json(report))["verdict"] == "DISAGREE: the runs part"
    validate_junit(to_junit_xml(report))


def test_unknown_option_names_the_subcommand(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["check", "--only", "Relu", "--bogus"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "nn-parity check: error: unrecognized arguments: --bogus" in err, err


@pytest.mark.parametrize("argv, message", [
    (["--only", "Relu", "--seeds", "0"], "--seeds must be >= 1"),
    (["--only", "Relu", "--seeds", "-1"], "--seeds must be >= 1"),
    (["--only", "Relu", "--batches", "3", "0"], "--batches must be positive"),
    (["--only", "Relu", "--input-shape", "9"], "--input-shape applies to --module layers only"),
    (["--only", "NOPE"], "no component matches ['NOPE']"),
    (["--only", "Relu", "--only", "NOPE"], "no component matches the pattern(s) ['NOPE']"),
])
def test_check_arguments_that_would_check_nothing_or_be_ignored(argv, message, capsys) -> None:
    assert main(["check", *argv]) == 2
    assert message in capsys.readouterr().err


def test_quiet_and_verbose_together_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["check", "--only", "Relu", "-q", "-v"])
    assert exc.value.code == 2 and "not allowed with" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# What a report says about rows with no measured difference, notes, reproduction, timing


def unmeasured_report() -> RunReport:
    """A shape mismatch, a dtype mismatch and an exception: FAIL/ERROR rows whose max abs/rel
    are 0.0 only because no difference was computed; a run with notes in the summary."""
    from harness.compare import compare

    lr = LayerReport(layer="Mis", dtype="float32", input_shape=(2, 6), seed=1,
                     info={"component": "Mis", "batch": 2})
    lr.results = [
        compare(np.arange(6, dtype=np.float32), np.arange(6, dtype=np.float32), tensor="out",
                layer="Mis"),
        compare(np.zeros(1, np.float32), np.ones(6, np.float32), tensor="dbeta", layer="Mis"),
        compare(np.ones(6, np.float64), np.ones(6, np.float32), tensor="dgamma", layer="Mis"),
        TensorResult(layer="Mis", tensor="dx", status=ERROR, dtype="float32",
                     message="ValueError: operands could not be broadcast (at mis.py:9)"),
    ]
    return RunReport(command="check", layers=[lr], summary={
        "seeds": 1, "notes": {"Mis": ["dx of integer indices is not compared", "second note"],
                              "Other": ["checked as the classic Adam"]}})


def test_unmeasured_differences_are_labelled_not_zero() -> None:
    from harness.report import unmeasured

    report = unmeasured_report()
    lr = report.layers[0]
    assert [unmeasured(r) for r in lr.results] == [None, "shape", "dtype", "error"]
    md = to_markdown(report)
    rows = {line.split(" | ")[3]: line for line in md.splitlines() if line.startswith("| Mis |")}
    assert "| **FAIL** | shape | shape |" in rows["Mis.dbeta"]
    assert "| **FAIL** | dtype | dtype |" in rows["Mis.dgamma"]
    assert "| **ERROR** | — | — |" in rows["Mis.dx"]
    assert "| 0 | 0 |" not in md  # no "no difference" where none was computed
    html = render_html(report)
    layer_row = re.search(r'<tr class="ERROR" id="layer-0".*?</tr>', html).group(0)
    assert '<td class="num">shape</td><td class="num">shape</td>' in layer_row
    doc = to_json_dict(report)["layers"][0]["results"]
    assert [r["unmeasured"] for r in doc] == [None, "shape", "dtype", "error"]
    assert doc[1]["max_abs"] == 0.0  # the number keeps its schema meaning


def test_terminal_and_summary_rows_label_unmeasured_differences() -> None:
    from harness.check_command import aggregate
    from harness.terminal import table_diff_cells

    report = unmeasured_report()
    rows = {row["tensor"]: row for row in aggregate(report)}
    assert table_diff_cells(rows["out"]) == ("0.00e+00", "0.00e+00")  # measured: equal
    assert table_diff_cells(rows["dbeta"]) == ("shape", "shape")
    assert table_diff_cells(rows["dgamma"]) == ("dtype", "dtype")
    assert table_diff_cells(rows["dx"]) == ("—", "—")
    # the JSON's summary rows carry the worst run's text, not the result: the HTML table of
    # them labels the same rows
    report.summary["rows"] = [{**r, "detail": str(r["detail"]) if r["detail"] else None}
                              for r in rows.values()]
    table = render_html(report).split('id="summary-rows"')[1]
    cells = re.findall(r'<tr class="(\w+)">(.*?)</tr>', table, re.S)
    assert len(cells) == 4
    assert '<td class="num">shape</td><td class="num">shape</td>' in cells[1][1]
    assert '<td class="num">—</td><td class="num">—</td>' in cells[3][1]


def test_markdown_notes_are_a_list_and_errors_carry_their_message() -> None:
    md = to_markdown(unmeasured_report())
    assert "{'" not in md and "['" not in md  # no Python repr
    notes = md.split("### Notes")[1].split("###")[0]
    assert "- Mis: dx of integer indices is not compared\n- Mis: second note\n" in notes
    assert "- Other: checked as the classic Adam" in notes
    err = next(line for line in md.splitlines() if "| Mis.dx |" in line)
    assert "ValueError: operands could not be broadcast (at mis.py:9)" in err
    html = render_html(unmeasured_report())
    assert "<li>Mis: dx of integer indices is not compared</li>" in html and "{&#x27;" not in html


def test_a_failing_tensor_report_names_its_batch_and_seed() -> None:
    from harness.terminal import detail_text

    lr = check_layer(SoftmaxNoMean(), input_shape=(4, 10), seed=1, name="SoftmaxWithLoss")
    text = str(lr)
    assert "SoftmaxWithLoss.dx [float64, shape (4, 10)]: FAIL (batch 4, seed 1)\n" in text
    assert "SoftmaxWithLoss.loss [float64, shape ()]: PASS" in text  # passing lines unchanged
    report = RunReport(command="check", layers=[lr])
    assert detail_text(lr["dx"], report).startswith(
        "SoftmaxWithLoss.dx [float64, shape (4, 10)]: FAIL (batch 4, seed 1)\n")
    err = unmeasured_report().layers[0]
    assert "Mis.dx [float32]: ERROR (batch 2, seed 1)" in str(err)
    assert "Mis.dx [float32]: ERROR (batch 2, seed 1)" in to_junit_xml(RunReport("check", [err]))


def test_junit_time_is_the_runs_elapsed_time() -> None:
    report = mixed_report()
    relu0, relu1, soft, _ = report.layers
    relu0.elapsed, relu1.elapsed = 1.2, 0.4
    soft.info["elapsed"] = 0.9  # the suite runner's info key is read too
    text = to_junit_xml(report)
    validate_junit(text)
    root = ET.fromstring(text)
    relu = root.find("testsuite[@name='nn_parity.check.Relu.float64']")
    per_case = 1.2 / len(relu0.results)
    assert relu.find("testcase[@name='Relu.out [batch=3, seed=0]']").get("time") == f"{per_case:.3f}"
    assert relu.get("time") == "1.600"
    assert root.find("testsuite[@name='nn_parity.check.SoftmaxWithLoss.float64']").get("time") == "0.900"
    assert root.find("testsuite[@name='nn_parity.check.Odd.float32']").get("time") == "0.000"
    assert root.get("time") == "2.500"
    assert to_json_dict(report)["layers"][0]["elapsed"] == 1.2
    assert "elapsed" not in reports.run_label(soft)  # a time is no name for a run


def test_reports_give_the_batch_the_check_ran_at() -> None:
    """BatchNorm in training needs 3 rows: under --batches 1 it runs at batch 3; the reports say
    3 (and that 1 was asked), and the two runs at batch 3 keep distinct JUnit names."""
    from reference.optimizers import SGD, check_optimizer

    asked1 = check_layer(scratch.Relu(), input_shape=(3, 6), seed=0)
    asked1.info.update(component="Relu", batch=1)
    asked3 = check_layer(scratch.Relu(), input_shape=(3, 6), seed=0)
    asked3.info.update(component="Relu", batch=3)
    opt = check_optimizer(SGD(lr=0.1), dtype="float64", seed=0, name="SGD")
    opt.info.update(component="SGD", group="optimizer", batch=1)
    report = RunReport(command="check", layers=[asked1, asked3, opt])
    layers = to_json_dict(report)["layers"]
    assert layers[0]["info"]["batch"] == 3 and layers[0]["info"]["batch_requested"] == 1
    assert layers[1]["info"]["batch"] == 3 and "batch_requested" not in layers[1]["info"]
    assert layers[2]["info"]["batch"] == 1 and "batch_requested" not in layers[2]["info"]
    root = ET.fromstring(to_junit_xml(report))
    names = [tc.get("name") for tc in root.iter("testcase") if tc.get("name").startswith("Relu.out")]
    assert names == ["Relu.out [batch=3 (requested 1), seed=0]", "Relu.out [batch=3, seed=0]"]


def test_headline_wording_follows_the_status() -> None:
    def headline(status: str) -> str:
        lr = LayerReport(layer="L", dtype="float64", input_shape=(1, 2), seed=0,
                         results=[TensorResult(layer="L", tensor="out", status=status)])
        return lr.headline()

    assert headline(FAIL) == "L [float64, input (1, 2), seed 0]: FAIL: scratch differs from PyTorch"
    assert "differs" not in headline(VACUOUS) and "proves nothing" in headline(VACUOUS)
    assert "differs" not in headline(ERROR) and "could not be compared" in headline(ERROR)
    assert headline(PASS).endswith("PASS: scratch matches PyTorch")


def test_a_covered_vacuous_run_is_skipped_in_junit_and_apart_in_markdown(tmp_path) -> None:
    from harness.check_command import _judge_vacuous_runs
    from harness.compare import TensorResult
    from harness.report import LayerReport, RunReport
    from harness.reports import to_junit_xml, to_markdown

    report = RunReport(command="check")
    for batch, status in ((1, "VACUOUS"), (3, "PASS")):
        lr = LayerReport(layer="Relu", dtype="float32", input_shape=(batch, 9), seed=0,
                         results=[TensorResult(layer="Relu", tensor="dx", status=status,
                                               message="proves nothing" if status != "PASS" else "")])
        lr.info.update(component="Relu", batch=batch)
        report.layers.append(lr)
    _judge_vacuous_runs(report)
    xml = to_junit_xml(report)
    assert report.ok and 'failures="0"' in xml and 'skipped="1"' in xml and "<skipped" in xml
    md = to_markdown(report)
    assert "### Failures" not in md and "Runs that proved nothing, beside a passing run (1)" in md
