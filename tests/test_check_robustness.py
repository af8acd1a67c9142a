"""check_layer / check_net / gradient_check / the pytest plugin on the cases a user probe found:
bugs that show from the second call, correct layers that used to raise false alarms, and
misuse that used to escape as a raw exception instead of a CheckError."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
from torch import nn

import scratch
from harness import CheckError, check_layer, check_net, gradient_check
from harness.check import summed_terms
from harness.cli import main
from harness.compare import ERROR, FAIL, PASS, Tolerance
from harness.pytest_plugin import ParityError, assert_parity
from harness.user_modules import forget_user_modules
from reference import WeightSpec, register, transpose
from reference.extra_layers import bn_example
from reference.layers import affine_example
from reference.registry import unregister
from scratch.normalization import BatchNormalization

RNG = np.random.default_rng(0)


def affine(cls: type = scratch.Affine, dtype: type = np.float64) -> scratch.Affine:
    """An (12 -> 7) Affine of class ``cls`` with float64 weights, as users build them."""
    return cls(*affine_example(np.random.default_rng(0), np.dtype(dtype)).params.values())


# --- user layers with a bug or an unusual-but-correct habit ----------------------------------

class FwdRaises(scratch.Relu):
    def forward(self, x): raise ValueError("boom in forward")


class BwdRaises(scratch.Relu):
    def backward(self, dout): raise ValueError("boom in backward")


class AffineBwdRaises(scratch.Affine):
    def backward(self, dout): raise ValueError("boom in affine backward")


class LossBwdRaises(scratch.SoftmaxWithLoss):
    def backward(self, dout=1.0): raise ValueError("boom in loss backward")


class AffineStaleX(scratch.Affine):
    """Caches its input on the first call only (a lazy ``if self.x is None``)."""
    def forward(self, x):
        if self.x is None:
            self.x = x.reshape(x.shape[0], -1)
        self.original_x_shape = x.shape
        return x.reshape(x.shape[0], -1) @ self.params["W"] + self.params["b"]


class AffineAccum(scratch.Affine):
    """Accumulates gradients over calls and never resets them."""
    def backward(self, dout):
        self.grads["W"] = self.grads["W"] + self.x.T @ dout
        self.grads["b"] = self.grads["b"] + dout.sum(axis=0)
        return (dout @ self.params["W"].T).reshape(self.original_x_shape)


class AffineFirstCallOff(scratch.Affine):
    """Wrong on its first call only."""
    calls = 0

    def forward(self, x):
        self.calls += 1
        return super().forward(x) * (2.0 if self.calls == 1 else 1.0)


class AffineInplaceGrads(scratch.Affine):
    """Correct: writes into the preallocated grads."""
    def backward(self, dout):
        self.grads["W"][...] = self.x.T @ dout
        self.grads["b"][...] = dout.sum(axis=0)
        return (dout @ self.params["W"].T).reshape(self.original_x_shape)


class BNInplaceStats(BatchNormalization):
    """Correct: keeps its running statistics in the arrays it was built with."""
    def forward(self, x, train_flg=True):
        mean, var = self.running_mean, self.running_var
        out = super().forward(x, train_flg)
        np.copyto(mean, self.running_mean)
        np.copyto(var, self.running_var)
        self.running_mean, self.running_var = mean, var
        return out


class AffineShapeInplace(scratch.Affine):
    """Reshapes the caller's array in place (``x.shape = ...``)."""
    def forward(self, x):
        self.original_x_shape = x.shape
        x.shape = (x.shape[0], -1)
        self.x = x
        return x @ self.params["W"] + self.params["b"]


class AffineSqueeze(scratch.Affine):
    """``np.squeeze`` drops the batch axis at batch 1."""
    def forward(self, x):
        self.original_x_shape = x.shape
        self.x = np.squeeze(x.reshape(x.shape[0], -1))
        return self.x @ self.params["W"] + self.params["b"]

    def backward(self, dout):
        self.grads["W"] = np.atleast_2d(self.x).T @ np.atleast_2d(dout)
        self.grads["b"] = dout.sum(axis=0) if dout.ndim > 1 else dout
        return (dout @ self.params["W"].T).reshape(self.original_x_shape)


class SeqLinear:
    """(batch, seq, in) @ W + b: features on the last axis."""
    def __init__(self, W, b):
        self.params = {"W": W, "b": b}
        self.grads = {}

    def forward(self, x):
        self.x = x
        return x @ self.params["W"] + self.params["b"]

    def backward(self, dout):
        self.grads = {"W": np.einsum("bsi,bso->io", self.x, dout), "b": dout.sum(axis=(0, 1))}
        return dout @ self.params["W"].T


