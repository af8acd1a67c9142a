"""Side-by-side training when the user's code misbehaves (harness/train.py).

NaN/Inf on one side, a float32-only precision bug, a user's optimizer object, a gradient dict
that misses a key, an optimizer that replaces the parameter arrays, hidden sizes a net cannot
take, and which gradient a backward-pass bug is blamed on. Short runs on a subset of the real
MNIST (the evaluations are over the subset: cheap).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.cli import main
from harness.train import (
    FLOOR_ASYMMETRY_FAIL_LOCKSTEP,
    FLOOR_ASYMMETRY_LIMIT,
    analyse,
    make_net,
    make_optimizer_pair,
    summary_dict,
    to_run_report,
    train_side_by_side,
)
from scratch.functions import labels_to_indices
from scratch.layers import Affine, SoftmaxWithLoss
from scratch.multi_layer_net import MultiLayerNet
from scratch.normalization import BatchNormalization
from scratch.optimizers import SGD, Adam
from scratch.two_layer_net import TwoLayerNet

# ---------------------------------------------------------------------------------------
# Buggy user code


class SoftmaxNoMax(SoftmaxWithLoss):
    """Softmax without the max subtraction: exp overflows in float32 for large scores."""

    def forward(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        self.t_idx = labels_to_indices(np.asarray(t), x.shape[1])
        self.input_shape = x.shape
        with np.errstate(over="ignore", invalid="ignore"):
            e = np.exp(x)
            self.y = e / e.sum(axis=1, keepdims=True)
        n = x.shape[0]
        picked = self.y[np.arange(n), self.t_idx] + x.dtype.type(self.eps)
        self.loss = -np.log(picked).sum() / x.dtype.type(n)
        return self.loss


def nan_net(std: float) -> Any:
    def make(dtype: Any) -> Any:
        net = TwoLayerNet(784, 50, 10, weight_init_std=std, dtype=dtype)
        net.last_layer.__class__ = SoftmaxNoMax
        return net
    return make


class AffineHalfInF32(Affine):
    """A float32-only bug: given float32, the product is computed in float16."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        out = super().forward(x)
        if out.dtype == np.float32:
            out = (self.x.astype(np.float16) @ self.params["W"].astype(np.float16)
                   ).astype(np.float32) + self.params["b"]
        return out


def half_net(dtype: Any) -> Any:
    net = TwoLayerNet(784, 50, 10, dtype=dtype)
    net.layers["Affine2"].__class__ = AffineHalfInF32
    return net


class BNUnbiasedBackward(BatchNormalization):
    """BatchNorm backward with 2/(N-1) in the variance term (the unbiased variance)."""

    def backward(self, dout: np.ndarray) -> np.ndarray:
        d2 = self._to_2d(dout)
        self.grads["beta"] = d2.sum(axis=0)
        self.grads["gamma"] = np.sum(self.xn * d2, axis=0)
        dxn = self.gamma * d2
        dxc = dxn / self.std
        dstd = -np.sum((dxn * self.xc) / (self.std * self.std), axis=0)
        dvar = 0.5 * dstd / self.std
        dxc = dxc + (2.0 / (self.batch_size - 1)) * self.xc * dvar  # the bug
        dmu = np.sum(dxc, axis=0)
        return self._from_2d(dxc - dmu / self.batch_size)


# ---------------------------------------------------------------------------------------
# 1. NaN/Inf on one side is a disagreement


