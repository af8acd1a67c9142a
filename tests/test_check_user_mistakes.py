"""What a new user's layers do that the harness must take in its stride (or name clearly):
attributes deepcopy rejects, list params, views of the weights, float targets in float32,
identity layers, random forwards, 0-d outputs, and registration mistakes."""

from __future__ import annotations

import os
import re
import textwrap
import threading
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from torch import nn

import scratch
from harness import CheckError, check_layer, check_net, gradient_check
from harness.check_command import run_suite
from harness.cli import main
from harness.compare import FAIL, PASS, VACUOUS
from harness.pytest_plugin import ParityError, assert_parity, parity_cases
from harness.suite import Case
from harness.user_modules import forget_user_modules
from reference import WeightSpec, register, transpose
from reference.registry import registered, unregister
from scratch.convolution import Flatten
from scratch.layers import Layer

RNG = np.random.default_rng(5)
W, B = RNG.standard_normal((6, 4)), RNG.standard_normal(4)
LIN = {"weight_map": {"W": WeightSpec("weight", transpose, transpose), "b": "bias"}}


@pytest.fixture(autouse=True)
def _clean():
    before = set(registered())
    yield
    forget_user_modules()
    for cls in set(registered()) - before:
        unregister(cls)


def reg(cls, factory, shape=(9,), **kw):
    """Register ``cls`` with ``factory`` and (n, *shape) inputs; returns an instance."""
    kw.setdefault("input_shape", lambda _l, n: (n, *shape))
    register(cls, factory, kw.pop("wm", None), **kw)
    return cls()


def raises(exc, fn, *args, **kw) -> str:
    """The message of the ``exc`` that ``fn(*args, **kw)`` raises."""
    with pytest.raises(exc) as info:
        fn(*args, **kw)
    return str(info.value)


def dense(cls, **kw):
    """check_layer on ``cls(W, b)`` against nn.Linear, inputs (3, 6)."""
    return check_layer(cls(W, B), nn.Linear(6, 4), input_shape=(3, 6), **LIN, **kw)


# user layers ----------------------------------------------------------------------------

class Dense(Layer):
    def __init__(self, W, b):
        super().__init__()
        self.params = {"W": W, "b": b}
        self.grads = {"W": np.zeros_like(W), "b": np.zeros_like(b)}
    def forward(self, x):
        self.x = x
        return x @ self.params["W"] + self.params["b"]
    def backward(self, dout):
        self.grads["W"], self.grads["b"] = self.x.T @ dout, dout.sum(0)
        return dout @ self.params["W"].T


class DenseView(Dense):  # a transposed view of W cached at construction (follows SGD updates)
    def __init__(self, W, b):
        super().__init__(W, b)
        self.WT = W.T
    def forward(self, x):
        self.x = x
        return x @ self.WT.T + self.params["b"]
    def backward(self, dout):
        self.grads["W"], self.grads["b"] = self.x.T @ dout, dout.sum(0)
        return dout @ self.WT


class DenseList(Dense):  # the weights also kept in a list
    def __init__(self, W, b):
        super().__init__(W, b)
        self.wb = [W, b]
    def forward(self, x):
        self.x = x
        return x @ self.wb[0] + self.wb[1]


class DenseCopy(DenseView):  # a copy, not a view: cannot follow the cast
    def __init__(self, W, b):
        super().__init__(W, b)
        self.WT = W.T.copy()


class AffineV2:  # "Deep Learning from Scratch 2": params and grads are lists
    def __init__(self, W=W, b=B):
        self.params, self.grads = [W, b], [np.zeros_like(W), np.zeros_like(b)]
    def forward(self, x):
        self.x = x
        return x @ self.params[0] + self.params[1]
    def backward(self, dout):
        self.grads[0][...], self.grads[1][...] = self.x.T @ dout, dout.sum(0)
        return dout @ self.params[0].T


class SigmoidV2:  # vol. 2's parameter-free layers: empty lists
    def __init__(self):
        self.params, self.grads = [], []
    def forward(self, x):
        self.out = 1 / (1 + np.exp(-x))
        return self.out
    def backward(self, dout):
        return dout * (1 - self.out) * self.out


