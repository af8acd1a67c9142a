"""Property-based inputs (hypothesis): random shapes (batch 1 to 256, odd sizes), magnitudes
(tiny, large, on and near the ReLU kink, saturating sigmoid/softmax logits up to +-1e3) and
dtypes. On correct code the harness never reports FAIL or ERROR, and reports PASS whenever the
input reaches the region that matters; a single corrupted element is always found.

Derandomized (a fixed sequence of examples) so CI is deterministic."""

import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import scratch
from harness import check_layer
from harness.compare import ERROR, FAIL, PASS
from reference.extra_layers import bn_example, conv_example
from reference.layers import affine_example

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

dtypes = st.sampled_from([np.dtype(np.float32), np.dtype(np.float64)])
batches = st.one_of(st.integers(1, 8), st.integers(9, 256))
widths = st.one_of(st.integers(1, 7), st.sampled_from([13, 31, 97, 301]))
magnitudes = st.sampled_from([1e-6, 1e-3, 1.0, 30.0, 1e3])
seeds = st.integers(0, 2**16)


def normal(seed: int, shape: tuple[int, ...], scale: float = 1.0) -> np.ndarray:
    return scale * np.random.default_rng(seed).standard_normal(shape)


def quiet(report) -> None:
    assert report.status not in (FAIL, ERROR), str(report)


@SETTINGS
@given(dtypes, batches, widths, st.integers(1, 40), magnitudes, magnitudes, seeds)
def test_affine_is_quiet_for_any_shape_and_magnitude(dtype, batch, n_in, n_out, mx, mw, seed):
    layer = affine_example(np.random.default_rng(seed), dtype, n_in, n_out)
    layer.params["W"] *= dtype.type(mw)
    report = check_layer(layer, x=normal(seed, (batch, n_in), mx), dtype=dtype, seed=seed)
    assert report.status == PASS, str(report)


@SETTINGS
@given(dtypes, batches, widths, st.sampled_from([0.0, 1e-30, 1e-6, 1.0]), seeds)
def test_relu_on_and_near_the_kink(dtype, batch, width, scale, seed):
    x = normal(seed, (batch, width), scale)  # scale 0: every input exactly on the kink
    report = check_layer(scratch.Relu(), x=x, dtype=dtype, seed=seed)
    quiet(report)
    xd = x.astype(dtype)
    if (xd > 0).any() and (xd <= 0).any() and (xd < 0).any():
        assert report.status == PASS, str(report)


@SETTINGS
@given(st.sampled_from([scratch.Sigmoid, scratch.Tanh]), dtypes, batches, widths,
       st.sampled_from([1e-3, 1.0, 5.0, 30.0, 1e3]), seeds)
def test_sigmoid_and_tanh_up_to_saturation(cls, dtype, batch, width, scale, seed):
    x = normal(seed, (batch, width), scale)
    report = check_layer(cls(), x=x, dtype=dtype, seed=seed)
    quiet(report)
    if np.abs(x).max() <= 5 and x.size > 1 and np.ptp(x.astype(dtype)) > 0:
        assert report.status == PASS, str(report)  # no saturation: every path is exercised


@SETTINGS
@given(dtypes, batches, st.integers(2, 120), st.sampled_from([1e-3, 1.0, 30.0, 1e3]),
       st.sampled_from([0.0, 1e-7]), seeds)
def test_softmax_loss_with_logits_up_to_1e3(dtype, batch, classes, scale, eps, seed):
    x = normal(seed, (batch, classes), scale)
    t = np.random.default_rng(seed + 1).integers(0, classes, batch)
    report = check_layer(scratch.SoftmaxWithLoss(eps=eps), x=x, t=t, dtype=dtype, seed=seed)
    quiet(report)
    if scale <= 1.0:
        assert report.status == PASS, str(report)


@SETTINGS
@given(dtypes, batches, widths, magnitudes, st.sampled_from(["classic", "mean"]), seeds)
def test_mean_squared_error(dtype, batch, width, scale, reduction, seed):
    x, t = normal(seed, (batch, width), scale), normal(seed + 1, (batch, width), scale)
    report = check_layer(scratch.MeanSquaredError(reduction), x=x, t=t, dtype=dtype, seed=seed)
    assert report.status == PASS, str(report)


@SETTINGS
@given(dtypes, st.integers(3, 64), st.integers(1, 33), st.sampled_from(["classic", "per_channel"]),
       st.sampled_from([1e-3, 1.0, 1e3]), st.booleans(), seeds)
def test_batchnorm_any_batch_scale_and_mode(dtype, batch, features, mode, scale, train, seed):
    layer = bn_example(np.random.default_rng(seed), dtype, features, mode)
    shape = (batch, features) if mode == "classic" else (batch, features, 2, 3)
    # |mean| ~ std (well conditioned); x from other streams than the check's dout (seed), or
    # dout could lie in span{1, x} where the BatchNorm dx is exactly 0 (vacuous, rightly)
    x = normal(seed + 7, shape, scale) + scale * normal(seed + 8, (1,))[0]
    report = check_layer(layer, x=x, dtype=dtype, seed=seed, train=train)
    assert report.status == PASS, str(report)


@SETTINGS
@given(dtypes, st.integers(1, 6), st.integers(1, 4), st.integers(1, 5), st.integers(1, 3),
       st.integers(0, 2), st.integers(0, 6), magnitudes, seeds)
def test_convolution_any_geometry(dtype, batch, c, k, stride, pad, extra, scale, seed):
    pad, stride = min(pad, k - 1), min(stride, k)  # every window overlaps the real input
    layer = conv_example(np.random.default_rng(seed), dtype, fn=3, c=c, fh=k, fw=k,
                         stride=stride, pad=pad)
    x = normal(seed, (batch, c, k + extra, k + extra + 1), scale)
    report = check_layer(layer, x=x, dtype=dtype, seed=seed)
    assert report.status == PASS, str(report)


@SETTINGS
@given(dtypes, batches, widths, st.data())
def test_one_corrupted_element_is_always_found_at_its_index(dtype, batch, width, data):
    index = (data.draw(st.integers(0, batch - 1)), data.draw(st.integers(0, width - 1)))
    which = data.draw(st.sampled_from(["out", "dx"]))

    class OneWrong(scratch.Tanh):
        def forward(self, x):
            out = super().forward(x)
            return _corrupt(out) if which == "out" else out

        def backward(self, dout):
            dx = super().backward(dout)
            return _corrupt(dx) if which == "dx" else dx

    def _corrupt(a):
        a = a.copy()
        a[index] += a.dtype.type(math.copysign(0.05, float(a[index])) or 0.05)
        return a

    x = normal(data.draw(seeds), (batch, width), 1.0)
    report = check_layer(OneWrong(), x=x, dtype=dtype)
    bad = report.first_divergence
    assert bad.status == FAIL and bad.tensor == which and bad.mismatched == 1
    assert bad.worst_index == index and bad.max_abs_index == index
