"""Hand-written layers a new user brings (activations, normalisations, losses, pooling, ...):
correct ones pass in float32 and float64, each classic bug is caught with a precise message.
The twins here are registered with ``module=`` so nothing leaks into the global registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from torch import nn

from harness import check_layer
from harness.compare import FAIL
from scratch import BatchNormalization, SoftmaxWithLoss

REPO_ROOT = Path(__file__).resolve().parent.parent


def _rows(report, status=FAIL):
    return {r.tensor: r for r in report.results if r.status == status}


class LeakyReusesBuffer:
    """Forward writes into a buffer it keeps and returns that buffer every call."""

    def __init__(self) -> None:
        self.buf: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        if self.buf is None or self.buf.shape != x.shape:
            self.buf = np.empty_like(x)
        self.mask = x <= 0
        np.multiply(x, np.where(self.mask, 0.1, 1.0).astype(x.dtype), out=self.buf)
        return self.buf

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return np.where(self.mask, dout * dout.dtype.type(0.1), dout)


class SoftmaxBackwardInPlace:
    """Backward multiplies the cached (and returned) output in place: y *= (...)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        e = np.exp(x - x.max(axis=1, keepdims=True))
        e /= e.sum(axis=1, keepdims=True)
        self.y = e
        return e

    def backward(self, dout: np.ndarray) -> np.ndarray:
        y = self.y
        y *= dout - (dout * y).sum(axis=1, keepdims=True)
        return y


class Softmax:
    def forward(self, x: np.ndarray) -> np.ndarray:
        e = np.exp(x - x.max(axis=1, keepdims=True))
        self.y = e / e.sum(axis=1, keepdims=True)
        return self.y

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return self.y * (dout - (dout * self.y).sum(axis=1, keepdims=True))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_an_output_buffer_reused_by_the_next_call_fails(dtype: str) -> None:
    report = check_layer(LeakyReusesBuffer(), nn.LeakyReLU(0.1), input_shape=(3, 7), dtype=dtype)
    bad = _rows(report)
    assert list(bad) == ["first call's output unchanged"], report
    msg = bad["first call's output unchanged"].message
    assert "the second call changed the output the first call returned" in msg
    assert "return a new array" in msg


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_backward_writing_into_the_returned_output_fails(dtype: str) -> None:
    report = check_layer(SoftmaxBackwardInPlace(), nn.Softmax(dim=1), input_shape=(3, 7),
                         dtype=dtype)
    bad = _rows(report)
    assert "forward output unchanged" in bad, report
    assert "backward wrote into the array forward returned" in bad["forward output unchanged"].message


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_correct_softmax_passes_and_gets_no_extra_rows(dtype: str) -> None:
    report = check_layer(Softmax(), nn.Softmax(dim=1), input_shape=(3, 7), dtype=dtype)
    assert report.ok, report
    assert [r.tensor for r in report.results] == [
        "out", "dx", "input x unchanged", "upstream dout unchanged"]


# ---------------------------------------------------------------------------------------
# float64 promotion in a float32 check: say where it comes from and whether the math is right


class LayerNorm:
    """Over the last axis, with gamma and beta; ``eps`` as given (a Python float or not)."""

    def __init__(self, d: int = 5, eps: float = 1e-5) -> None:
        rng = np.random.default_rng(0)
        self.params = {"gamma": 1 + 0.1 * rng.standard_normal(d), "beta": 0.1 * rng.standard_normal(d)}
        self.grads: dict[str, np.ndarray] = {}
        self.eps = eps

    def forward(self, x: np.ndarray) -> np.ndarray:
        xc = x - x.mean(axis=-1, keepdims=True)
        self.std = np.sqrt((xc ** 2).mean(axis=-1, keepdims=True) + self.eps)
        self.xhat = xc / self.std
        return self.params["gamma"] * self.xhat + self.params["beta"]

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.grads["gamma"] = (dout * self.xhat).sum(axis=0)
        self.grads["beta"] = dout.sum(axis=0)
        g = dout * self.params["gamma"]
        return (g - g.mean(-1, keepdims=True)
                - self.xhat * (g * self.xhat).mean(-1, keepdims=True)) / self.std


class LayerNormZerosF64(LayerNorm):
    def backward(self, dout: np.ndarray) -> np.ndarray:
        out = np.zeros(dout.shape)  # float64 whatever dout is
        out[...] = super().backward(dout)
        return out


class LayerNormZerosF64Wrong(LayerNormZerosF64):
    def backward(self, dout: np.ndarray) -> np.ndarray:
        return 2 * super().backward(dout)


