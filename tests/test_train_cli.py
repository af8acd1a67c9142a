"""``nn-parity train`` as a new user meets it (harness/train_command.py).

Bad option values are one-line usage errors (exit 2) before any data is loaded; --plot
extensions are checked before the run; --curves is written atomically and an unwritable path
is exit 2; the verdict line is the same in -q, JSON, JUnit and Markdown; each optimizer has a
learning rate that trains; an unstable run's disagreement carries a hint; the final accuracy
is labelled with the step it was measured at. Short runs only (at most 300 steps).
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from harness.cli import main
from harness.train import (
    DEFAULT_LR,
    analyse,
    evaluation_steps,
    instability,
    iter_per_epoch,
    summary_dict,
    to_run_report,
    train_side_by_side,
    write_curves,
)


def _no_data(tmp_path: Path) -> list[str]:
    """A data folder with nothing in it and no download: a run that got past the option
    checks would fail on the data instead (with a message that names no option)."""
    empty = tmp_path / "no-data"
    empty.mkdir(exist_ok=True)
    return ["train", "--data-dir", str(empty), "--no-download", "--iters", "5"]


# ---------------------------------------------------------------------------------------
# 1. Bad numeric values: exit 2, one line naming the option, before loading the data


@pytest.mark.parametrize("argv, flag", [
    (["--lr", "-0.1"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--lr", "inf"], "--lr"),
    (["--lr", "0"], "--lr"),
    (["--hidden", "0"], "--hidden"),
    (["--hidden", "-3"], "--hidden"),
    (["--net", "multi-layer", "--hidden", "20", "0"], "--hidden"),
    (["--hidden", "50", "50"], "--hidden"),
    (["--seed", "-1"], "--seed"),
    (["--threads", "-1"], "--threads"),
    (["--eval-chunk", "0"], "--eval-chunk"),
    (["--eval-chunk", "-1"], "--eval-chunk"),
    (["--iters", "0"], "--iters"),
    (["--batch", "-5"], "--batch"),
])
def test_bad_values_are_one_line_usage_errors(tmp_path: Path, capsys: Any, argv: list[str],
                                               flag: str) -> None:
    rc = main([*_no_data(tmp_path), *argv])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"nn-parity train: error: {flag}"), err
    assert "Traceback" not in err


def test_the_api_refuses_a_bad_eval_chunk_and_lr(subset: SimpleNamespace) -> None:
    for kw in ({"eval_chunk": 0}, {"eval_chunk": -1}, {"lr": float("nan")}, {"lr": float("inf")},
               {"lr": -0.1}):
        with pytest.raises(ValueError):
            train_side_by_side(None, subset, iters=2, **kw)


# ---------------------------------------------------------------------------------------
# 2. --plot: the extension is checked before the run


@pytest.mark.parametrize("name, why", [("x.txt", "format '.txt' is not supported"),
                                       ("noext", "no file extension")])
def test_plot_extension_is_checked_before_the_run(tmp_path: Path, capsys: Any, name: str,
                                                  why: str) -> None:
    target = tmp_path / "out" / name
    rc = main([*_no_data(tmp_path), "--plot", str(target)])
    err = capsys.readouterr().err
    assert rc == 2 and f"--plot {target}: {why}" in err and ".png" in err, err
    assert not (tmp_path / "out").exists()


def test_plot_into_an_existing_directory_is_a_usage_error(tmp_path: Path, capsys: Any) -> None:
    adir = tmp_path / "adir"
    adir.mkdir()
    rc = main([*_no_data(tmp_path), "--plot", str(adir)])
    assert rc == 2 and "is a directory" in capsys.readouterr().err


def test_plot_training_refuses_a_path_without_a_known_extension(subset: SimpleNamespace,
                                                                tmp_path: Path) -> None:
    from harness.plots import check_plot_path, plot_formats, plot_training

    assert {"png", "svg", "pdf"} <= set(plot_formats())
    check_plot_path(tmp_path / "fig.PNG")  # matplotlib reads the suffix in any case
    result = train_side_by_side(None, subset, iters=2)
    for name in ("noext", "fig.txt"):
        with pytest.raises(ValueError):
            plot_training(result, tmp_path / name)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------
# 3. --curves: atomic, and an unwritable path is exit 2 naming --curves


def test_write_curves_is_atomic(subset: SimpleNamespace, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    result = train_side_by_side(None, subset, iters=3)
    path = tmp_path / "curves.csv"
    path.write_text("previous run\n")

    def refuse(*_: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("harness.reports.os.replace", refuse)
    with pytest.raises(OSError):
        write_curves(result, path)
    assert path.read_text() == "previous run\n"  # never half-written, never clobbered
    assert [p.name for p in tmp_path.iterdir()] == ["curves.csv"]  # no temp file left
    monkeypatch.undo()
    write_curves(result, path)
    lines = path.read_text().splitlines()
    assert len(lines) == 4 and lines[0].startswith("step,loss_numpy,loss_torch")


@pytest.mark.skipif(not os.path.isfile("/proc/version"), reason="needs Linux /proc")
def test_unwritable_curves_is_exit_2_naming_curves(mnist_dir: Path, capsys: Any) -> None:
    rc = main(["train", "--data-dir", str(mnist_dir), "--iters", "3", "-q",
               "--curves", "/proc/version"])
    err = capsys.readouterr().err
    assert rc == 2 and "nn-parity train: error: --curves /proc/version" in err, err
    assert "Traceback" not in err


@pytest.mark.skipif(not os.path.isfile("/proc/version"), reason="needs Linux /proc")
def test_one_unwritable_output_does_not_cost_the_others(mnist_dir: Path, tmp_path: Path,
                                                        capsys: Any) -> None:
    js, png = tmp_path / "r.json", tmp_path / "curve.png"
    rc = main(["train", "--data-dir", str(mnist_dir), "--iters", "3", "-q", "--curves",
               "/proc/version", "--plot", str(png), "--json", str(js)])
    err = capsys.readouterr().err
    assert rc == 2 and "--curves /proc/version: cannot write the curves" in err, err
    assert png.stat().st_size > 0  # the figure and the JSON report are still written
    report = json.loads(js.read_text())
    assert report["exit_code"] == 2 and "--curves /proc/version" in report["output_errors"][0]


# ---------------------------------------------------------------------------------------
# 4. One verdict line: -q, JSON, JUnit and Markdown agree with the exit code


def test_the_verdict_line_is_the_same_everywhere(mnist_dir: Path, tmp_path: Path,
                                                  capsys: Any) -> None:
    js, xml, md = tmp_path / "r.json", tmp_path / "r.xml", tmp_path / "r.md"
    # RMSprop at lr 0.1 blows up (loss 2.3 -> 14.3 at step 1): free-running float64 parts
    rc = main(["train", "--data-dir", str(mnist_dir), "--optimizer", "rmsprop", "--lr", "0.1",
               "--iters", "30", "-q", "--json", str(js), "--junit-xml", str(xml),
               "--markdown", str(md)])
    out = capsys.readouterr().out
    assert rc == 1
    lines = out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("DISAGREE"), out
    report = json.loads(js.read_text())
    assert report["verdict"] == lines[0] == report["summary"]["verdict"]
    assert report["exit_code"] == 1 and report["ok"] is False
    root = ET.parse(xml).getroot()
    assert int(root.get("failures", "0")) + int(root.get("errors", "0")) > 0
    text = md.read_text()
    assert f"`{lines[0]}`" in text.replace("\\|", "|")
    config_row = next(r for r in text.splitlines() if r.startswith("| config |"))
    assert "{'" not in config_row and "True" not in config_row and "None" not in config_row
    assert "optimizer rmsprop" in config_row and "lr 0.1" in config_row


def test_agree_run_prints_one_agree_line(mnist_dir: Path, capsys: Any) -> None:
    rc = main(["train", "--data-dir", str(mnist_dir), "--iters", "30", "-q"])
    out = capsys.readouterr().out
    assert rc == 0 and len(out.splitlines()) == 1 and out.startswith("AGREE (float64"), out


def test_one_framework_alone_has_a_verdict_word(subset: SimpleNamespace) -> None:
    result = train_side_by_side(None, subset, iters=2, frameworks=("numpy",))
    report = to_run_report(result)
    assert report.verdict is not None and report.verdict.startswith("NOT COMPARED: only numpy")
    assert report.ok


# ---------------------------------------------------------------------------------------
# 5. A learning rate per optimizer; a hint when unstable training parts


def test_each_optimizer_has_its_own_default_lr(subset: SimpleNamespace) -> None:
    assert DEFAULT_LR == {"sgd": 0.1, "momentum": 0.01, "nesterov": 0.01, "adagrad": 0.01,
                          "rmsprop": 0.001, "adam": 0.001}
    for name, lr in DEFAULT_LR.items():
        assert train_side_by_side(None, subset, iters=1, optimizer=name).config.lr == lr


def test_rmsprop_default_lr_trains_and_agrees(mnist_dir: Path, capsys: Any) -> None:
    # with lr 0.1 this run DISAGREEd in float64 free mode on correct code
    rc = main(["train", "--data-dir", str(mnist_dir), "--optimizer", "rmsprop", "--iters", "30"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "rmsprop lr 0.001 (the default for rmsprop" in out


def test_unstable_free_run_disagreement_carries_the_lockstep_hint(
        subset: SimpleNamespace) -> None:
    free = train_side_by_side(None, subset, iters=200, optimizer="rmsprop", lr=0.1)
    an = analyse(free)
    assert an.agree is False  # the exit code stays honest
    assert instability(free) is not None
    assert an.hint is not None and "--mode lockstep" in an.hint and an.hint in an.verdict
    assert summary_dict(free, an)["hint"] == an.hint
    lock = analyse(train_side_by_side(None, subset, iters=200, optimizer="rmsprop", lr=0.1,
                                      mode="lockstep"))
    assert lock.agree is True and lock.hint is None, lock.verdict
    stable = train_side_by_side(None, subset, iters=30)
    assert instability(stable) is None and analyse(stable).hint is None


# ---------------------------------------------------------------------------------------
# 6. The "final" accuracy is labelled with its step; the classic schedule is unchanged


def test_final_accuracy_is_labelled_with_its_step(mnist_dir: Path, tmp_path: Path,
                                                   capsys: Any) -> None:
    js, md = tmp_path / "r.json", tmp_path / "r.md"
    rc = main(["train", "--data-dir", str(mnist_dir), "--iters", "30", "--json", str(js),
               "--markdown", str(md)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "test acc (step 0)" in out and "train acc (step 0)" in out
    assert "(final)" not in out
    acc = json.loads(js.read_text())["summary"]["accuracy"]
    assert acc["numpy"]["final_step"] == 0 and acc["torch"]["first_step"] == 0
    row = next(r for r in md.read_text().splitlines() if r.startswith("| accuracy |"))
    assert "final_step 0" in row


def test_the_classic_schedule_keeps_17_evaluations() -> None:
    steps = evaluation_steps(10000, iter_per_epoch(60000, 100))
    assert len(steps) == 17 and steps[-1] == 9600
    assert evaluation_steps(300, 600.0) == [0]


def test_summary_config_is_still_a_dict_in_json(subset: SimpleNamespace) -> None:
    result = train_side_by_side(None, subset, iters=2)
    s = summary_dict(result, analyse(result))
    assert s["config"]["dtype"] == "float64" and isinstance(s["config"]["hidden"], list)
    assert "record_param_diff true" in str(s["config"])
    assert np.isclose(s["config"]["lr"], 0.1)