class Holder(scratch.Tanh):  # an attribute deepcopy rejects
    def __init__(self, thing):
        super().__init__()
        self.thing = thing
    def forward(self, x):
        self.out = np.tanh(x)
        return self.out


class NoCopy(scratch.Tanh):
    def __deepcopy__(self, memo):
        raise TypeError("this layer refuses to be copied")


class Huber(Layer):
    def forward(self, x, t):
        self.d = x - t
        a = np.abs(self.d)
        return np.where(a < 1, 0.5 * self.d ** 2, a - 0.5).mean()
    def backward(self, dout=1.0):
        return np.clip(self.d, -1, 1) * (dout / self.d.size)


class BCE(Layer):
    def forward(self, x, t):
        self.x, self.t = x, t
        return (np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))).mean()
    def backward(self, dout=1.0):
        return (1 / (1 + np.exp(-self.x)) - self.t) * (dout / self.x.size)


class SquaredNorm(Layer):  # a 0-d output
    def forward(self, x):
        self.x = x
        return np.sum(x * x)
    def backward(self, dout):
        return 2 * self.x * dout


class SumSq(nn.Module):
    def forward(self, x):
        return (x * x).sum()


class RandomMask(scratch.Relu):  # a fresh mask at every forward, no fixed seed
    def forward(self, x):
        self.mask = np.random.default_rng().random(x.shape) > 0.5
        return x * self.mask
    def backward(self, dout):
        return dout * self.mask


class WritesX(scratch.Tanh):
    def forward(self, x):
        self.out = np.tanh(x)
        x[0, 0] += 0.5  # in place on the caller's input
        return self.out


class DoubleLossDx(scratch.SoftmaxWithLoss):
    def backward(self, dout=1.0):
        return 2 * super().backward(dout)


class DoubleDx(Dense):  # a backward off by a factor of 2
    def backward(self, dout):
        return 2 * super().backward(dout)


XP_MODULE = """import numpy as np
from scratch.layers import Tanh
class XpTanh(Tanh):
    def __init__(self):
        super().__init__()
        self.xp = np          # the usual CuPy/NumPy switch
    def forward(self, x):
        self.out = self.xp.tanh(x)
        return self.out
"""


def module_from(src: str, name: str) -> types.ModuleType:
    mod = types.ModuleType(name)
    exec(textwrap.dedent(src), mod.__dict__)
    return mod


# 1. attributes copy.deepcopy rejects --------------------------------------------------------

@pytest.mark.parametrize("make", [lambda: np, threading.Lock, lambda: open(os.devnull)],
                         ids=["module", "lock", "file"])
def test_uncopyable_attribute_is_shared(make):
    layer = Holder(make())
    assert check_layer(layer, input_shape=(3, 9)).status == PASS
    assert check_net(types.SimpleNamespace(layers=[layer]), input_shape=(3, 9)).status == PASS
    assert gradient_check(layer, input_shape=(3, 9)).status == PASS
    getattr(layer.thing, "close", lambda: None)()
def test_uncopyable_layer_is_a_check_error(): assert re.search(
    r"NoCopy: .*cannot be copied.*refuses to be copied", raises(CheckError, check_layer, NoCopy()))
def test_check_module_with_self_xp_exits_0(tmp_path: Path):
    (tmp_path / "m_xp.py").write_text(XP_MODULE)
    assert main(["check", "-q", "--seeds", "1", "--module", str(tmp_path / "m_xp.py")]) == 0
def test_an_exception_escaping_a_case_is_a_setup_error_the_run_survives(): assert re.search(
    r"boom \[float64, batch 3, seed 0\]: .*ZeroDivisionError",
    run_suite([Case("boom", lambda *a, **k: 1 / 0)], [np.float64], 1, [3]).summary["setup_errors"]["boom"])


# 2. params and grads as lists ---------------------------------------------------------------

def test_list_params_are_a_check_error(): assert re.search(
    r"AffineV2: params must be a dict name -> ndarray, got a list.*self.params = \{'W': W",
    raises(CheckError, check_layer, reg(AffineV2, lambda la: nn.Linear(6, 4), (6,), wm={0: "weight"})))
