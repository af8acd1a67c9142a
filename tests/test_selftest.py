"""The mutation self-test: every injected bug is caught by the check that should catch it, the
correct components pass, a surviving mutant fails the run, and false alarms are counted."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import scratch
from harness.cli import main
from harness.compare import FAIL, PASS, TensorResult
from harness.false_alarms import SPECIFIC, run_false_alarms, scaling
from harness.mutants import (
    BROKEN,
    CATALOGUE,
    CHECKS,
    CRASHED,
    KILLED,
    SURVIVED,
    Mutant,
    epoch_loop_schedule,
    run_mutant,
    square_affine,
    sub,
)
from harness.report import LayerReport
from harness.selftest import run_selftest

REQUIRED = {  # the bugs issue 5 names, one mutant each at least
    "sigmoid-precedence", "softmax-1d-on-batch", "relu-inplace-dout",
    "loss-grad-not-divided-by-batch", "bias-grad-wrong-axis", "transposed-weight-dx",
    "affine-4d-no-reshape", "batchnorm-running-var-unbiased", "batchnorm-momentum-swap",
    "dropout-mask-not-in-backward", "im2col-wrong-stride", "maxpool-grad-wrong-element",
    "momentum-sign-error", "adam-no-bias-correction", "weight-decay-on-biases",
    "epoch-schedule-off-by-one", "float32-accumulation",
}
REPO = Path(__file__).resolve().parents[1]


def test_the_catalogue_covers_the_named_bugs_with_known_checks():
    names = [m.name for m in CATALOGUE]
    assert len(names) >= 20 and len(set(names)) == len(names)
    assert REQUIRED <= set(names), REQUIRED - set(names)
    assert {m.check for m in CATALOGUE} <= set(CHECKS)
    assert all(m.description and m.expect and ":" in m.target for m in CATALOGUE)


@pytest.mark.parametrize("mutant", CATALOGUE, ids=lambda m: m.name)
def test_every_mutant_is_caught_by_its_check_and_the_correct_component_passes(mutant):
    outcome = run_mutant(mutant)
    assert outcome.baseline is not None and outcome.baseline.status == PASS, str(outcome.baseline)
    assert outcome.status == KILLED, outcome.detail
    assert outcome.expected_hit, outcome.detail  # named by the tensor it was expected to hit
    assert outcome.caught_by.startswith(f"{mutant.check}: ") and outcome.difference


def test_mutants_leave_the_scratch_sources_and_classes_untouched():
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (REPO / "scratch").glob("*.py")}
    methods = (scratch.Sigmoid.backward, scratch.Affine.backward, scratch.Relu.backward)
    for m in CATALOGUE[:12]:
        run_mutant(m)
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (REPO / "scratch").glob("*.py")}
    assert before == after
    assert (scratch.Sigmoid.backward, scratch.Affine.backward, scratch.Relu.backward) == methods


@pytest.fixture
def extra_mutant(monkeypatch):
    def add(m: Mutant) -> None:
        monkeypatch.setattr("harness.mutants.CATALOGUE", [*CATALOGUE, m])
    return add


def test_a_surviving_mutant_fails_the_selftest(extra_mutant, capsys):
    extra_mutant(Mutant("equivalent", "returns the class unchanged", "scratch.layers:Relu",
                        lambda C: C, "check_layer", "dx"))
    report = run_selftest(["equivalent"], false_alarms=0, progress=False)
    assert not report.ok and report.summary["killed"] == 0
    assert report.summary["mutant_table"][0]["status"] == SURVIVED
    assert main(["selftest", "--only", "equivalent", "--false-alarms", "0"]) == 1
    assert "0/1 mutants killed (0.0%)" in capsys.readouterr().out


def test_a_failing_correct_component_fails_the_selftest(extra_mutant, monkeypatch):
    def always_fails(component, **_):
        return LayerReport("x", "float64", results=[TensorResult("x", "out", FAIL)])

    monkeypatch.setitem(CHECKS, "always_fails", always_fails)
    extra_mutant(Mutant("broken-baseline", "d", "scratch.layers:Relu", lambda C: C,
                        "always_fails", "out"))
    report = run_selftest(["broken-baseline"], false_alarms=0, progress=False)
    assert report.summary["mutant_table"][0]["status"] == BROKEN and not report.ok
    assert report.summary["baselines_failing"] == ["broken-baseline"]


def test_a_mutant_the_harness_refuses_is_killed_and_a_crash_fails_the_run(extra_mutant):
    def renamed(C):  # W renamed: check_layer refuses with a CheckError instead of crashing
        def init(self, W, b):
            C.__init__(self, W, b)
            self.params, self.grads = {"weights": W, "b": b}, {"weights": W * 0, "b": b * 0}
        return sub(C, __init__=init)

    refused = run_mutant(Mutant("renamed", "d", "scratch.layers:Affine", renamed, "check_layer",
                                "weights", {"make": square_affine, "input_shape": (3, 8)}))
    assert refused.status == KILLED and refused.caught_by == "check_layer: CheckError"
    assert "could not build a torch module" in refused.difference and refused.expected_hit
    extra_mutant(Mutant("crash", "d", "scratch.layers:Relu", lambda C: 1 / 0, "check_layer", "dx"))
    report = run_selftest(["crash"], false_alarms=0, progress=False)
    assert report.summary["mutant_table"][0]["status"] == CRASHED and not report.ok
    assert "ZeroDivisionError" in report.summary["mutant_table"][0]["detail"]


def test_the_command_prints_the_kill_table_and_writes_json(tmp_path, capsys):
    path = tmp_path / "selftest.json"
    rc = main(["selftest", "--only", "sigmoid*", "--only", "epoch*", "--false-alarms", "2",
               "--false-alarms-only", "Relu", "--json", str(path)])
    out = capsys.readouterr().out
    assert rc == 0
    for piece in ("sigmoid-precedence", "check_layer: Sigmoid.dx", "KILLED", "max abs",
                  "epoch-schedule-off-by-one", "2/2 mutants killed (100.0%)",
                  "false alarms float32 0/2, float64 0/2"):
        assert piece in out, piece
    data = json.loads(path.read_text())
    assert data["ok"] and data["summary"]["kill_rate"] == "100.0%"
    terminal_verdict = next(line for line in out.splitlines() if line.startswith("PASS: "))
    assert data["verdict"] == terminal_verdict, "the JSON verdict is the line the terminal printed"
    assert data["summary"]["mutant_table"][0]["caught_by"] == "check_layer: Sigmoid.dx"


def test_list_and_usage_errors(capsys):
    assert main(["selftest", "--list"]) == 0
    assert "weight-decay-on-biases" in capsys.readouterr().out
    assert main(["selftest", "--only", "no-such-mutant"]) == 2
    assert main(["selftest", "--false-alarms", "-1", "--no-mutants"]) == 2
    capsys.readouterr()
    assert main(["selftest", "--no-mutants", "--false-alarms", "0"]) == 2, "nothing to run"
    assert "nothing to run" in capsys.readouterr().err
    assert main(["selftest", "--no-mutants", "--false-alarms", "1",
                 "--false-alarms-only", "NOPE"]) == 2
    assert "no component matches" in capsys.readouterr().err


def test_every_correct_component_passes_random_shapes_in_both_dtypes():
    stats = run_false_alarms(4)
    assert {s.component for s in stats} >= set(SPECIFIC)
    for s in stats:
        assert s.runs == 4 and s.counts[PASS] == 4, (s.component, s.dtype, s.examples)
        assert s.worst_ratio < 1.0


def test_the_classic_schedule_has_17_evaluations_for_mnist():
    steps = epoch_loop_schedule(10000, 600.0)
    assert len(steps) == 17 and steps[:3] == [0, 600, 1200] and steps[-1] == 9600
    assert epoch_loop_schedule(40, 7.5) == [0, 15, 30]  # a fractional epoch: every second one


def test_rounding_error_grows_with_fan_in_and_magnitude():
    rows = {(r["dtype"], r["fan_in"], r["magnitude"]): r
            for r in scaling(fan_ins=(4, 1024), magnitudes=(1e-3, 1e3), seeds=3)}
    small, large = rows[("float64", 1024, 1e-3)], rows[("float64", 1024, 1e3)]
    assert large["out_abs"] > 1e3 * small["out_abs"]  # absolute error scales with magnitude
    assert rows[("float64", 1024, 1e3)]["out_scaled_eps"] > rows[("float64", 4, 1e3)]["out_scaled_eps"]
    for r in rows.values():  # relative to max|expected|: far below the scaled atol
        tol = 1e-5 if r["dtype"] == "float32" else 1e-10
        eps = float(np.finfo(r["dtype"]).eps)
        assert r["out_scaled_eps"] * eps < tol / 5


def test_an_optimizer_difference_is_told_as_numbers_even_when_its_note_says_none() -> None:
    """The kill table showed lr-cached-on-first-call's difference as a cut-off sentence
    ("W1 first differs after step 7 of 20 ... (the learning rate was changed on both"): its
    explanation mentions ``lr_schedule=None``, which read as a "returned None" message."""
    from harness.compare import FAIL, TensorResult
    from harness.mutants import describe_difference

    r = TensorResult(layer="Adam", tensor="W1", status=FAIL, dtype="float64", shape=(20, 5, 4),
                     max_abs=0.0542, max_abs_index=(19, 1, 1), mismatched=300, total=400,
                     message="W1 first differs after step 7 of 20 (index 0 = after step 1). (the "
                             "learning rate was changed ...; lr_schedule=None checks at a "
                             "constant lr)", extra={"worst_ratio": 9.7e7})
    assert describe_difference(r) == "max abs 5.42e-02 at (19, 1, 1), 9.7e+07x tolerance, from step 7"


def test_tables_without_a_false_alarm_run_say_not_measured(tmp_path) -> None:
    """``--false-alarms 0 --tables t.md`` wrote "false alarms: float32 **0** in 0 checks"."""
    from harness.cli import main

    tables = tmp_path / "t.md"
    assert main(["selftest", "--only", "sigmoid-precedence", "--false-alarms", "0", "-q",
                 "--tables", str(tables)]) == 0
    first = tables.read_text().splitlines()[0]
    assert "false alarms: not measured (--false-alarms 0)" in first, first
    assert "in 0 checks" not in first


def test_a_statistical_difference_has_no_nan_ratio() -> None:
    """dropout-keep-test-reversed read "max abs 6.00e-01, nanx tolerance"."""
    from harness.compare import FAIL, TensorResult
    from harness.mutants import describe_difference

    r = TensorResult(layer="Dropout", tensor="dropped fraction", status=FAIL, dtype="float64",
                     max_abs=0.6, total=1, mismatched=1, extra={})
    assert describe_difference(r) == "max abs 6.00e-01", describe_difference(r)


@pytest.mark.parametrize("argv, message", [
    (["--no-mutants", "--only", "sigmoid*", "--false-alarms", "1"], "--only selects mutants"),
    (["--false-alarms", "0", "--false-alarms-only", "Conv*"], "--false-alarms 0 skips it"),
])
def test_an_option_that_would_be_ignored_is_a_usage_error(argv, message, capsys) -> None:
    """Both ran, exited 0 and silently ignored the selection."""
    from harness.cli import main

    assert main(["selftest", *argv]) == 2
    assert message in capsys.readouterr().err
