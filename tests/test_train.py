"""Side-by-side training on the real MNIST (harness/train.py, nn-parity train).

Short runs (a few hundred steps) on the real data prove float64 parity, the float32 verdict
for correct code, the float32 lockstep verdict for a 0.1% bug in one gradient, the plot, one
framework alone and the offline message. One full-length classic run (10,000 steps,
float64) checks the acceptance numbers end to end through the CLI.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from harness.cli import main
from harness.train import (
    LOSS_ATOL_FLOAT64,
    NOISE_RATIO_LIMIT,
    TrainEvent,
    analyse,
    batch_indices,
    cast_net,
    evaluation_steps,
    iter_per_epoch,
    make_net,
    make_optimizer_pair,
    to_run_report,
    train_side_by_side,
)
from scratch.two_layer_net import TwoLayerNet

REPO = Path(__file__).resolve().parents[1]


class ScaledGradNet(TwoLayerNet):
    """A real bug, 0.1% too large: dW1 is scaled by 1.001 (every other tensor is right)."""

    factor = 1.001

    def gradient(self, x: np.ndarray, t: np.ndarray) -> dict:
        grads = super().gradient(x, t)
        grads["W1"] = grads["W1"] * grads["W1"].dtype.type(self.factor)
        return grads


@pytest.fixture(scope="module")
def mnist(mnist_dir: Path):
    from harness.data import load_dataset

    return load_dataset("mnist", data_dir=mnist_dir)


def tiny_data(n_train: int = 600, n_test: int = 200, seed: int = 0, side: int = 28):
    """A small synthetic data set (for the slow convnet and for API edge cases)."""
    rng = np.random.default_rng(seed)
    d = side * side
    return SimpleNamespace(
        name="synthetic", source="memory",
        x_train=rng.random((n_train, d), dtype=np.float32),
        t_train=rng.integers(0, 10, n_train), x_test=rng.random((n_test, d), dtype=np.float32),
        t_test=rng.integers(0, 10, n_test))


# ---------------------------------------------------------------------------------------
# The classic schedule


def test_evaluation_schedule_is_the_classic_one() -> None:
    ipe = iter_per_epoch(60000, 100)
    assert ipe == 600
    steps = evaluation_steps(10000, ipe)
    assert len(steps) == 17
    assert steps[:3] == [0, 600, 1200] and steps[-1] == 9600
    assert evaluation_steps(5, iter_per_epoch(50, 100)) == [0, 1, 2, 3, 4]  # max(N/batch, 1)


def test_batch_stream_is_sampling_with_replacement() -> None:
    a = batch_indices(np.random.default_rng(0), 60000, 100)
    b = batch_indices(np.random.default_rng(0), 60000, 100)
    assert a.shape == (100,) and np.array_equal(a, b)
    many = batch_indices(np.random.default_rng(1), 10, 1000)
    assert many.min() == 0 and many.max() == 9  # with replacement


# ---------------------------------------------------------------------------------------
# float64: parity to rounding


def test_float64_free_running_parity(mnist) -> None:
    events: list[str] = []
    result = train_side_by_side(None, mnist, iters=601, dtype=np.float64, record_grad_diff=True,
                                callbacks=[lambda ev: events.append(ev.kind)])
    an = analyse(result)
    loss_gap = np.abs(result.loss["numpy"] - result.loss["torch"])
    assert loss_gap.max() <= LOSS_ATOL_FLOAT64
    assert an.agree is True, an.verdict
    assert an.tensors["loss"].max_abs == pytest.approx(loss_gap.max())
    for k in ("W1", "b1", "W2", "b2", "dW1"):
        assert an.tensors[k].max_rel < 1e-12, (k, an.tensors[k])
    assert max(result.final_diff.values()) < 1e-13
    # both frameworks see the same batches from the same weights: identical accuracies
    assert [e.step for e in result.evals] == [0, 600]
    for e in result.evals:
        assert e.train_acc["numpy"] == e.train_acc["torch"]
        assert e.test_acc["numpy"] == e.test_acc["torch"]
    assert result.evals[-1].test_acc["numpy"] > 0.85
    assert events.count("step") == 601 and events.count("eval") == 2 and events[-1] == "end"
    assert result.threads["torch_threads"] == 1
    assert "AGREE" in an.verdict


def test_float64_bug_is_caught_at_the_first_step(mnist) -> None:
    result = train_side_by_side(lambda dtype: ScaledGradNet(dtype=dtype, seed=0), mnist, iters=50,
                                dtype=np.float64)
    an = analyse(result)
    assert an.agree is False
    assert (an.first_step, an.first_tensor) == (0, "W1")  # the update already differs
    assert "DISAGREE" in an.verdict and "W1[" in an.verdict


# ---------------------------------------------------------------------------------------
# float32: judged against the rounding noise floor


def test_float32_free_running_correct_code_agrees(mnist) -> None:
    result = train_side_by_side(None, mnist, iters=400, dtype=np.float32, shadow_steps=300)
    an = analyse(result)
    assert an.agree is True, an.verdict
    assert an.judged_steps == 300
    loss = an.tensors["loss"]
    assert loss.max_ratio <= NOISE_RATIO_LIMIT
    assert loss.floor_numpy > 0 and loss.floor_torch > 0  # the noise floor is real, not zero
    assert loss.unjudged_max_abs is not None  # steps 300..399 reported, not judged
    assert an.shadow_ok is True
    assert "rounding noise" in an.verdict and "judged over steps 0-299" in an.verdict
    # float32 really is noisier than float64: the gap is far above float64 rounding
    assert loss.max_abs > 1e-9


def test_float32_lockstep_correct_code_agrees(mnist) -> None:
    result = train_side_by_side(None, mnist, iters=200, dtype=np.float32, mode="lockstep")
    an = analyse(result)
    assert an.agree is True, an.verdict
    assert an.judged_steps == 200
    assert set(an.tensors) == {"loss", "dW1", "db1", "dW2", "db2", "W1", "b1", "W2", "b2"}
    assert all(t.max_ratio <= NOISE_RATIO_LIMIT for t in an.tensors.values())
    report = to_run_report(result, an)
    assert report.ok and report.layers and all(r.ok for r in report.results)


def test_float32_lockstep_catches_a_0_1_percent_bug_in_dW1(mnist) -> None:
    result = train_side_by_side(lambda dtype: ScaledGradNet(dtype=dtype, seed=0), mnist,
                                iters=200, dtype=np.float32, mode="lockstep")
    an = analyse(result)
    assert an.agree is False
    assert an.first_step == 0 and an.first_tensor == "dW1"
    assert an.first_index is not None and len(an.first_index) == 2
    assert an.first_ratio > 100  # far beyond what rounding can explain (2)
    dw1 = an.tensors["dW1"]
    assert dw1.exceeded_steps == dw1.judged_steps == 200  # visible at every step
    for name in ("loss", "db1", "dW2", "db2"):  # nothing else is wrong
        assert an.tensors[name].first_step is None, name
    assert "DISAGREE" in an.verdict and "step 0" in an.verdict and "dW1[" in an.verdict
    assert "a real difference" in an.verdict
    report = to_run_report(result, an)
    assert report.ok is False
    failed = [r for r in report.results if not r.ok]
    assert [r.tensor for r in failed][:1] == ["dW1"]
    assert failed[0].extra["step"] == 0


def test_lockstep_bug_is_larger_than_the_free_running_drift(mnist) -> None:
    """The small bug against rounding: lockstep keeps the floor at single-step rounding."""
    ok = analyse(train_side_by_side(None, mnist, iters=100, dtype=np.float32, mode="lockstep"))
    bug = analyse(train_side_by_side(lambda dtype: ScaledGradNet(dtype=dtype, seed=0), mnist,
                                     iters=100, dtype=np.float32, mode="lockstep"))
    assert bug.tensors["dW1"].max_abs > 100 * ok.tensors["dW1"].max_abs


def test_float32_without_shadows_is_not_judged(mnist) -> None:
    result = train_side_by_side(None, mnist, iters=20, dtype=np.float32, shadow_steps=0)
    an = analyse(result)
    assert an.agree is None and "NOT JUDGED" in an.verdict
    assert to_run_report(result, an).ok


# ---------------------------------------------------------------------------------------
# Building blocks


def test_cast_net_keeps_params_shared_with_layers() -> None:
    net = TwoLayerNet(dtype=np.float32, seed=3)
    net64 = cast_net(net, np.float64)
    assert net64.params["W1"].dtype == np.float64
    assert net64.layers["Affine1"].params["W"] is net64.params["W1"]
    assert np.array_equal(net64.params["W1"], net.params["W1"].astype(np.float64))
    assert net.params["W1"].dtype == np.float32  # the original is untouched


def test_optimizer_pairs_match_in_float64(mnist) -> None:
    for name in ("momentum", "adam"):
        result = train_side_by_side(None, mnist, iters=30, lr=0.01, optimizer=name,
                                    dtype=np.float64)
        an = analyse(result)
        assert an.agree is True, (name, an.verdict)
    pair = make_optimizer_pair("sgd", None, 0.1)
    assert pair.torch is None and pair.scratch.lr == 0.1
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer_pair("lbfgs", None, 0.1)


def test_multi_layer_and_convnet_train_side_by_side() -> None:
    data = tiny_data(n_train=300, n_test=100)
    net = make_net("multi-layer", dtype=np.float64, seed=0, hidden=[20, 20])
    an = analyse(train_side_by_side(net, data, iters=20, batch=50, dtype=np.float64))
    assert an.agree is True, an.verdict
    conv = make_net("convnet", dtype=np.float64, seed=0, hidden=[20])
    an = analyse(train_side_by_side(conv, data, iters=4, batch=20, dtype=np.float64))
    assert an.agree is True, an.verdict


def test_argument_errors(mnist) -> None:
    with pytest.raises(ValueError, match="lockstep"):
        train_side_by_side(None, mnist, iters=2, mode="lockstep", frameworks=("numpy",))
    with pytest.raises(ValueError, match="mode"):
        train_side_by_side(None, mnist, iters=2, mode="sideways")
    with pytest.raises(ValueError, match="frameworks"):
        train_side_by_side(None, mnist, iters=2, frameworks=("jax",))
    with pytest.raises(TypeError, match="x_train"):
        train_side_by_side(None, object(), iters=2)


def test_net_loss_method_is_restored(mnist) -> None:
    net = TwoLayerNet(seed=0)
    train_side_by_side(net, mnist, iters=3, frameworks=("numpy",))
    assert "loss" not in vars(net)


def test_threads_are_limited_and_restored() -> None:
    import torch

    from harness.threads import limit_threads, numpy_threads

    before_np, before_t = numpy_threads(), torch.get_num_threads()
    with limit_threads(1, 1) as info:
        assert torch.get_num_threads() == 1 and info["torch_threads"] == 1
        if before_np is not None:
            assert numpy_threads() == 1
    assert torch.get_num_threads() == before_t and numpy_threads() == before_np


# ---------------------------------------------------------------------------------------
# The CLI


def test_cli_plot_json_and_per_epoch_lines(mnist_dir: Path, tmp_path: Path, capsys) -> None:
    png, svg, js = tmp_path / "out.png", tmp_path / "out.svg", tmp_path / "out.json"
    csv_path, md, html = tmp_path / "curves.csv", tmp_path / "out.md", tmp_path / "out.html"
    rc = main(["train", "--dataset", "mnist", "--data-dir", str(mnist_dir), "--iters", "601",
               "--dtype", "float32", "--plot", str(png), "--plot", str(svg), "--json", str(js),
               "--curves", str(csv_path), "--markdown", str(md), "--html", str(html)])
    out = capsys.readouterr().out
    assert rc == 0, out
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert b"<svg" in svg.read_bytes()[:2000]
    assert "numpy train acc, test acc" in out and "torch train acc, test acc" in out
    assert "epoch   1 (step   600)" in out and "AGREE within rounding noise" in out
    report = json.loads(js.read_text())
    s = report["summary"]
    assert report["ok"] is True and s["agree"] is True
    assert s["config"]["dtype"] == "float32" and len(s["evaluations"]) == 2
    assert s["first_step_exceeding"] is None and s["judged_steps"] == 600  # one epoch
    assert s["ratio_to_noise_floor"]["loss"] <= NOISE_RATIO_LIMIT
    assert [row["tensor"] for row in s["divergence"]] == ["loss", "W1", "b1", "W2", "b2"]
    assert s["evaluations"][1]["step"] == 600 and "torch_test_acc" in s["evaluations"][1]
    assert report["figures"] == [str(png), str(svg)]
    lines = csv_path.read_text().splitlines()
    assert len(lines) == 602 and lines[0].startswith("step,loss_numpy,loss_torch,absdiff_loss")
    assert "floor_torch_loss" in lines[0]
    assert "AGREE" in md.read_text() and html.read_text().startswith("<!DOCTYPE html>")


@pytest.mark.parametrize("framework", ["numpy", "torch"])
def test_cli_one_framework_alone(mnist_dir: Path, framework: str, capsys) -> None:
    rc = main(["train", "--data-dir", str(mnist_dir), "--iters", "30", "--frameworks", framework])
    out = capsys.readouterr().out
    assert rc == 0
    other = "torch" if framework == "numpy" else "numpy"
    assert f"{framework} train acc, test acc" in out and f"{other} train acc" not in out
    assert "nothing to compare" in out


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_offline_without_data_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "NN_PARITY_DATA": str(empty), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "NN_PARITY_MIRRORS": f"http://127.0.0.1:{_closed_port()}/"}
    proc = subprocess.run([sys.executable, "-m", "harness", "train", "--data-dir", str(empty),
                           "--iters", "5"], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "nn-parity train: error:" in proc.stderr and "mnist" in proc.stderr.lower()


# ---------------------------------------------------------------------------------------
# The full classic experiment (10,000 steps, float64): about 30 s on an idle 2-core machine


@pytest.mark.slow
def test_full_classic_experiment_float64(mnist_dir: Path, tmp_path: Path, capsys) -> None:
    png, js = tmp_path / "classic.png", tmp_path / "classic.json"
    rc = main(["train", "--dataset", "mnist", "--data-dir", str(mnist_dir), "--iters", "10000",
               "--batch", "100", "--lr", "0.1", "--hidden", "50", "--dtype", "float64",
               "--seed", "0", "--plot", str(png), "--json", str(js), "--quiet"])
    capsys.readouterr()
    assert rc == 0
    s = json.loads(js.read_text())["summary"]
    assert len(s["evaluations"]) == 17
    for f in ("numpy", "torch"):
        assert s["accuracy"][f]["final_test"] >= 0.965
    assert s["max_abs_diff"]["loss"] <= 1e-9
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_train_event_is_exported() -> None:
    assert TrainEvent.__dataclass_fields__["kind"]