@pytest.mark.parametrize("mode", ["free", "lockstep"])
def test_float32_nan_on_the_numpy_side_only_is_a_disagreement(subset: Any, mode: str) -> None:
    r = train_side_by_side(nan_net(1.0), subset, iters=12, dtype="float32", mode=mode)
    assert np.isnan(r.loss["numpy"][1]) and np.isfinite(r.loss["torch"][0])
    an = analyse(r)
    assert an.agree is False, an.verdict
    assert an.first_step == 0 and an.nonfinite is not None and an.nonfinite.side == "numpy"
    # the loss, else in backward order: the layer closest to the loss first
    assert an.first_tensor in ("loss", "dW2" if mode == "lockstep" else "W2"), an.verdict
    assert an.verdict.startswith("DISAGREE: NaN/Inf on the NumPy side only, first at step 0")
    assert "AGREE within" not in an.verdict and "nanx" not in an.verdict
    assert "float64 shadows disagree" not in an.verdict  # lockstep copies NumPy's NaN into both
    if mode == "lockstep":
        assert "PyTorch from step" not in an.verdict  # its NaN loss is NumPy's, copied
        assert "not PyTorch's doing" in an.verdict
    report = to_run_report(r, an)
    assert report.ok is False
    s = summary_dict(r, an)
    assert s["nonfinite"]["side"] == "numpy" and s["nonfinite"]["step"] == 0
    rows = {row["tensor"]: row for row in s["divergence"]}
    assert rows["W2"]["status"] == "FAIL" and rows["W2"]["first_nonfinite_step"] == 0


@pytest.mark.parametrize("mode", ["free", "lockstep"])
def test_float64_nan_on_one_side_names_it_without_a_nan_ratio(subset: Any, mode: str) -> None:
    with np.errstate(all="ignore"):
        r = train_side_by_side(nan_net(8.0), subset, iters=5, dtype="float64", mode=mode)
    an = analyse(r)
    assert an.agree is False and (an.first_step, an.first_tensor) == (0, "loss"), an.verdict
    assert an.verdict.startswith("DISAGREE: NaN/Inf on the NumPy side only, first at step 0 in "
                                 "the loss: NumPy nan, PyTorch 14.")
    assert "nanx" not in an.verdict and "(nan" not in an.verdict


def test_report_json_of_a_one_sided_nan_fails(subset: Any, tmp_path: Path) -> None:
    from harness.reports import write_json

    r = train_side_by_side(nan_net(1.0), subset, iters=8, dtype="float32", mode="free")
    an = analyse(r)
    path = tmp_path / "nan.json"
    write_json(to_run_report(r, an), path)
    d = json.loads(path.read_text())
    assert d["ok"] is False and d["exit_code"] == 1
    assert all(row["status"] == "FAIL" for row in d["summary"]["divergence"]
               if row["tensor"] != "loss")


def test_float32_both_sides_blowing_up_alike_is_agreement_up_to_that_step(subset: Any) -> None:
    net = TwoLayerNet(784, 50, 10, weight_init_std=1.0, dtype=np.float32)
    with np.errstate(all="ignore"):
        r = train_side_by_side(net, subset, iters=6, lr=1e30, dtype="float32", mode="lockstep")
    an = analyse(r)
    assert an.stopped_at == 1 and an.nonfinite is not None and an.nonfinite.side == "both"
    assert an.agree is True and an.shadow_ok is True, an.verdict
    assert "both runs turn non-finite alike at step 1" in an.verdict
    assert to_run_report(r, an).ok is True
    assert r.snapshot is None or r.snapshot.step < 1  # no NaN-vs-NaN "comparison"


# ---------------------------------------------------------------------------------------
# 2. A float32-only bug: one framework's noise floor far above the other's


def test_float32_only_bug_fails_in_lockstep_and_warns_in_free_mode(subset: Any) -> None:
    lock = analyse(train_side_by_side(half_net, subset, iters=40, dtype="float32",
                                      mode="lockstep"))
    assert lock.agree is False, lock.verdict
    assert lock.first_step is None  # the gap itself stays within the (inflated) floor
    fa = lock.floor_asymmetry
    assert fa is not None and fa["side"] == "numpy" and fa["failed"] is True
    assert fa["ratio"] >= FLOOR_ASYMMETRY_FAIL_LOCKSTEP
    assert "the floors themselves part: NumPy's float32 noise floor" in lock.verdict

    free = analyse(train_side_by_side(half_net, subset, iters=60, dtype="float32", mode="free"))
    assert free.floor_asymmetry is not None  # in training, a warning only in free mode
    assert free.floor_asymmetry["ratio"] >= FLOOR_ASYMMETRY_LIMIT
    assert free.warnings and free.warnings[0].startswith("WARNING: NumPy's float32 noise floor")
    assert free.warnings[0] in free.verdict
    # ... but the evaluation runs the float16 product too, on the same weights as PyTorch's
    assert free.agree is False and free.first_step is None, free.verdict
    assert free.eval_failure is not None and free.eval_failure["check"] == "eval output"
    assert "the training steps agree, but the evaluation-mode output disagrees" in free.verdict