LN = {"weight_map": {"gamma": "weight", "beta": "bias"}, "input_shape": (3, 5)}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_hand_written_layernorm_passes(dtype: str) -> None:
    assert check_layer(LayerNorm(), nn.LayerNorm(5), dtype=dtype, **LN).ok


def test_a_numpy_float64_scalar_attribute_is_named_as_the_promotion() -> None:
    report = check_layer(LayerNorm(eps=np.float64(1e-5)), nn.LayerNorm(5), dtype="float32", **LN)
    bad = _rows(report)
    assert {"out", "dx"} <= set(bad), report
    msg = bad["out"].message
    assert msg.startswith("dtype mismatch: scratch float64, expected float32"), msg
    assert "the values agree within its tolerance: only the dtype is wrong" in msg
    assert "eps = np.float64(1e-05)" in msg and "store a Python float" in msg


def test_an_array_made_without_dtype_is_suggested_and_wrong_values_are_said() -> None:
    ok = _rows(check_layer(LayerNormZerosF64(), nn.LayerNorm(5), dtype="float32", **LN))["dx"]
    assert "only the dtype is wrong" in ok.message and "np.zeros(shape, x.dtype)" in ok.message
    wrong = _rows(check_layer(LayerNormZerosF64Wrong(), nn.LayerNorm(5), dtype="float32", **LN))["dx"]
    assert "the values differ as well: 15 / 15 elements beyond the tolerance" in wrong.message


def test_a_float32_result_in_a_float64_check_says_precision_is_lost() -> None:
    class Narrow(LayerNorm):
        def forward(self, x: np.ndarray) -> np.ndarray:
            return super().forward(x).astype(np.float32)

    bad = _rows(check_layer(Narrow(), nn.LayerNorm(5), dtype="float64", **LN))
    assert "computes in float32 behind a float64 interface" in bad["out"].message


def test_a_gradient_under_another_key_reads_as_two_sentences() -> None:
    class WrongKey(LayerNorm):
        def backward(self, dout: np.ndarray) -> np.ndarray:
            dx = super().backward(dout)
            self.grads["weight"] = self.grads.pop("gamma")
            return dx

    bad = _rows(check_layer(WrongKey(), nn.LayerNorm(5), **LN))
    assert bad["dgamma"].message == (
        "grads['gamma'] is missing after backward; grads also has ['weight'], which are not "
        "parameter names (params: ['beta', 'gamma']): a gradient stored under another key?")


# ---------------------------------------------------------------------------------------
# a torch parameter with no scratch counterpart, fixed in the twin


class RNN:
    """tanh RNN over (N, T, D) with one bias; returns every hidden state (N, T, H)."""

    def __init__(self) -> None:
        rng = np.random.default_rng(3)
        self.params = {"Wx": rng.standard_normal((4, 3)) / 2, "Wh": rng.standard_normal((3, 3)) / 2,
                       "b": 0.1 * rng.standard_normal(3)}
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, x: np.ndarray) -> np.ndarray:
        n, steps, _ = x.shape
        self.x, self.hs = x, np.zeros((n, steps + 1, 3), x.dtype)
        for t in range(steps):
            self.hs[:, t + 1] = np.tanh(x[:, t] @ self.params["Wx"]
                                        + self.hs[:, t] @ self.params["Wh"] + self.params["b"])
        return self.hs[:, 1:].copy()

    def backward(self, dout: np.ndarray) -> np.ndarray:
        g = {k: np.zeros_like(v) for k, v in self.params.items()}
        dx, dh = np.zeros_like(self.x), np.zeros_like(dout[:, 0])
        for t in reversed(range(dout.shape[1])):
            h = self.hs[:, t + 1]
            da = (dout[:, t] + dh) * (1 - h * h)
            g["Wx"] += self.x[:, t].T @ da
            g["Wh"] += self.hs[:, t].T @ da
            g["b"] += da.sum(0)
            dx[:, t], dh = da @ self.params["Wx"].T, da @ self.params["Wh"].T
        self.grads = g
        return dx


class TorchRNN(nn.Module):
    def __init__(self, freeze_hh_bias: bool) -> None:
        super().__init__()
        self.rnn = nn.RNN(4, 3, batch_first=True)
        if freeze_hh_bias:
            self.rnn.bias_hh_l0.data.zero_()
            self.rnn.bias_hh_l0.requires_grad_(False)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.rnn(x)[0]


