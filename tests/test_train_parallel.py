"""Parallel side-by-side training: the torch side in a worker process (harness/train.py,
harness/torch_worker.py).

The two sides of a free-mode run are independent, so running torch's steps in a forked
process must not change a single recorded number. These tests compare every record of a
parallel run with the same run done one side after the other, check when parallel mode is
chosen, and check that an error on either side, or a worker that dies, reaches the caller
and leaves no process behind.
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from harness.torch_worker import TorchSideError
from harness.train import TorchSide, TrainEvent, analyse, make_net, train_side_by_side
from scratch.multi_layer_net import MultiLayerNet
from scratch.two_layer_net import TwoLayerNet


def data(n_train: int = 600, n_test: int = 200, seed: int = 0) -> SimpleNamespace:
    rng = np.random.default_rng(seed)
    return SimpleNamespace(
        name="synthetic", source="memory",
        x_train=rng.random((n_train, 784), dtype=np.float32), t_train=rng.integers(0, 10, n_train),
        x_test=rng.random((n_test, 784), dtype=np.float32), t_test=rng.integers(0, 10, n_test))


def run(parallel: bool | None, net: Any = None, **kw: Any) -> Any:
    kw = {"iters": 40, "batch": 50, "dtype": np.float32, "threads": 1} | kw
    net = net if net is not None else make_net("two-layer", dtype=kw["dtype"], seed=0, hidden=[20])
    return train_side_by_side(net, kw.pop("data", None) or data(), parallel=parallel, **kw)


def assert_same_records(a: Any, b: Any) -> None:
    """Every per-step record, evaluation and the snapshot are equal bit for bit."""
    assert a.loss.keys() == b.loss.keys()
    for f in a.loss:
        np.testing.assert_array_equal(a.loss[f], b.loss[f], err_msg=f"loss[{f}]")
    tables = [("diffs", a.diffs, b.diffs), ("shadow_gap", a.shadow_gap, b.shadow_gap)]
    tables += [(f"floors[{s}]", a.floors[s], b.floors[s]) for s in a.floors]
    for label, ta, tb in tables:
        assert ta.keys() == tb.keys(), label
        for name in ta:
            for attr in ("abs", "scale", "ref", "index", "recorded"):
                np.testing.assert_array_equal(getattr(ta[name], attr), getattr(tb[name], attr),
                                              err_msg=f"{label}[{name}].{attr}")
    assert [(e.step, e.train_acc, e.test_acc) for e in a.evals] == \
        [(e.step, e.train_acc, e.test_acc) for e in b.evals]
    assert (a.snapshot is None) == (b.snapshot is None)
    if a.snapshot is not None:
        assert (a.snapshot.step, a.snapshot.reason) == (b.snapshot.step, b.snapshot.reason)
        for side in ("numpy", "torch"):
            for k, v in getattr(a.snapshot, side).items():
                np.testing.assert_array_equal(v, getattr(b.snapshot, side)[k])
    assert a.final_diff == b.final_diff


def test_float32_with_shadows_and_gradients_is_identical_to_sequential() -> None:
    # 600 rows / batch 50: an evaluation every 12 steps
    kw = {"iters": 40, "shadow_steps": 25, "record_grad_diff": True}
    seq, par = run(False, **kw), run(True, **kw)
    assert (seq.config.parallel, par.config.parallel) == (False, True)
    assert len(par.evals) == 4 and par.floors and par.diffs["dW1"].recorded.all()
    assert_same_records(seq, par)
    assert analyse(par).verdict == analyse(seq).verdict


def test_without_parameter_records_and_with_two_slots(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness import torch_worker

    # a slot budget for two slots only: the worker waits for the parent every other step
    monkeypatch.setattr(torch_worker, "SLOT_BUDGET", 1)
    kw = {"iters": 30, "shadow_steps": 0, "record_param_diff": False}
    seq, par = run(False, **kw), run(True, **kw)
    assert "W1" not in par.diffs and par.final_diff["W1"] > 0
    assert_same_records(seq, par)


def test_float64_bug_gives_the_same_verdict_in_parallel() -> None:
    class ScaledGrad(TwoLayerNet):
        def gradient(self, x: np.ndarray, t: np.ndarray) -> dict:
            g = super().gradient(x, t)
            g["W1"] = g["W1"] * 1.001
            return g

    def net() -> ScaledGrad:
        return ScaledGrad(784, 20, 10, dtype=np.float64, seed=0)

    seq, par = run(False, net(), dtype=np.float64), run(True, net(), dtype=np.float64)
    assert_same_records(seq, par)
    an = analyse(par)
    assert an.agree is False and (an.first_step, an.first_tensor) == (0, "W1")


def test_convnet_is_identical_in_parallel() -> None:
    d = data(n_train=200, n_test=40)
    kw = {"iters": 6, "batch": 20, "dtype": np.float64, "data": d}
    seq = run(False, make_net("convnet", dtype=np.float64, seed=0, hidden=[16]), **kw)
    par = run(True, make_net("convnet", dtype=np.float64, seed=0, hidden=[16]), **kw)
    assert_same_records(seq, par)
    assert analyse(par).agree is True


def test_the_torch_steps_really_run_in_another_process(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    log = tmp_path / "pids"
    original = TorchSide.forward_backward

    def spy(self: TorchSide, x: Any, t: Any) -> float:
        with open(log, "a") as f:  # the worker's memory is its own: a file tells
            f.write(f"{os.getpid()}\n")
        return original(self, x, t)

    monkeypatch.setattr(TorchSide, "forward_backward", spy)
    res = run(None, iters=10, shadow_steps=0)
    assert res.config.parallel is True and res.threads["parallel"] == "process"
    pids = log.read_text().split()
    assert len(pids) == 10 and len(set(pids)) == 1 and pids[0] != str(os.getpid())
    assert res.timings["torch_step"] > 0 and res.timings["torch_eval"] > 0  # sent back
    log.unlink()
    run(False, iters=3, shadow_steps=0)
    assert log.read_text().split() == [str(os.getpid())] * 3


@pytest.mark.parametrize(("kw", "parallel"), [
    ({}, True),                                    # free, both, one thread each: 2 cores
    ({"mode": "lockstep"}, False),                 # torch is re-synced from NumPy every step
    ({"frameworks": ("numpy",)}, False),
    ({"threads": None}, False),                    # the libraries' own pools would fight
    ({"threads": 2}, False),                       # a forked worker runs torch on one thread
])
def test_automatic_choice(kw: dict[str, Any], parallel: bool) -> None:
    assert run(None, iters=2, **kw).config.parallel is parallel


def dropout_net() -> MultiLayerNet:
    return MultiLayerNet(784, [20], 10, use_dropout=True, dropout_ratio=0.2, dtype=np.float64,
                         seed=0)


def test_dropout_stays_sequential_and_parallel_true_says_why() -> None:
    # the Dropout twin installs torch's mask in the scratch layer: torch's forward comes first
    res = run(None, dropout_net(), dtype=np.float64, iters=4)
    assert res.config.parallel is False and analyse(res).agree is True
    with pytest.raises(ValueError, match="Dropout"):
        run(True, dropout_net(), dtype=np.float64, iters=2)
    with pytest.raises(ValueError, match="free mode"):
        run(True, mode="lockstep", iters=2)
    with pytest.raises(ValueError, match="both frameworks"):
        run(True, frameworks=("torch",), iters=2)
    with pytest.raises(ValueError, match="threads 1"):
        run(True, threads=2, iters=2)


def test_an_error_in_the_torch_step_reaches_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    original, calls = TorchSide.step, []

    def failing(self: TorchSide) -> None:
        calls.append(1)  # counted in the worker's own memory
        if len(calls) == 5:
            raise ArithmeticError("torch step 5 failed")
        original(self)

    monkeypatch.setattr(TorchSide, "step", failing)
    with pytest.raises(TorchSideError, match="torch step 5 failed") as info:
        run(True, iters=20, shadow_steps=0)
    assert "ArithmeticError" in str(info.value) and "in failing" in str(info.value)  # traceback
    assert not multiprocessing.active_children()


def test_an_error_in_the_numpy_step_stops_the_worker() -> None:
    class Breaks(TwoLayerNet):
        calls = 0

        def gradient(self, x: np.ndarray, t: np.ndarray) -> dict:
            Breaks.calls += 1
            if Breaks.calls == 7:
                raise FloatingPointError("numpy step 7 failed")
            return super().gradient(x, t)

    with pytest.raises(FloatingPointError, match="numpy step 7 failed"):
        run(True, Breaks(784, 20, 10, dtype=np.float32, seed=0), iters=20, shadow_steps=0)
    assert not multiprocessing.active_children()


def test_a_worker_that_dies_is_reported_with_its_exit_code() -> None:
    def kill_worker(ev: TrainEvent) -> None:
        if ev.kind == "step" and ev.step == 2:
            for child in multiprocessing.active_children():
                child.kill()

    with pytest.raises(TorchSideError, match="exit code -9"):
        run(True, iters=400, batch=10, shadow_steps=0, callbacks=[kill_worker])
    assert not multiprocessing.active_children()


def test_cli_parallel_flags(mnist_dir: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main

    outs = {}
    for flag in ("--parallel", "--no-parallel"):
        assert main(["train", "--data-dir", str(mnist_dir), "--iters", "20", flag]) == 0
        outs[flag] = capsys.readouterr().out
    assert "ran in a worker process, in parallel" in outs["--parallel"]
    assert "ran in a worker process" not in outs["--no-parallel"]
    assert main(["train", "--data-dir", str(mnist_dir), "--iters", "2", "--mode", "lockstep",
                 "--parallel"]) == 2
    assert "--parallel needs --mode free" in capsys.readouterr().err
    assert main(["train", "--data-dir", str(mnist_dir), "--iters", "2", "--threads", "2",
                 "--parallel"]) == 2
    assert "--threads 1" in capsys.readouterr().err


def test_cli_reports_a_failing_torch_side_as_an_error(mnist_dir: Any, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main

    def broken(self: TorchSide) -> None:
        raise ValueError("a twin that cannot step")

    monkeypatch.setattr(TorchSide, "step", broken)
    assert main(["train", "--data-dir", str(mnist_dir), "--iters", "5", "-q"]) == 2
    err = capsys.readouterr().err
    assert "nn-parity train: error: the torch side failed at step 0" in err
    assert "a twin that cannot step" in err


def test_output_of_the_worker_reaches_stderr(monkeypatch: pytest.MonkeyPatch,
                                             capfd: pytest.CaptureFixture[str]) -> None:
    import sys

    original = TorchSide.step

    def talkative(self: TorchSide) -> None:
        print("a line from the torch worker", file=sys.stderr)
        original(self)

    monkeypatch.setattr(TorchSide, "step", talkative)
    res = run(True, iters=3, shadow_steps=0)
    assert res.config.parallel is True
    assert capfd.readouterr().err.count("a line from the torch worker") == 3
