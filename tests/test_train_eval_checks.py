"""Side-by-side training judges the evaluations too (harness/train.py ``EvalProbe``): the
evaluation-mode output against a torch twin with NumPy's own weights and running statistics,
``net.accuracy()`` against the argmax of ``predict()``, and BatchNorm's running statistics
against PyTorch's after the same update. Bugs that leave every training step right but the
evaluation wrong are disagreements; correct nets still agree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.cli import main
from harness.train import analyse, to_run_report, train_side_by_side
from scratch.multi_layer_net import MultiLayerNet
from scratch.normalization import BatchNormalization, Dropout
from scratch.two_layer_net import TwoLayerNet


def mlp(cls: type = MultiLayerNet, dtype: Any = np.float64, **kw: Any) -> Any:
    return cls(784, [30, 20], 10, dtype=dtype, seed=0, **kw)


def run(subset: Any, net: Any, mode: str = "free", dtype: str = "float64", iters: int = 61,
        **kw: Any) -> Any:
    r = train_side_by_side(net, subset, iters=iters, mode=mode, dtype=dtype, **kw)
    return r, analyse(r)


class PredictInTrainingMode(MultiLayerNet):  # evaluation with batch statistics and dropout
    def predict(self, x, train_flg=True):
        return super().predict(x, train_flg)


class AccuracyOverTheBatchAxis(TwoLayerNet):
    def accuracy(self, x, t):
        y = np.argmax(self.predict(x), axis=0)
        return float(np.sum(y == t[: y.shape[0]])) / float(x.shape[0])


class MomentumSwappedBatchNorm(BatchNormalization):  # running = 0.1 * running + 0.9 * mean
    def forward(self, x, train_flg=True):
        self.momentum = 1 - 0.9
        return super().forward(x, train_flg)


class NoScaleAtTestTime(Dropout):  # classic dropout that forgets * (1 - ratio) at test time
    def forward(self, x, train_flg=True):
        return super().forward(x, train_flg) if train_flg else x.copy()


def swap_layers(net: Any, old: type, new: type) -> Any:
    for layer in net.layers.values():
        if type(layer) is old:
            layer.__class__ = new
    return net


@pytest.mark.parametrize("mode", ["free", "lockstep"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_correct_batchnorm_dropout_net_agrees_with_every_check(subset, mode, dtype) -> None:
    net = mlp(dtype=dtype, use_batchnorm=True, use_dropout=True, dropout_ratio=0.3)
    r, an = run(subset, net, mode, dtype)
    assert an.agree is True and an.eval_failure is None, an.verdict
    kinds = {c.extra["check"] for c in r.eval_checks}
    assert kinds == {"eval output", "net.accuracy", "running statistics"}
    assert all(c.status == "PASS" for c in r.eval_checks)


def test_running_statistics_are_replayed_when_torch_trains_in_a_worker(subset) -> None:
    r, an = run(subset, mlp(use_batchnorm=True), "free", parallel=True)
    assert r.threads.get("parallel") == "process" and an.agree is True, an.verdict
    assert any(c.extra["check"] == "running statistics" for c in r.eval_checks)


@pytest.mark.parametrize("mode", ["free", "lockstep"])
def test_predict_in_training_mode_disagrees(subset, mode) -> None:
    _, an = run(subset, mlp(PredictInTrainingMode, use_batchnorm=True), mode)
    assert an.agree is False and an.first_step is None, an.verdict
    assert an.eval_failure["check"] == "eval output" and an.eval_failure["step"] == 0
    assert "the training steps agree, but the evaluation-mode output disagrees" in an.verdict


def test_accuracy_over_the_wrong_axis_disagrees(subset) -> None:
    _, an = run(subset, AccuracyOverTheBatchAxis(784, 30, 10, seed=0))
    assert an.agree is False and an.eval_failure["check"] == "net.accuracy", an.verdict
    assert "AccuracyOverTheBatchAxis.accuracy(x, t) on the first 500 test images returns 0" in an.verdict


@pytest.mark.parametrize("parallel", [True, False])
def test_batchnorm_momentum_swapped_disagrees_at_step_0(subset, parallel) -> None:
    net = swap_layers(mlp(use_batchnorm=True), BatchNormalization, MomentumSwappedBatchNorm)
    _, an = run(subset, net, "free", parallel=parallel)
    assert an.agree is False and an.eval_failure["check"] == "running statistics", an.verdict
    assert an.eval_failure["step"] == 0 and "running_mean" in an.eval_failure["tensor"]


def test_dropout_without_test_time_scaling_disagrees(subset) -> None:
    net = swap_layers(mlp(use_dropout=True, dropout_ratio=0.5), Dropout, NoScaleAtTestTime)
    _, an = run(subset, net, "lockstep")
    assert an.agree is False and an.eval_failure["check"] == "eval output", an.verdict


def test_a_run_that_blows_up_alike_compares_no_evaluation(subset) -> None:
    net = TwoLayerNet(784, 50, 10, weight_init_std=1.0, dtype=np.float32)
    with np.errstate(all="ignore"):
        r, an = run(subset, net, "lockstep", "float32", iters=6, lr=1e30)
    assert an.agree is True and an.eval_failure is None, an.verdict
    assert {c.status for c in r.eval_checks if c.extra["check"] == "eval output"} == {"VACUOUS"}


def test_the_report_has_the_evaluation_rows(subset) -> None:
    net = swap_layers(mlp(use_batchnorm=True), BatchNormalization, MomentumSwappedBatchNorm)
    r, an = run(subset, net, "lockstep")
    report = to_run_report(r, an)
    ev = next(lr for lr in report.layers if lr.layer.startswith("evaluation"))
    bad = [x for x in ev.results if x.status == "FAIL"]
    assert bad and "running_mean" in bad[0].tensor and "Mismatched elements" in str(bad[0])
    assert report.ok is False


def test_cli_json_summarises_the_evaluation_checks(mnist_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    assert main(["train", "--data-dir", str(mnist_dir), "--iters", "3", "-q", "--json",
                 str(out)]) == 0
    ev = json.loads(out.read_text())["summary"]["eval_checks"]
    assert ev["run"] == 2 and ev["failed"] == 0 and ev["first_failure"] is None
    assert ev["kinds"] == ["eval output", "net.accuracy"]


class Float32Accuracy(TwoLayerNet):  # right, but the mean is taken in float32
    def accuracy(self, x, t):
        return (np.argmax(self.predict(x), axis=1) == t).astype(self.dtype).mean()


class OneHotOnlyAccuracy(TwoLayerNet):  # right, for one-hot labels only
    def accuracy(self, x, t):
        return float(np.mean(np.argmax(self.predict(x), axis=1) == np.argmax(t, axis=1)))


class AccuracyWithAnotherArgument(TwoLayerNet):
    def accuracy(self, x, t, verbose):
        return 0.0


class PercentAccuracy(TwoLayerNet):
    def accuracy(self, x, t):
        return 100 * float(np.mean(np.argmax(self.predict(x), axis=1) == t))


def accuracy_row(r: Any) -> Any:
    return next(c for c in r.eval_checks if c.extra["check"] == "net.accuracy")


@pytest.mark.parametrize("cls", [Float32Accuracy, OneHotOnlyAccuracy])
def test_a_right_accuracy_in_another_style_agrees(subset, cls) -> None:
    r, an = run(subset, cls(784, 30, 10, dtype=np.float32), dtype="float32")
    assert an.agree is True and accuracy_row(r).status == "PASS", an.verdict


def test_an_accuracy_it_cannot_call_is_not_compared(subset) -> None:
    r, an = run(subset, AccuracyWithAnotherArgument(784, 30, 10))
    assert an.agree is True and accuracy_row(r).status == "VACUOUS", an.verdict
    assert "missing 1 required positional argument" in accuracy_row(r).message


def test_a_percentage_is_a_disagreement_with_a_hint(subset) -> None:
    _, an = run(subset, PercentAccuracy(784, 30, 10))
    assert an.agree is False and "a percentage?" in an.verdict