def _rnn_map() -> dict:
    from reference import WeightSpec, transpose

    return {"Wx": WeightSpec("rnn.weight_ih_l0", transpose, transpose),
            "Wh": WeightSpec("rnn.weight_hh_l0", transpose, transpose), "b": "rnn.bias_ih_l0"}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_frozen_torch_parameter_needs_no_scratch_counterpart(dtype: str) -> None:
    report = check_layer(RNN(), TorchRNN(freeze_hh_bias=True), weight_map=_rnn_map(),
                         input_shape=(3, 4, 4), dtype=dtype)
    assert report.ok, report


def test_an_unmapped_trainable_torch_parameter_says_how_to_fix_it() -> None:
    from harness import CheckError

    with pytest.raises(CheckError) as exc:
        check_layer(RNN(), TorchRNN(freeze_hh_bias=False), weight_map=_rnn_map(),
                    input_shape=(3, 4, 4))
    msg = str(exc.value)
    assert "torch parameter(s) ['rnn.bias_hh_l0'] are not mapped" in msg
    assert "m.rnn.bias_hh_l0.requires_grad_(False)" in msg


# ---------------------------------------------------------------------------------------
# a subclass that implements only the built-in's default setting


class BookBatchNorm(BatchNormalization):
    """The book's BatchNormalization: always flattens (the classic mode), whatever ``mode``
    its inherited constructor was given."""

    def forward(self, x: np.ndarray, train_flg: bool = True) -> np.ndarray:
        self.input_shape = x.shape
        x2 = x.reshape(x.shape[0], -1)
        if train_flg:
            mu = x2.mean(axis=0)
            self.xc = x2 - mu
            var = (self.xc ** 2).mean(axis=0)
            self.std = np.sqrt(var + self.eps)
            self.xn, self.batch_size = self.xc / self.std, x2.shape[0]
            self.running_mean = self.momentum * self.running_mean + (1 - self.momentum) * mu
            self.running_var = self.momentum * self.running_var + (1 - self.momentum) * var
            xn = self.xn
        else:
            xn = (x2 - self.running_mean) / np.sqrt(self.running_var + self.eps)
        return (self.params["gamma"] * xn + self.params["beta"]).reshape(x.shape)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        d = dout.reshape(dout.shape[0], -1)
        self.grads["beta"] = d.sum(axis=0)
        self.grads["gamma"] = (self.xn * d).sum(axis=0)
        dxn = self.params["gamma"] * d
        dxc = dxn / self.std
        dvar = -0.5 * np.sum(dxn * self.xc / self.std ** 3, axis=0)
        dxc = dxc + (2.0 / self.batch_size) * self.xc * dvar
        return (dxc - dxc.mean(axis=0)).reshape(self.input_shape)


def _variant(cls: type, label: str):  # type: ignore[no-untyped-def]
    from harness.user_modules import spec_for_class, variant_specs

    spec = spec_for_class(cls)
    assert spec is not None
    return next(v for v in variant_specs(spec) if v.name.endswith(f"({label})"))


def test_a_setting_the_subclass_ignores_is_named_with_the_way_out() -> None:
    from harness.compare import ERROR

    report = _variant(BookBatchNorm, "4-D, per channel").check("float64", 0, 3)
    errors = [r for r in report.results if r.status == ERROR]
    assert errors, report
    msg = errors[0].message
    assert msg.startswith("ValueError: operands could not be broadcast together"), msg
    assert ("[the built-in BatchNormalization's '4-D, per channel' setting: BookBatchNorm built "
            "with mode='per_channel'") in msg
    assert ("a setting the class does not implement can be kept at the built-in's default "
            "(mode='classic') in its constructor (e.g. super().__init__(..., mode='classic'))") in msg


def test_the_eval_setting_says_backward_follows_a_test_time_forward() -> None:
    from harness.compare import ERROR

    report = _variant(BookBatchNorm, "eval").check("float64", 0, 3)
    bad = [r for r in report.results if r.status == ERROR]
    assert bad and "forward(x, train_flg=False), then backward" in bad[0].message, report


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_book_batchnorm_passes_in_the_settings_it_implements(dtype: str) -> None:
    for label in ("4-D, per activation",):
        assert _variant(BookBatchNorm, label).check(dtype, 0, 3).ok
    from harness.user_modules import spec_for_class

    assert spec_for_class(BookBatchNorm).check(dtype, 0, 3).ok