def test_empty_list_params_are_no_params(): assert check_layer(reg(SigmoidV2, lambda la: nn.Sigmoid())).ok


# 3. and 6. float targets follow the check's dtype ---------------------------------------------

def test_float32_numerical_with_float_targets(): assert check_layer(reg(
    Huber, lambda la: nn.HuberLoss(), (5,), kind="loss",
    make_target=lambda la, x, r: r.standard_normal(x.shape).astype(x.dtype) * 2), dtype="float32",
    numerical=True).ok
def test_make_target_float64_in_a_float32_check(): assert check_layer(reg(
    BCE, lambda la: nn.BCEWithLogitsLoss(), (6,), kind="loss",
    make_target=lambda la, x, r: r.uniform(0, 1, x.shape)), dtype="float32").ok


# 4. a layer that IS the identity is not vacuous ------------------------------------------------

def test_flatten_of_2d_input_is_not_vacuous(): assert check_layer(Flatten(), input_shape=(4, 20)).ok
def test_flatten_first_in_a_net_is_not_vacuous(): assert check_net(types.SimpleNamespace(
    layers=OrderedDict(Flatten=Flatten(), Affine=scratch.Affine(W, B)), last_layer=scratch.SoftmaxWithLoss()),
    input_shape=(4, 6)).ok
def test_relu_of_positive_inputs_stays_vacuous(): assert check_layer(
    scratch.Relu(), x=np.abs(RNG.standard_normal((4, 6))) + 0.1).status == VACUOUS


# 5. the numerical rows ----------------------------------------------------------------------

def test_numerical_rows_name_their_sides():
    r = gradient_check(DoubleDx(W, B), nn.Linear(6, 4), input_shape=(3, 6), **LIN)
    text = str(r["dx backprop vs numerical"])
    assert "actual (backprop) " in text and "expected (numerical) " in text and "torch" not in text
    assert r["dx torch vs numerical"].status == PASS and r["dx backprop vs numerical"].status == FAIL
def test_random_scratch_forward_makes_numerical_rows_vacuous():
    rows = [r for r in check_layer(RandomMask(), numerical=True).results if "numerical" in r.tensor]
    assert len(rows) == 2 and all(r.status == VACUOUS and "not deterministic" in r.message for r in rows)
def test_random_torch_twin_makes_its_numerical_rows_vacuous():
    r = check_layer(scratch.Dropout(0.5, "inverted"), nn.Dropout(0.5), batch=3, numerical=True)
    torch_row = r["dx torch vs numerical"]
    assert torch_row.status == VACUOUS and "not deterministic" in torch_row.message
    assert r["dx backprop vs numerical"].status == PASS
def test_views_of_a_param_stay_views(): assert dense(DenseView, numerical=True).ok
@pytest.mark.parametrize("cls", [DenseView, DenseList])
def test_views_and_aliases_of_a_param_follow_the_cast(cls): assert dense(cls, dtype="float32").ok
def test_a_float64_copy_outside_params_is_named():
    dx = dense(DenseCopy, dtype="float32")["dx"]
    assert dx.status == FAIL and re.search(r"float64 copy of its weights outside params.*WT", dx.message)


# 7. 0-d outputs ----------------------------------------------------------------------------

@pytest.mark.parametrize("kw", [{}, {"dout": np.array(1.5)}, {"dtype": "float32", "numerical": True}])
def test_zero_d_output(kw): assert check_layer(reg(SquaredNorm, lambda la: SumSq(), (5,)), **kw).ok


# 8. make_input is validated ---------------------------------------------------------------

@pytest.mark.parametrize(("make", "message"), [
    (lambda la, s, d, r: r.standard_normal(s[1:]), r"shape \(9,\), expected the requested shape \(4, 9\)"),
    (lambda la, s, d, r: np.float64(1.0), r"shape \(\), expected the requested shape"),
    (lambda la, s, d, r: np.full(s, np.nan), r"NaN/Inf \(first at index \(0, 0\)\)"),
    (lambda la, s, d, r: np.full(s, "a"), r"dtype <U1"),
])
def test_make_input_output_is_validated(make, message): assert re.search(
    r"Mk: .*make_input returned " + message, raises(CheckError, check_layer, reg(
        type("Mk", (scratch.Tanh,), {}), lambda la: nn.Tanh(), make_input=make)))