class PyFloatMSE(scratch.MeanSquaredError):
    def forward(self, x, t): return float(super().forward(x, t))


class SigmoidF64(scratch.Sigmoid):
    def backward(self, dout): return super().backward(dout).astype(np.float64)


class Net:
    def __init__(self, *layers):
        self.layers = {f"l{i}": layer for i, layer in enumerate(layers)}


# --- 1. gradient_check on a layer that raises ----------------------------------------------

@pytest.mark.parametrize("layer", [FwdRaises(), BwdRaises(), LossBwdRaises(), affine(AffineBwdRaises)],
                         ids=lambda layer: type(layer).__name__)
def test_gradient_check_reports_the_exception_as_check_layer_does(layer):
    report = gradient_check(layer)
    assert report.status == ERROR and "boom in" in report.failures[0].message


# --- 2. bugs that show from the second call; layers with legitimate state still pass -----

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cls", [AffineStaleX, AffineAccum])
def test_stale_state_from_an_earlier_call_fails(cls, dtype):
    assert check_layer(affine(cls), dtype=dtype)["dW"].status == FAIL
    assert gradient_check(affine(cls))["dW"].status == FAIL


def test_a_bug_of_the_first_call_only_is_still_reported():
    report = check_layer(affine(AffineFirstCallOff))
    assert report["out (first call)"].status == FAIL and report["out"].status == PASS


@pytest.mark.parametrize(("layer", "module"), [
    (bn_example(RNG, np.float64), None), (bn_example(RNG, np.float64, mode="per_channel"), None),
    (scratch.Dropout(0.3), None), (scratch.Dropout(0.5, scale="inverted"), nn.Dropout(0.5))],
    ids=["BatchNorm", "BatchNorm-per-channel", "Dropout", "Dropout-vs-nn.Dropout"])
def test_layers_with_state_pass_after_the_warm_up(layer, module):
    for seed in range(5):
        assert check_layer(layer, module, seed=seed, batch=5).ok


# --- 3. in-place writes into grads and buffers keep the check's dtype ----------------------

@pytest.mark.parametrize("layer", [affine(AffineInplaceGrads), BNInplaceStats(np.ones(6), np.zeros(6))],
                         ids=lambda layer: type(layer).__name__)
def test_arrays_written_in_place_are_cast_with_the_params(layer):
    assert check_layer(layer, dtype="float32", batch=5).ok


# --- 4. misuse is a CheckError, never a raw exception --------------------------------------

def test_a_net_whose_layers_do_not_chain_is_a_check_error():
    net = Net(affine(), scratch.Relu(), scratch.Affine(np.ones((4, 3)), np.zeros(3)))
    with pytest.raises(CheckError, match=r"Net.l2: the torch twin rejected input of shape \(4, 7\)"):
        check_net(net, input_shape=(4, 12))
    with pytest.raises(CheckError, match=r"Net.l0: the torch twin rejected input of shape \(4, 5\)"):
        check_net(Net(affine()), input_shape=(4, 5))


@pytest.mark.parametrize("module", [nn.CosineSimilarity(), nn.PairwiseDistance()], ids=str)
def test_a_twin_that_needs_other_arguments_is_a_check_error(module):
    with pytest.raises(CheckError, match=r"rejected input of shape .*TypeError: .*missing"):
        check_layer(scratch.Relu(), module, input_shape=(4, 3))


def test_bad_registrations_are_named():
    with pytest.raises(TypeError, match=r"lambda layer: nn.LeakyReLU\(...\)"):
        register(type("Leaky", (), {}), nn.LeakyReLU)
    with pytest.raises(TypeError, match="input_shape must be callable"):
        register(type("Leaky", (), {}), lambda layer: nn.LeakyReLU(), input_shape=(4, 9))
    Arity = register(type("Arity", (scratch.Relu,), {}), lambda layer: nn.ReLU(),
                     input_shape=lambda batch: (batch, 9))
    try:
        with pytest.raises(CheckError, match=r"input_shape\(layer, batch\) raised TypeError"):
            check_layer(Arity())
    finally:
        unregister(Arity)