def test_a_loss_writing_into_its_targets_says_why_it_matters() -> None:
    from scratch import MeanSquaredError

    class MSE(MeanSquaredError):
        def forward(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
            t -= x
            self.diff = -t
            return 0.5 * np.sum(self.diff ** 2) / x.shape[0]

        def backward(self, dout: float = 1.0) -> np.ndarray:
            return dout * self.diff / self.diff.shape[0]

    bad = _rows(check_layer(MSE(), input_shape=(3, 5)))
    assert list(bad) == ["targets t unchanged"], bad
    assert "the targets belong to the caller" in bad["targets t unchanged"].message


# ---------------------------------------------------------------------------------------
# a square weight mapped with the wrong layout: the map is wrong, not the layer


class SquareDense:
    """``x @ W + b`` with W of shape (in, out) = (5, 5)."""

    def __init__(self) -> None:
        rng = np.random.default_rng(4)
        self.params = {"W": rng.standard_normal((5, 5)), "b": 0.1 * rng.standard_normal(5)}
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        return x @ self.params["W"] + self.params["b"]

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.grads["W"], self.grads["b"] = self.x.T @ dout, dout.sum(axis=0)
        return dout @ self.params["W"].T


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_square_weight_without_its_transpose_is_named_as_the_maps_fault(dtype: str) -> None:
    report = check_layer(SquareDense(), nn.Linear(5, 5), weight_map={"W": "weight", "b": "bias"},
                         input_shape=(3, 5), dtype=dtype)
    bad = _rows(report)
    assert {"out", "dx", "dW"} <= set(bad), report
    for r in bad.values():
        assert "the weight map is wrong, not the layer" in r.message
        assert "'W': WeightSpec('weight', transpose, transpose)" in r.message
    from reference import WeightSpec, transpose

    fixed = {"W": WeightSpec("weight", transpose, transpose), "b": "bias"}
    assert check_layer(SquareDense(), nn.Linear(5, 5), weight_map=fixed, input_shape=(3, 5),
                       dtype=dtype).ok


def test_a_real_bug_with_a_square_weight_gets_no_layout_note() -> None:
    class Buggy(SquareDense):
        def backward(self, dout: np.ndarray) -> np.ndarray:
            super().backward(dout)
            return dout @ self.params["W"]  # transpose forgotten in dx

    from reference import WeightSpec, transpose

    report = check_layer(Buggy(), nn.Linear(5, 5), input_shape=(3, 5), weight_map={
        "W": WeightSpec("weight", transpose, transpose), "b": "bias"})
    bad = _rows(report)
    assert list(bad) == ["dx"], report
    assert "weight map" not in bad["dx"].message


# ---------------------------------------------------------------------------------------
# a hand-written batch norm against a stock nn.BatchNorm1d: conventions named, not guessed


class HandBatchNorm:
    """The book's batch norm (biased variance into running_var, momentum = fraction kept),
    written from scratch with no base class and registered by hand."""

    def __init__(self, d: int = 4, momentum: float = 0.9, eps: float = 1e-5) -> None:
        self.params = {"gamma": np.ones(d), "beta": np.zeros(d)}
        self.grads: dict[str, np.ndarray] = {}
        self.momentum, self.eps = momentum, eps
        self.running_mean, self.running_var = np.zeros(d), np.ones(d)

    def forward(self, x: np.ndarray, train_flg: bool = True) -> np.ndarray:
        if train_flg:
            mu = x.mean(0)
            var = ((x - mu) ** 2).mean(0)
            self.std = np.sqrt(var + self.eps)
            self.xn = (x - mu) / self.std
            self.running_mean = self.momentum * self.running_mean + (1 - self.momentum) * mu
            self.running_var = self.momentum * self.running_var + (1 - self.momentum) * var
            xn = self.xn
        else:
            xn = (x - self.running_mean) / np.sqrt(self.running_var + self.eps)
        return self.params["gamma"] * xn + self.params["beta"]

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.grads["beta"], self.grads["gamma"] = dout.sum(0), (dout * self.xn).sum(0)
        g = dout * self.params["gamma"]
        return (g - g.mean(0) - self.xn * (g * self.xn).mean(0)) / self.std


BN_MAP = {"weight_map": {"gamma": "weight", "beta": "bias"}, "input_shape": (3, 4)}


def _bn_check(module: nn.Module, dtype: str = "float64"):  # type: ignore[no-untyped-def]
    from reference.registry import register, unregister

    register(HandBatchNorm, lambda layer: module, BN_MAP["weight_map"],
             buffer_map={"running_mean": "running_mean", "running_var": "running_var"})
    try:
        return check_layer(HandBatchNorm(), input_shape=(3, 4), dtype=dtype)
    finally:
        unregister(HandBatchNorm)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_torchs_unbiased_running_var_is_named_as_the_only_difference(dtype: str) -> None:
    bad = _rows(_bn_check(nn.BatchNorm1d(4, momentum=0.1), dtype))
    assert list(bad) == ["running_var"], bad
    msg = bad["running_var"].message
    assert msg.startswith("exactly torch's convention: torch's BatchNorm feeds running_var the "
                          "unbiased batch variance (x N/(N-1) = x 1.5 here)"), msg
    assert "TwinBatchNorm(C, eps, momentum, biased_running_var=True)" in msg


def test_the_suggested_twin_passes_the_book_batchnorm() -> None:
    from reference.extra_layers import TwinBatchNorm

    assert _bn_check(TwinBatchNorm(4, 1e-5, 0.1, biased_running_var=True)).ok


def test_the_books_momentum_given_to_torch_is_named() -> None:
    bad = _rows(_bn_check(nn.BatchNorm1d(4, momentum=0.9)))
    assert {"running_mean", "running_var"} <= set(bad), bad
    assert "torch's momentum the fraction it replaces: the twin needs momentum=0.1" in \
        bad["running_mean"].message


def test_a_real_running_mean_bug_gets_no_convention_note() -> None:
    class Wrong(HandBatchNorm):
        def forward(self, x: np.ndarray, train_flg: bool = True) -> np.ndarray:
            out = super().forward(x, train_flg)
            self.running_var = self.running_var * 1.01  # a drift no convention explains
            return out

    from reference.registry import register, unregister

    register(Wrong, lambda layer: nn.BatchNorm1d(4), BN_MAP["weight_map"],
             buffer_map={"running_mean": "running_mean", "running_var": "running_var"})
    try:
        bad = _rows(check_layer(Wrong(), input_shape=(3, 4)))
    finally:
        unregister(Wrong)
    assert list(bad) == ["running_var"] and "convention" not in bad["running_var"].message


# ---------------------------------------------------------------------------------------
# misuse named up front; a stock module with another convention named as such


def test_a_class_a_function_or_an_object_without_backward_is_not_a_layer() -> None:
    from harness import CheckError

    with pytest.raises(CheckError, match=r"^Softmax is a class, not a layer: pass an instance"):
        check_layer(Softmax, nn.Softmax(dim=1), input_shape=(2, 3))
    with pytest.raises(CheckError, match=r"^tanh is not a layer: it has no forward and no backward"):
        check_layer(np.tanh, nn.Tanh(), input_shape=(2, 3))

    class ForwardOnly:
        def forward(self, x: np.ndarray) -> np.ndarray:
            return x

    with pytest.raises(CheckError, match=r"^ForwardOnly is not a layer: it has no backward method"):
        check_layer(ForwardOnly(), nn.Identity(), input_shape=(2, 3))


def test_targets_given_to_a_layer_are_a_mistake_not_ignored() -> None:
    from harness import CheckError

    with pytest.raises(CheckError, match=r"targets t were given, but Softmax is checked as a layer"):
        check_layer(Softmax(), nn.Softmax(dim=1), input_shape=(2, 3), t=np.array([0, 1]))


@pytest.mark.parametrize(("layer", "module", "convention"), [
    ("SoftmaxWithLoss", nn.CrossEntropyLoss(), "-log(softmax + 1e-7)"),
    ("MeanSquaredError", nn.MSELoss(), "reduction='mean'"),
])
def test_a_stock_module_with_another_convention_is_named_as_such(layer: str, module: nn.Module,
                                                                 convention: str) -> None:
    import scratch

    report = check_layer(getattr(scratch, layer)(), module, input_shape=(3, 4))
    bad = _rows(report)
    assert "loss" in bad, report
    msg = bad["loss"].message
    assert f"against its registered twin ({layer}) every tensor passes" in msg
    assert "which is no bug in the layer" in msg and convention in msg


def test_a_real_bug_against_a_stock_module_gets_no_convention_note() -> None:
    import scratch

    class NoMean(scratch.SoftmaxWithLoss):
        def backward(self, dout: float = 1.0) -> np.ndarray:
            return super().backward(dout) * self.y.shape[0]

    bad = _rows(check_layer(NoMean(eps=0.0), nn.CrossEntropyLoss(), input_shape=(3, 4)))
    assert list(bad) == ["dx"] and "registered twin" not in bad["dx"].message


# ---------------------------------------------------------------------------------------
# a hand-written dropout against a stock nn.Dropout: random masks, named as such


class HandDropout:
    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def forward(self, x: np.ndarray, train_flg: bool = True) -> np.ndarray:
        self.train = train_flg
        if not train_flg:
            return x.copy()
        self.mask = np.random.default_rng().random(x.shape) > self.p
        return x * self.mask / (1 - self.p)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout * self.mask / (1 - self.p) if self.train else dout.copy()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_random_twin_is_named_not_blamed_on_float32_rounding(dtype: str) -> None:
    report = check_layer(HandDropout(), nn.Dropout(0.5), input_shape=(3, 10), dtype=dtype)
    bad = _rows(report)
    assert {"out", "dx"} <= set(bad), report  # FAIL, not VACUOUS "float32 rounding alone ..."
    for r in bad.values():
        assert "The twin draws random numbers in training (Dropout)" in r.message
        assert "rounding" not in r.message


def test_a_random_twin_in_eval_mode_passes() -> None:
    assert check_layer(HandDropout(), nn.Dropout(0.5), input_shape=(3, 10), train=False,
                       dtype="float32").ok


# ---------------------------------------------------------------------------------------
# losses: one-hot rows only, a loss of shape (1,)


class OneHotOnlyLoss(SoftmaxWithLoss):
    """Softmax cross-entropy written for one-hot rows only (the book's chapter-4 form)."""

    def forward(self, x: np.ndarray, t: np.ndarray) -> float:
        self.t = t
        e = np.exp(x - x.max(axis=1, keepdims=True))
        self.y = e / e.sum(axis=1, keepdims=True)
        return -np.sum(t * np.log(self.y + 1e-7)) / x.shape[0]

    def backward(self, dout: float = 1.0) -> np.ndarray:
        return (self.y - self.t) * dout / self.t.shape[0]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_loss_for_one_hot_rows_only_is_checked_with_one_hot_rows(dtype: str) -> None:
    report = check_layer(OneHotOnlyLoss(), input_shape=(3, 10), dtype=dtype)
    assert report.ok, report
    assert any("the layer takes one-hot rows only: with integer class labels (shape (3,)) it "
               "raised (ValueError: operands could not be broadcast" in n
               for n in report.info["notes"])


def test_integer_labels_broadcast_silently_keep_their_fail() -> None:
    # 10 rows, 10 classes: t * log(y) broadcasts (10,) labels over the rows, no error
    report = check_layer(OneHotOnlyLoss(), input_shape=(10, 10))
    bad = _rows(report)
    assert "loss" in bad, report
    assert "with the same labels as one-hot rows every tensor passes" in bad["loss"].message


def test_a_loss_of_shape_1_says_to_return_a_scalar() -> None:
    import scratch

    class LossArray(scratch.SoftmaxWithLoss):
        def forward(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
            return np.array([super().forward(x, t)])

    bad = _rows(check_layer(LossArray(), input_shape=(3, 10)))
    assert bad["loss"].message == (
        "shape mismatch: scratch (1,) vs reference (): a loss is one number; return a scalar "
        "(float(loss), arr.sum()), not an array of shape (1,) (its value agrees)")


def test_a_method_signature_that_does_not_fit_says_how_the_check_calls_it() -> None:
    from harness.compare import ERROR

    class NoDout(SoftmaxWithLoss):
        def backward(self) -> np.ndarray:  # type: ignore[override]
            return super().backward(1.0)

    class NoTargets(SoftmaxWithLoss):
        def forward(self, x: np.ndarray) -> float:  # type: ignore[override]
            return 1.0

    class Raises(Softmax):
        def backward(self, dout: np.ndarray) -> np.ndarray:
            raise TypeError("mine")

    def error(report) -> str:  # type: ignore[no-untyped-def]
        return next(r.message for r in report.results if r.status == ERROR)

    assert error(check_layer(NoDout(), input_shape=(3, 4))).endswith(
        "(the check calls backward(dout=1) -> dx (the book's nets call backward(1)))")
    assert error(check_layer(NoTargets(), input_shape=(3, 4))).endswith(
        "(the check calls forward(x, t) -> loss)")
    msg = error(check_layer(Raises(), nn.Softmax(dim=1), input_shape=(3, 4)))
    assert msg.startswith("TypeError: mine (at ") and "test_probe6_layers.py" in msg


def test_a_registration_without_input_shape_says_how_to_give_one() -> None:
    from harness import CheckError
    from reference.registry import register, unregister

    register(Softmax, lambda layer: nn.Softmax(dim=1))
    try:
        with pytest.raises(CheckError, match=r"input_shape is required .*: pass input_shape=\(4, "
                                             r"\.\.\.\) with the batch first, or x=\.\.\., or give "
                                             r"its registration input_shape=lambda layer, n"):
            check_layer(Softmax())
    finally:
        unregister(Softmax)


def test_a_book_style_class_is_told_to_set_the_setting_itself() -> None:
    import scratch

    class Pooling:  # the book's layout: named like the built-in, no base class; pad ignored
        def __init__(self, pool_h: int, pool_w: int, stride: int = 2, pad: int = 0) -> None:
            self.pool_h, self.pool_w, self.stride, self.pad = pool_h, pool_w, stride, pad
            self.inner = scratch.Pooling(pool_h, pool_w, stride, 0)

        def forward(self, x: np.ndarray) -> np.ndarray:
            return self.inner.forward(x)

        def backward(self, dout: np.ndarray) -> np.ndarray:
            return self.inner.backward(dout)

    report = _variant(Pooling, "3x3, stride 2, pad 1").check("float64", 0, 2)
    bad = [r for r in report.results if r.status != "PASS"]
    assert bad, report
    assert "(e.g. self.pad = 0)" in bad[0].message and "super()" not in bad[0].message


def test_a_subclass_with_other_parameters_is_told_it_needs_a_twin_of_its_own() -> None:
    import scratch
    from harness import CheckError

    class NoBias(scratch.Affine):
        def __init__(self, W: np.ndarray) -> None:
            super().__init__(W, np.zeros(W.shape[1]))
            del self.params["b"]

        def forward(self, x: np.ndarray) -> np.ndarray:
            self.x = x
            return x @ self.params["W"]

        def backward(self, dout: np.ndarray) -> np.ndarray:
            self.grads = {"W": self.x.T @ dout}
            return dout @ self.params["W"].T

    with pytest.raises(CheckError, match=r"scratch params lack \['b'\].*NoBias is checked with the "
                                         r"twin of its base Affine, which maps \['W', 'b'\]: a "
                                         r"layer with other parameters needs a twin of its own"):
        check_layer(NoBias(np.ones((3, 2))))
    from reference import WeightSpec, transpose

    assert check_layer(NoBias(np.random.default_rng(0).standard_normal((3, 2))),
                       nn.Linear(3, 2, bias=False), input_shape=(4, 3),
                       weight_map={"W": WeightSpec("weight", transpose, transpose)}).ok


# ---------------------------------------------------------------------------------------
# registration mistakes, named where they are made


@pytest.mark.parametrize(("call", "message"), [
    (lambda r, W: r(Softmax, lambda layer: nn.Softmax(1), ["W"]),
     r"register\(Softmax\): weight_map must be a dict .* got list \['W'\]"),
    (lambda r, W: r(Softmax, lambda layer: nn.Softmax(1), {"W": W("weight", "T", "T")}),
     r"register\('Softmax'\): weight_map\['W'\]: WeightSpec's to_torch must be a function"),
    (lambda r, W: r(Softmax, lambda layer: nn.Softmax(1), {"W": 3}),
     r"register\('Softmax'\): weight_map\['W'\] must be a torch parameter name \(a str\) or a "
     r"WeightSpec"),
    (lambda r, W: r(Softmax, lambda layer: nn.Softmax(1), input_shapes=lambda layer, n: (n, 3)),
     r"register\(Softmax\): unknown option\(s\) input_shapes= \(did you mean input_shape=\?\)"),
    (lambda r, W: r(Softmax(), lambda layer: nn.Softmax(1)),
     r"got an instance of Softmax \(register\(Softmax, \.\.\.\), not register\(Softmax\(\), \.\.\.\)\)"),
])
def test_registration_mistakes_are_named(call, message) -> None:  # type: ignore[no-untyped-def]
    from reference import WeightSpec, register
    from reference.registry import registered

    with pytest.raises(TypeError, match=message):
        call(register, WeightSpec)
    assert Softmax not in registered()


# ---------------------------------------------------------------------------------------
# a registered layer whose forward takes train_flg is also checked at test time


class EvalUsesBatchStats(HandBatchNorm):
    def forward(self, x: np.ndarray, train_flg: bool = True) -> np.ndarray:
        return super().forward(x, True)  # test time normalises with the batch's statistics


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_registered_layer_with_train_flg_is_checked_in_eval_mode(dtype: str) -> None:
    from harness.user_modules import spec_for_class, variant_specs
    from reference.extra_layers import TwinBatchNorm
    from reference.registry import register, unregister

    buffers = {"running_mean": "running_mean", "running_var": "running_var"}
    for cls in (HandBatchNorm, EvalUsesBatchStats):
        register(cls, lambda layer: TwinBatchNorm(4, layer.eps, 1 - layer.momentum,
                                                  biased_running_var=True),
                 BN_MAP["weight_map"], buffer_map=buffers, input_shape=lambda layer, n: (n, 4))
    try:
        names = {}
        for cls in (HandBatchNorm, EvalUsesBatchStats):
            spec = spec_for_class(cls)
            assert spec is not None
            names[cls] = {v.name: v for v in variant_specs(spec)}
            assert spec.check(dtype, 0, 3).ok  # training: both are right
        good = names[HandBatchNorm]["HandBatchNorm (eval)"].check(dtype, 0, 3)
        assert good.results[0].tensor == "out" and good.results[0].status == "PASS"
        # the book's backward needs the training caches: told what the setting does
        bad_backward = [r for r in good.results if r.status == "ERROR"]
        assert bad_backward and "[the eval setting: HandBatchNorm forward(x, train_flg=False), " \
            "then backward" in bad_backward[0].message
        wrong = names[EvalUsesBatchStats]["EvalUsesBatchStats (eval)"].check(dtype, 0, 3)
        assert "out" in _rows(wrong), wrong
    finally:
        unregister(HandBatchNorm)
        unregister(EvalUsesBatchStats)


def test_a_method_returning_none_suggests_a_missing_return() -> None:
    class NoReturn(Softmax):
        def backward(self, dout: np.ndarray) -> np.ndarray:
            dx = super().backward(dout)  # noqa: F841 (the bug: no return)

    bad = _rows(check_layer(NoReturn(), nn.Softmax(dim=1), input_shape=(3, 4)))
    assert bad["dx"].message == "scratch returned None (a missing return in backward?)"


def test_a_backward_error_after_a_wrong_output_shape_points_at_the_shape() -> None:
    class DropsAColumn(Softmax):
        def forward(self, x: np.ndarray) -> np.ndarray:
            return super().forward(x)[:, :-1]

        def backward(self, dout: np.ndarray) -> np.ndarray:
            return self.y[:, :-1] * dout  # written for its own (wrong) shape

    report = check_layer(DropsAColumn(), nn.Softmax(dim=1), input_shape=(3, 4))
    msg = next(r.message for r in report.results if r.tensor == "backward")
    assert msg.endswith("(backward got dout of the twin's output shape (3, 4); forward returned "
                        "(3, 3): fix the output shape first)"), msg


def test_a_torch_class_for_the_module_is_told_to_be_an_instance() -> None:
    from harness import CheckError

    with pytest.raises(CheckError, match=r"the torch twin is the class Softmax, not a module: "
                                         r"pass an instance \(Softmax\(\.\.\.\)\)"):
        check_layer(Softmax(), nn.Softmax, input_shape=(3, 4))


def test_a_one_hot_only_loss_keeps_the_numerical_rows_asked_for() -> None:
    report = check_layer(OneHotOnlyLoss(), input_shape=(3, 10), numerical=True)
    assert report.ok, report
    assert any("numerical" in r.tensor for r in report.results), [r.tensor for r in report.results]


def test_the_one_hot_note_does_not_blame_a_loss_that_takes_both_label_forms() -> None:
    """examples/user_layers_buggy.py takes integer labels and one-hot rows; its bug is in the
    integer branch (no / N). The note used to say only that a loss written for one-hot rows
    broadcasts integer labels, and to take both forms, which it does."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("buggy_note", REPO_ROOT / "examples"
                                                  / "user_layers_buggy.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rep = check_layer(mod.SoftmaxWithLoss(), input_shape=(3, 10), dtype="float64")
    assert not rep.ok
    dx = next(r for r in rep.results if r.tensor == "dx")
    assert "its branch for integer labels has a bug" in dx.message


def test_a_second_check_module_in_one_process_checks_only_its_own_modules(capsys) -> None:
    """Two `check --module` commands in one process (a test file, a notebook): the second
    one also ran the first one's layers (12 checks instead of 6)."""
    from harness.cli import main
    from harness.user_modules import forget_user_modules

    try:
        args = ["--dtype", "float64", "--seeds", "1", "--batches", "3", "--quiet"]
        assert main(["check", "--module", str(REPO_ROOT / "examples" / "user_layers.py"),
                     *args]) == 0
        capsys.readouterr()
        assert main(["check", "--module", str(REPO_ROOT / "examples" / "user_layers_buggy.py"),
                     *args]) == 1
        assert capsys.readouterr().out.strip().startswith("FAIL: 6 checks,")
    finally:
        forget_user_modules()