# 9. registration mistakes -----------------------------------------------------------------

def test_a_module_instance_is_rejected_at_register(): assert re.search(
    r"a module instance.*lambda layer: nn.LeakyReLU\(negative_slope=0.2\)",
    raises(TypeError, register, type("L", (scratch.Relu,), {}), nn.LeakyReLU(0.2)))
def test_input_shape_must_start_with_the_batch(): assert re.search(
    r"NoBatch: the registration's input_shape\(layer, 4\) returned \(9,\).*batch size 4",
    raises(CheckError, check_layer, reg(type("NoBatch", (scratch.Tanh,), {}), lambda la: nn.Tanh(),
                                        input_shape=lambda la, n: (9,))))


# 10. what the reports say -------------------------------------------------------------------

def test_unchanged_rows_report_the_largest_change():
    r = check_layer(WritesX(), input_shape=(3, 9))["input x unchanged"]
    assert r.status == FAIL and r.max_abs == pytest.approx(0.5) and "np.float" not in r.message
def test_pass_lines_do_not_end_in_an_empty_tolerance(): assert "; )" not in str(check_layer(scratch.Tanh()))
def test_net_verdict_names_the_layers(): assert re.search(
    r"passed: Affine0\(Affine\)\.out, last_layer\(DoubleLossDx\)\.loss", raises(
        ParityError, assert_parity, types.SimpleNamespace(layers=[scratch.Affine(W, B)],
                                                          last_layer=DoubleLossDx()), input_shape=(4, 6)))


# 11. the plugin checks a subclass in the built-in's other settings ------------------------------

def test_a_padding_bug_fails_parity_test(conv_pad_bug):
    cases = {p.id: p.values[0] for p in parity_cases(module_from(conv_pad_bug(), "conv_sub"),
                                                     dtypes=["float64"],
                                                     seeds=[0])}
    cases["MyConv-float64-seed0"].check()  # stride 1, pad 0: the bug does not show
    raises(ParityError, cases["MyConv_stride_2_pad_1-float64-seed0"].check)


# ---------------------------------------------------------------------------------------
# A loss layer's backward that ignores its dout (the warm-up call passes 2.0) gets a note


class IgnoresDout(scratch.SoftmaxWithLoss):
    def backward(self, dout=1.0):
        return super().backward(1.0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_loss_backward_that_ignores_dout_passes_with_a_note(dtype) -> None:
    # the book's SoftmaxWithLoss.backward(dout=1) does: right as the last layer of a net
    r = check_layer(IgnoresDout(), dtype=dtype)
    assert r.ok and "ignores dout" in r.info["notes"][0] and "note: backward(dout)" in str(r)


def test_a_loss_backward_that_scales_by_dout_passes() -> None:
    assert check_layer(scratch.SoftmaxWithLoss()).ok and check_layer(scratch.MeanSquaredError()).ok


def test_integer_one_hot_targets_are_one_hot_rows() -> None:
    labels = np.array([0, 2, 1, 2])
    one_hot = np.eye(10, dtype=np.int64)[labels]
    assert check_layer(scratch.SoftmaxWithLoss(), x=RNG.standard_normal((4, 10)), t=one_hot).ok
    with pytest.raises(CheckError, match="one-hot rows of the scores' shape"):
        check_layer(scratch.SoftmaxWithLoss(), x=RNG.standard_normal((4, 10)), t=np.zeros((2, 3), int))


def test_output_cut_off_by_a_closed_pipe_is_not_a_traceback() -> None:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "harness", "check", "--list"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=Path(__file__).resolve().parents[1])
    proc.stdout.close()  # the reader is gone before the first line (| head -0)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and "Traceback" not in err, err


def _run(status_by_batch: dict[int, str]) -> Any:
    from harness.check_command import _judge_vacuous_runs
    from harness.compare import TensorResult
    from harness.report import LayerReport, RunReport

    report = RunReport(command="check")
    for batch, status in status_by_batch.items():
        lr = LayerReport(layer="L", dtype="float32", seed=0, results=[
            TensorResult(layer="L", tensor="dx", status=status)])
        lr.info.update(component="L", batch=batch)
        report.layers.append(lr)
    _judge_vacuous_runs(report)
    return report