@pytest.mark.parametrize(("body", "message"), [
    ("register(Twice, lambda layer: nn.CosineSimilarity(), input_shape=lambda l, n: (n, 3))",
     "rejected input of shape (1, 3): TypeError"),
    ("register(Twice, lambda layer: nn.Identity(), input_shape=lambda n: (n, 3))",
     "input_shape(layer, batch) raised TypeError"),
])
def test_cli_misuse_is_exit_2_with_one_line(tmp_path: Path, capsys, body, message):
    path = tmp_path / "twice.py"
    path.write_text(textwrap.dedent("""
        from torch import nn
        from reference import register
        class Twice:
            def forward(self, x): return x * 2
            def backward(self, d): return d * 2
        """) + body + "\n")
    try:
        assert main(["check", "--module", str(path), "-q", "--seeds", "1"]) == 2
    finally:
        forget_user_modules()
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_check_net_takes_the_input_shape_from_the_net():
    net = scratch.SimpleConvNet((1, 8, 8), {"filter_num": 3, "filter_size": 3}, 10, 4, seed=0)
    assert check_net(net, batch=2).input_shape == (2, 1, 8, 8)
    with pytest.raises(CheckError, match="pass x or input_shape"):  # no default shape known
        check_net(Net(SeqLinear(np.ones((4, 1)), np.zeros(1))))


# --- 5. the pytest plugin runs the CLI's batch sizes ---------------------------------------

def test_parity_runs_batch_1_3_8_unless_told_otherwise():
    with pytest.raises(ParityError, match=r"input \(1, 12\)"):
        assert_parity(affine(AffineSqueeze))
    assert assert_parity(affine(AffineSqueeze), batches=[3, 8]).input_shape == (8, 12)
    assert assert_parity(affine(AffineSqueeze), batch=4).ok
    assert assert_parity(bn_example(RNG, np.float64)).ok  # VACUOUS at batch 1, PASS at 3 and 8


# --- 6. rounding floor of parameter gradients: summed terms for any feature axis -----------

@pytest.mark.parametrize(("dout", "param", "n"), [
    ((8, 7), (12, 7), 8), ((8, 7), (7,), 8), ((2, 4096, 1), (4, 1), 8192),
    ((2, 4096, 1), (1,), 8192), ((2, 3, 5, 5), (3, 2, 3, 3), 50), ((2, 3, 5, 5), (3,), 50)])
def test_summed_terms(dout, param, n):
    assert summed_terms(dout, param) == n


def test_bias_gradient_of_a_3d_layer_is_judged_against_its_rounding():
    for seed in range(10):
        rng = np.random.default_rng(seed)
        dout = rng.standard_normal((2, 4096, 1)).astype(np.float32)
        dout -= dout.mean(axis=0, keepdims=True)  # exact db is 0: rounding only
        layer = SeqLinear(rng.standard_normal((4, 1)).astype(np.float32), np.zeros(1, np.float32))
        report = check_layer(layer, nn.Linear(4, 1), dtype="float32", input_shape=(2, 4096, 4),
                             dout=dout, seed=seed,
                             weight_map={"W": WeightSpec("weight", transpose, transpose), "b": "bias"})
        assert report["db"].status == PASS, str(report["db"])


# --- 7. a loss returned as a Python float --------------------------------------------------

def test_a_python_float_loss_is_compared_by_value():
    assert check_layer(PyFloatMSE(), dtype="float32").ok


# --- 8. the scratch side is blamed for what it did -----------------------------------------

def test_a_shape_changed_in_place_is_the_layers_fail():
    report = check_layer(affine(AffineShapeInplace), input_shape=(2, 2, 3, 2))
    assert "changed the shape of its input x in place: (2, 2, 3, 2) -> (2, 12)" in \
        report["input x unchanged"].message


def test_a_wrong_shaped_dout_is_named():
    with pytest.raises(CheckError, match=r"dout has shape \(4, 6\), but the layer's output has "
                                         r"shape \(4, 7\)"):
        check_layer(affine(), dout=np.ones((4, 6)))


# --- 9. check_net: a float64 dx does not smear into the layer before -----------------------

def test_a_wrong_dtype_gradient_fails_only_its_own_layer():
    report = check_net(Net(affine(), SigmoidF64()), input_shape=(4, 12), dtype="float32")
    assert [r.name for r in report.failures] == ["l1(SigmoidF64).dx"]


# --- 10. small misuse --------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "message"), [
    ({"input_shape": 12}, "input_shape must be positive integers, got 12"),
    ({"tol": (1e-3, 1e-3)}, "tol must be a harness.compare.Tolerance"),
    ({"seed": -1}, "seed must be a non-negative integer, got -1"),
    ({"dtype": None}, "dtype must be float32 or float64, got None"),
])
def test_small_misuse_is_a_clear_check_error(kwargs, message):
    with pytest.raises(CheckError, match=message.replace("(", r"\(").replace(".", r"\.")):
        check_layer(affine(), **kwargs)