def test_correct_float32_code_has_symmetric_floors(subset: Any) -> None:
    for mode in ("lockstep", "free"):
        an = analyse(train_side_by_side(None, subset, iters=60, dtype="float32", mode=mode))
        assert an.agree is True and not an.warnings, an.verdict
        assert an.floor_asymmetry is None or an.floor_asymmetry["ratio"] < 3


# ---------------------------------------------------------------------------------------
# 3. An optimizer object instead of a name


class MyAdam(Adam):
    """A user's subclass: its torch twin is Adam's (MRO)."""


def test_a_scratch_optimizer_instance_trains_like_its_name(subset: Any) -> None:
    by_name = train_side_by_side(TwoLayerNet(seed=0), subset, iters=5, optimizer="adam",
                                 lr=0.001)
    for opt in (Adam(lr=0.001), MyAdam(lr=0.001), Adam):
        kw = {"lr": 0.001} if opt is Adam else {}
        r = train_side_by_side(TwoLayerNet(seed=0), subset, iters=5, optimizer=opt, **kw)
        assert np.array_equal(r.loss["numpy"], by_name.loss["numpy"])
        assert np.array_equal(r.loss["torch"], by_name.loss["torch"])
        assert analyse(r).agree is True
        assert r.config.lr == 0.001 and r.config.optimizer_kwargs["beta1"] == 0.9
    inst = Adam(lr=0.001)
    train_side_by_side(TwoLayerNet(seed=0), subset, iters=2, optimizer=inst)
    assert inst.iter == 0 and not inst.m  # each side trained its own copy


def test_bad_optimizer_objects_are_clear_errors(subset: Any) -> None:
    class NotScratch:
        lr = 0.1

        def update(self, params: dict, grads: dict) -> None:
            pass

    with pytest.raises(TypeError, match=r"NotScratch: its torch twin is unknown: .*register_optimizer"):
        train_side_by_side(TwoLayerNet(), subset, iters=1, optimizer=NotScratch())
    with pytest.raises(TypeError, match="optimizer must be a name"):
        train_side_by_side(TwoLayerNet(), subset, iters=1, optimizer=42)
    with pytest.raises(ValueError, match="contradicts"):
        train_side_by_side(TwoLayerNet(), subset, iters=1, optimizer=SGD(lr=0.1), lr=0.5)
    used = Adam()
    used.update({"W": np.zeros(2)}, {"W": np.ones(2)})
    with pytest.raises(ValueError, match="does not start from a fresh state"):
        make_optimizer_pair(used, None, None)


# ---------------------------------------------------------------------------------------
# 4. A gradient dict that does not match the params; an optimizer that rebinds arrays


@pytest.mark.parametrize("mode", ["free", "lockstep"])
def test_gradient_keys_must_match_the_params(subset: Any, mode: str) -> None:
    class MissingB2(TwoLayerNet):
        def gradient(self, x: np.ndarray, t: np.ndarray) -> dict:
            g = super().gradient(x, t)
            del g["b2"]
            g["W3"] = g["W2"]
            return g

    with pytest.raises(ValueError, match=r"missing \['b2'\], extra \['W3'\]"):
        train_side_by_side(MissingB2(), subset, iters=2, mode=mode)