def test_a_vacuous_run_beside_a_passing_one_does_not_fail_the_command() -> None:
    covered = _run({1: "VACUOUS", 3: "PASS", 8: "PASS"})
    assert covered.ok and covered.summary["vacuous_covered"] == ["L [float32, batch 1, seed 0]"]
    assert not _run({1: "VACUOUS", 3: "VACUOUS"}).ok  # nothing proved at all
    assert not _run({1: "VACUOUS", 3: "PASS", 8: "FAIL"}).ok


def test_batches_take_commas_and_only_suggests_the_case(capsys: Any) -> None:
    assert main(["check", "--only", "Relu", "--batches", "1,3", "--seeds", "1", "-q",
                 "--dtype", "float64"]) == 0
    assert capsys.readouterr().out.startswith("PASS: 2 checks")
    assert main(["check", "--only", "relu", "-q"]) == 2
    assert "case-sensitive: did you mean ['Relu'" in capsys.readouterr().err


def test_input_shape_with_a_stray_letter_is_refused(capsys: Any) -> None:
    with pytest.raises(SystemExit):
        main(["check", "--module", "examples/user_registered.py", "--input-shape", "3,x"])
    assert "expected positive integers" in capsys.readouterr().err


def test_a_loss_without_targets_says_how_to_make_them() -> None:
    class Half:
        def forward(self, x, t): return (x - t).sum()
        def backward(self, dout=1.0): ...

    register(Half, lambda layer: nn.L1Loss(), kind="loss", input_shape=lambda la, n: (n, 3))
    try:
        with pytest.raises(CheckError, match="make_target=lambda layer, x, rng"):
            check_layer(Half())
    finally:
        unregister(Half)


class BiasUnderAnotherKey(scratch.Affine):
    def backward(self, dout):
        dx = super().backward(dout)
        self.grads = {"W": self.grads["W"], "bias": self.grads["b"]}
        return dx


def test_a_gradient_under_another_key_is_named() -> None:
    r = check_layer(BiasUnderAnotherKey(RNG.standard_normal((6, 4)), np.zeros(4)))
    assert "grads also has ['bias'], which are not parameter names" in r["db"].message


def test_an_untransposed_weight_map_says_to_transpose() -> None:
    class Dense(Layer):
        def __init__(self, W, b):
            super().__init__()
            self.params, self.grads = {"W": W, "b": b}, {}

    register(Dense, lambda layer: nn.Linear(6, 4), {"W": "weight", "b": "bias"},
             input_shape=lambda la, n: (n, 6))
    try:
        with pytest.raises(CheckError, match=r"WeightSpec\('weight', transpose, transpose\)"):
            check_layer(Dense(RNG.standard_normal((6, 4)), np.zeros(4)))
    finally:
        unregister(Dense)


class StepInBackward(scratch.Affine):  # an optimizer step inside the layer
    def backward(self, dout):
        dx = super().backward(dout)
        self.params["W"] -= 0.1 * self.grads["W"]
        return dx


def test_a_weight_changed_by_backward_is_the_first_divergence_and_says_so() -> None:
    r = check_layer(StepInBackward(RNG.standard_normal((6, 4)), np.zeros(4)))
    assert r.first_divergence.tensor == "param W unchanged"
    assert r.first_divergence.message.startswith("backward modified parameter 'W'")


def test_a_twin_with_several_outputs_says_how_to_wrap_it() -> None:
    class Cell(Layer):
        def forward(self, x): return x
        def backward(self, dout): return dout

    class Pair(nn.Module):  # (output, state), as nn.RNN and nn.LSTM return
        def forward(self, x): return x, x

    register(Cell, lambda layer: Pair(), input_shape=lambda la, n: (n, 2, 3))
    try:
        with pytest.raises(CheckError, match=r"returned a tuple, not a tensor \(one tensor per layer"):
            check_layer(Cell())
    finally:
        unregister(Cell)