def test_tolerance_still_accepted_and_error_lines_have_no_empty_brackets():
    assert check_layer(affine(), tol=Tolerance(1e-3, 1e-3)).ok
    line = str(check_layer(FwdRaises()).failures[0]).splitlines()[0]
    assert line == "FwdRaises.forward [float64]: ERROR", line


# ---------------------------------------------------------------------------------------
# float32 checks measure the twin's own float32 error (a float64 copy of the torch module)


def _bn4d(seed: int, n: int = 2) -> tuple[BatchNormalization, np.ndarray]:
    x = np.random.default_rng(seed).standard_normal((n, 3, 6, 6)).astype(np.float32)
    return BatchNormalization(np.ones(3 * 36), np.zeros(3 * 36)), x


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n", [2, 3])
def test_ill_conditioned_batchnorm_at_batch_2_3_is_not_a_false_alarm(n: int, seed: int) -> None:
    bn, x = _bn4d(seed, n)  # 2-3 samples per activation: 1/std amplifies float32 rounding
    report = check_layer(bn, x=x, dtype="float32", seed=seed)
    assert report.ok, str(report)


@pytest.mark.parametrize("offset", [1e3, 1e4])
def test_batchnorm_on_a_large_common_offset_is_not_a_false_alarm(offset: float) -> None:
    x = (offset + np.random.default_rng(0).standard_normal((8, 20))).astype(np.float32)
    report = check_layer(BatchNormalization(np.ones(20), np.zeros(20)), x=x, dtype="float32")
    assert report.ok, str(report)  # x - mean loses 3-4 of float32's 7 digits, on both sides


class _BNdxOnePercentOff(BatchNormalization):
    def backward(self, dout: np.ndarray) -> np.ndarray:
        return super().backward(dout) * np.float32(1.01)


class _AffineFloat16(scratch.Affine):
    def forward(self, x: np.ndarray) -> np.ndarray:  # a float32-only precision bug
        self.original_x_shape, self.x = x.shape, x.reshape(x.shape[0], -1)
        return (self.x.astype(np.float16) @ self.W.astype(np.float16)).astype(x.dtype) + self.b


def test_the_measured_noise_floor_still_catches_small_bugs() -> None:
    bn, x = _bn4d(1)
    bad = _BNdxOnePercentOff(bn.params["gamma"], bn.params["beta"])
    report = check_layer(bad, x=x, dtype="float32", seed=1)
    assert not report.ok and report.first_divergence.tensor == "dx", str(report)
    W = np.random.default_rng(0).standard_normal((64, 16)) * 0.1
    report = check_layer(_AffineFloat16(W, np.zeros(16)), dtype="float32", batch=8, seed=0)
    assert not report.ok and report.first_divergence.tensor == "out", str(report)


def test_the_noise_floor_is_named_in_the_tolerance() -> None:
    bn, x = _bn4d(1)
    dx = next(r for r in check_layer(bn, x=x, dtype="float32", seed=1).results
              if r.tensor == "dx")
    assert "the measured float32 rounding effect" in dx.tolerance_text, dx.tolerance_text


def test_a_given_x_drawn_with_the_checks_own_seed_does_not_become_dout() -> None:
    # np.random.default_rng(0) for x and seed=0 for the check: were dout drawn from
    # default_rng(0) too, dout == x and BatchNorm's exact dx would be 0 (pure rounding).
    x = np.random.default_rng(0).standard_normal((4, 3, 6, 6)).astype(np.float32)
    report = check_layer(BatchNormalization(np.ones(108), np.zeros(108)), x=x, dtype="float32",
                         seed=0)
    dx = next(r for r in report.results if r.tensor == "dx")
    assert report.ok and dx.status == PASS, str(report)
    assert dx.max_abs < 1e-5 and "rounding effect" not in dx.tolerance_text, str(dx)


def test_a_fail_beyond_the_capped_noise_floor_is_vacuous_never_pass() -> None:
    from harness.check import too_noisy
    from harness.compare import VACUOUS, compare

    expected = np.array([1e-4, -2e-4], dtype=np.float32)
    got = np.array([3e-4, 1e-4], dtype=np.float32)
    r = too_noisy(compare(got, expected, tensor="dx", layer="L"), 4e-4, expected)
    assert r.status == VACUOUS and "check it in float64" in r.message, str(r)
    r = too_noisy(compare(got, expected, tensor="dx", layer="L"), 1e-9, expected)
    assert r.status == FAIL, "a small measured noise explains nothing: the FAIL stands"
    ok = compare(expected, expected, tensor="dx", layer="L")
    assert too_noisy(ok, 4e-4, expected).status == PASS