def test_an_optimizer_that_replaces_the_arrays_is_named(subset: Any) -> None:
    class SGDRebind(SGD):
        def update(self, params: dict, grads: dict) -> None:
            for key in params:
                params[key] = params[key] - params[key].dtype.type(self.lr) * grads[key]

    with pytest.raises(ValueError, match=r"replaced net.params\['W1', 'b1', 'W2', 'b2'\] with "
                                         "new arrays instead of updating them in place"):
        train_side_by_side(TwoLayerNet(), subset, iters=2, optimizer=SGDRebind(lr=0.1))


# ---------------------------------------------------------------------------------------
# 5. Hidden sizes; the config records them and the optimizer's hyper-parameters


def test_nets_with_one_hidden_layer_refuse_several_sizes() -> None:
    for name in ("two-layer", "convnet"):
        with pytest.raises(ValueError, match="one hidden layer"):
            make_net(name, hidden=[50, 60])
    assert list(make_net("multi-layer", hidden=[20, 30]).params["W2"].shape) == [20, 30]


def test_cli_hidden_sizes(mnist_dir: Path, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["train", "--data-dir", str(mnist_dir), "--net", "two-layer", "--hidden", "50",
               "60", "--iters", "2"])
    assert rc == 2 and "one hidden layer" in capsys.readouterr().err
    js = tmp_path / "out.json"
    rc = main(["train", "--data-dir", str(mnist_dir), "--net", "multi-layer", "--hidden", "20",
               "30", "--iters", "2", "--optimizer", "adam", "--lr", "0.001", "--json", str(js),
               "--quiet"])
    assert rc == 0
    cfg = json.loads(js.read_text())["summary"]["config"]
    assert cfg["hidden"] == [20, 30] and cfg["param_shapes"]["W2"] == [20, 30]
    assert cfg["optimizer"] == "adam" and cfg["optimizer_kwargs"]["beta2"] == 0.999


# ---------------------------------------------------------------------------------------
# 6. A backward-pass bug is named at the first wrong gradient in backward order


def test_lockstep_names_the_first_wrong_gradient_in_backward_order(subset: Any) -> None:
    def make(dtype: Any) -> Any:
        net = MultiLayerNet(784, [50, 30], 10, use_batchnorm=True, dtype=dtype)
        net.layers["BatchNorm2"].__class__ = BNUnbiasedBackward
        return net

    an = analyse(train_side_by_side(make, subset, iters=3, dtype="float64", mode="lockstep",
                                    lr=0.05))
    assert an.agree is False and (an.first_step, an.first_tensor) == (0, "dW2"), an.verdict
    assert "dgamma2, dbeta2 above it agree: the error enters below BatchNorm2, at dW2" \
        in an.verdict


# ---------------------------------------------------------------------------------------
# float64 free mode: strict for the first 600 steps, x1000 after (chaotic amplification)


class _SGDFasterLate(SGD):
    """A late-onset bug: the learning rate grows by 1% from update 650 on."""

    calls = 0

    def update(self, params: dict, grads: dict) -> None:
        type(self).calls += 1
        lr = self.lr
        if type(self).calls > 650:
            self.lr = lr * 1.01
        super().update(params, grads)
        self.lr = lr


def test_float64_free_tolerance_widens_after_600_steps_but_late_bugs_still_fail(
    subset: Any,
) -> None:
    from harness.train import _limits

    ok = train_side_by_side(TwoLayerNet(seed=0), subset, iters=700, dtype="float64")
    lim, _ = _limits(ok, "W1", 1e-9)
    assert lim[650] / lim[599] > 100, "from step 600 on the limit is the widened one"
    assert analyse(ok).agree is True
    _SGDFasterLate.calls = 0
    bad = train_side_by_side(TwoLayerNet(seed=0), subset, iters=700, dtype="float64",
                             optimizer=_SGDFasterLate(lr=0.1))
    an = analyse(bad)
    assert an.agree is False and an.first_step == 650, an.verdict
