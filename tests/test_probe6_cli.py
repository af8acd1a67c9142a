"""The command line as a new user meets it: limits on the grid, messages that name the
problem, and report files that are never lost."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.check_command import MAX_BATCH, MAX_SEEDS
from harness.cli import main

REPO = Path(__file__).resolve().parents[1]
FAST = ["check", "--only", "Relu", "--dtype", "float64", "--seeds", "1", "--batches", "2"]


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "100000"], f"--seeds must be <= {MAX_SEEDS}, got 100000"),
    (["--seeds", "99999999999999999999"], f"--seeds must be <= {MAX_SEEDS}"),
    (["--batches", "100000000"], f"--batches must be <= {MAX_BATCH}, got 100000000"),
    (["--batches", "1,3", str(MAX_BATCH + 1)], f"--batches must be <= {MAX_BATCH}"),
])
def test_a_huge_grid_is_refused_at_once_with_the_limit(argv, message, capsys) -> None:
    """A huge --seeds ran for ever (and built a list of every run first: gigabytes before the
    first check); a huge --batches allocated tens of GB. Both are usage errors naming the
    limit, before any check runs."""
    assert main(["check", "--only", "Relu", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err, err


def test_the_limits_themselves_are_accepted(capsys) -> None:
    assert main(["check", "--only", "Relu", "--dtype", "float64", "--seeds", "1",
                 "--batches", str(MAX_BATCH), "-q"]) == 0
    assert "PASS: 1 check," in capsys.readouterr().out


def test_help_states_the_limits(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["check", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert f"seeds per shape, 1 to {MAX_SEEDS}" in out
    assert f"batch sizes, 1 to {MAX_BATCH}" in out


def _run_with_stdout_closed(argv: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """``nn-parity ARGV | head -0``: the reader of stdout is gone before anything is printed."""
    proc = subprocess.Popen([sys.executable, "-m", "harness", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=REPO, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read()
    return subprocess.CompletedProcess(proc.args, proc.wait(timeout=300), "", err)


def test_a_closed_pipe_still_writes_the_reports_and_keeps_the_verdicts_exit_code(tmp_path) -> None:
    """``nn-parity check --junit-xml j.xml | head``: rich's own broken-pipe handling exited 1
    (read as "a mismatch" by CI) before any report was written. The run is finished when the
    table is printed: the reports are written and the exit code is the verdict's."""
    junit, js = tmp_path / "j.xml", tmp_path / "r.json"
    proc = _run_with_stdout_closed([*FAST, "--junit-xml", str(junit), "--json", str(js)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert json.loads(js.read_text())["exit_code"] == 0
    assert ET.parse(junit).getroot().get("failures") == "0"


def test_a_failing_run_with_a_closed_pipe_exits_1_not_a_broken_pipe_code(tmp_path) -> None:
    js = tmp_path / "r.json"
    proc = _run_with_stdout_closed(["check", "--module", str(REPO / "examples" / "user_layers_buggy.py"),
                                    "--only", "*SoftmaxWithLoss", "--dtype", "float64", "--seeds",
                                    "1", "--batches", "3", "--json", str(js)], tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert json.loads(js.read_text())["ok"] is False


def test_a_command_cut_off_mid_run_exits_141_without_a_traceback(tmp_path) -> None:
    proc = _run_with_stdout_closed(["check", "--list"], tmp_path)
    assert proc.returncode == 141, proc.stderr
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr


def test_a_repeated_batch_size_runs_once(tmp_path) -> None:
    """``--batches 3 3`` ran every check twice: twice the time, and JUnit testcases with the
    same name (8 names for 32 testcases)."""
    junit = tmp_path / "j.xml"
    assert main(["check", "--only", "Relu", "--batches", "3", "3,3", "--seeds", "1", "-q",
                 "--junit-xml", str(junit)]) == 0
    names = [(tc.get("classname"), tc.get("name"))
             for tc in ET.parse(junit).getroot().iter("testcase")]
    assert names and len(names) == len(set(names)), names
    assert len(names) == 8  # 4 tensors x 2 dtypes, at batch 3 only


@pytest.mark.parametrize("command", ["check", "selftest"])
def test_list_with_a_report_option_is_a_usage_error(command, tmp_path, capsys) -> None:
    """``--list --json r.json`` printed the list, exited 0 and wrote nothing."""
    target = tmp_path / "r.json"
    assert main([command, "--list", "--json", str(target)]) == 2
    err = capsys.readouterr().err
    assert "writes no report: drop --json" in err, err
    assert not target.exists()


def test_selftest_false_alarms_has_an_upper_bound(capsys) -> None:
    from harness.selftest import MAX_FALSE_ALARMS

    assert main(["selftest", "--no-mutants", "--false-alarms", str(MAX_FALSE_ALARMS + 1)]) == 2
    assert f"--false-alarms must be <= {MAX_FALSE_ALARMS}" in capsys.readouterr().err


def test_the_verdict_counts_in_the_singular_for_one() -> None:
    """``FAIL: 1 checks, 1 tensors passed, ..., 1 errors`` read wrong."""
    from harness.compare import ERROR, PASS, TensorResult
    from harness.report import LayerReport, RunReport
    from harness.reports import verdict_line

    lr = LayerReport(layer="L", dtype="float64", input_shape=(1, 2), seed=0, results=[
        TensorResult(layer="L", tensor="out", status=PASS, dtype="float64"),
        TensorResult(layer="L", tensor="dx", status=ERROR, dtype="float64", message="boom")])
    line = verdict_line(RunReport(command="check", layers=[lr]))
    assert line == "FAIL: 1 check, 1 tensor passed, 0 failed, 0 vacuous, 1 error", line


def test_a_pdf_figure_is_a_download_link_in_the_html_not_a_broken_image(tmp_path) -> None:
    """``nn-parity train --plot out.pdf --html r.html`` embedded the PDF as an ``<img>``: a
    broken image in every browser."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from harness.html_report import render_html
    from harness.report import RunReport

    pdf, png = tmp_path / "curves.pdf", tmp_path / "curves.png"
    fig = plt.figure()
    fig.savefig(pdf)
    fig.savefig(png)
    plt.close(fig)
    html = render_html(RunReport(command="train", figures=[pdf, png]))
    assert "<img" in html and 'src="data:image/png;base64,' in html
    assert 'src="data:application/pdf' not in html
    assert 'href="data:application/pdf;base64,' in html and 'download="curves.pdf"' in html


def test_version(capsys) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"nn-parity {version('nn-parity')}"


def test_an_empty_report_path_suggests_an_unset_variable(capsys) -> None:
    """``--markdown "$GITHUB_STEP_SUMMARY"`` outside GitHub Actions is ``--markdown ''``."""
    assert main([*FAST, "--markdown", ""]) == 2
    err = capsys.readouterr().err
    assert "--markdown: empty path (an unset variable? e.g. $GITHUB_STEP_SUMMARY" in err, err


def test_a_write_protected_report_is_not_replaced(tmp_path, monkeypatch, capsys) -> None:
    """A report is written to a temp file and renamed over the target, and a rename needs only
    the directory to be writable: a write-protected file (chmod 444) was silently replaced,
    where a shell's ``>`` refuses. (The check runs as ``os.access``: root may write anyway.)"""
    import os

    import harness.reports as reports

    target = tmp_path / "keep.json"
    target.write_text('{"old": true}')
    real_access = os.access

    def access(path, mode, *a, **k) -> bool:
        if os.path.realpath(path) == str(target.resolve()) and mode & os.W_OK:
            return False
        return real_access(path, mode, *a, **k)

    monkeypatch.setattr(reports.os, "access", access)
    assert main([*FAST, "--json", str(target)]) == 2
    assert "keep.json: the file is not writable (write-protected" in capsys.readouterr().err
    assert target.read_text() == '{"old": true}'


@pytest.mark.parametrize("length", [300, 250])
def test_a_report_name_near_or_over_the_limit(length, tmp_path, capsys) -> None:
    """A 300-character name was a raw OSError traceback and exit 1 (read as a mismatch),
    before the run; a 250-character one (valid) failed after the run, its temp file's name
    (the target's plus 14 characters) being too long."""
    target = tmp_path / ("a" * (length - 5) + ".json")
    code = main([*FAST, "--json", str(target)])
    err = capsys.readouterr().err
    if length > 255:
        assert code == 2 and "File name too long" in err and "Traceback" not in err, err
        assert list(tmp_path.iterdir()) == []
    else:
        assert code == 0, err
        assert json.loads(target.read_text())["ok"] is True


def test_a_crash_inside_nn_parity_is_exit_3_not_a_mismatch(monkeypatch, capsys) -> None:
    """An exception the command did not expect escaped as a traceback with Python's exit
    status 1: "a mismatch" to CI, for a bug in the tool."""
    import harness.check_command

    def crash(args):
        raise RuntimeError("boom inside the harness")

    monkeypatch.setattr(harness.check_command, "run", crash)
    assert main(FAST) == 3
    err = capsys.readouterr().err
    assert "RuntimeError: boom inside the harness" in err
    assert "nn-parity check: internal error" in err


def test_a_report_that_cannot_be_rendered_is_exit_3(monkeypatch, capsys, tmp_path) -> None:
    import harness.reports

    def broken(report):
        raise ValueError("cannot render")

    monkeypatch.setitem(harness.reports.RENDERERS, "json", ("--json", broken))
    assert main([*FAST, "--json", str(tmp_path / "r.json")]) == 3
    assert "nn-parity check: internal error" in capsys.readouterr().err


def test_only_with_a_bare_class_name_of_a_module_names_the_prefix(capsys) -> None:
    """``--module examples/user_layers.py --only Affine`` said only "no component matches
    ['Affine'] (see --list)": the components are named user_layers.Affine."""
    assert main(["check", "--module", str(REPO / "examples" / "user_layers.py"), "--only",
                 "Affine", "-q"]) == 2
    err = capsys.readouterr().err
    assert "did you mean ['user_layers.Affine'], or the pattern '*.Affine'?" in err, err


def test_a_symlink_loop_as_report_path_is_refused_before_the_run(tmp_path, capsys) -> None:
    """It was found only when the report was written, after the whole run."""
    loop = tmp_path / "loop.json"
    loop.symlink_to(loop)
    assert main([*FAST, "--json", str(loop)]) == 2
    out, err = capsys.readouterr()
    assert "Too many levels of symbolic links" in err, err
    assert "PASS" not in out  # nothing ran


@pytest.mark.parametrize("columns", ["0", "abc", ""])
def test_a_meaningless_columns_value_still_prints_the_table_and_verdict(columns) -> None:
    """``COLUMNS=0`` made rich print nothing at all, not even the verdict, with exit 0."""
    import os

    env = dict(os.environ, COLUMNS=columns)
    env.pop("NO_COLOR", None)
    proc = subprocess.run([sys.executable, "-m", "harness", *FAST], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "PASS: 1 check," in proc.stdout and "component" in proc.stdout, proc.stdout
    assert max(len(line) for line in proc.stdout.splitlines()) <= 160
