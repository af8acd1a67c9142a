"""The fast paths compute what the plain ones compute (no timing assertions here).

* float32 stays float32 through a whole training step: every array a layer keeps, every
  gradient, the loss and the updated parameters;
* ``Affine(need_dx=False)`` gives the same gradients bit for bit and returns None, and the
  harness still compares the full backward of such a layer;
* the vectorised Relu and max pooling equal the classic formulas bit for bit;
* chunked evaluation counts exactly what one big chunk counts.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from scratch import SGD, Affine, Pooling, Relu, SimpleConvNet, TwoLayerNet
from scratch.convolution import im2col


def _float_arrays(obj: object) -> dict[str, np.ndarray]:
    """Every float ndarray an object keeps, directly or in a dict attribute."""
    out = {}
    for name, val in vars(obj).items():
        if isinstance(val, np.ndarray) and val.dtype.kind == "f":
            out[name] = val
        elif isinstance(val, dict):
            out.update({f"{name}[{k!r}]": v for k, v in val.items()
                        if isinstance(v, np.ndarray) and v.dtype.kind == "f"})
    return out


@pytest.mark.parametrize("make", [
    lambda dt: TwoLayerNet(784, 50, 10, dtype=dt, seed=0),
    lambda dt: SimpleConvNet((1, 12, 12), {"filter_num": 4, "filter_size": 3}, hidden_size=8,
                             dtype=dt, seed=0),
], ids=["TwoLayerNet", "SimpleConvNet"])
def test_float32_training_step_has_no_float64_anywhere(make, rng):
    net = make(np.float32)
    shape = (20, *getattr(net, "input_dim", (784,)))
    x = rng.random(shape, dtype=np.float32)
    t = rng.integers(0, 10, 20)
    grads = net.gradient(x, t)
    loss = net.loss(x, t)
    SGD(lr=0.1).update(net.params, grads)
    assert np.asarray(loss).dtype == np.float32
    assert {k: g.dtype for k, g in grads.items()} == {k: np.float32 for k in grads}
    assert {k: p.dtype for k, p in net.params.items()} == {k: np.float32 for k in net.params}
    for lname, layer in [*net.layers.items(), ("last_layer", net.last_layer)]:
        for aname, arr in _float_arrays(layer).items():
            assert arr.dtype == np.float32, f"{lname}.{aname} is {arr.dtype}"
    assert net.predict(x).dtype == np.float32


def test_affine_without_dx_gives_the_same_grads_and_returns_none(rng):
    W, b = rng.standard_normal((12, 5)), rng.standard_normal(5)
    x, dout = rng.standard_normal((7, 3, 4)), rng.standard_normal((7, 5))
    full, lean = Affine(W, b), Affine(W, b, need_dx=False)
    assert full.need_dx and not lean.need_dx
    np.testing.assert_array_equal(full.forward(x), lean.forward(x))
    dx = full.backward(dout)
    assert lean.backward(dout) is None
    assert dx.shape == x.shape
    for k in ("W", "b"):
        np.testing.assert_array_equal(full.grads[k], lean.grads[k])


def test_two_layer_net_skips_only_the_first_dx_and_its_grads_are_unchanged(rng):
    net = TwoLayerNet(20, 8, 10, weight_init_std=0.5, dtype=np.float64, seed=3)
    assert net.layers["Affine1"].need_dx is False and net.layers["Affine2"].need_dx is True
    x, t = rng.standard_normal((6, 20)), rng.integers(0, 10, 6)
    ref = copy.deepcopy(net)
    ref.layers["Affine1"].need_dx = True
    got, want = net.gradient(x, t), ref.gradient(x, t)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


def test_check_net_still_compares_the_first_layers_dx():
    from harness import check_layer, check_net

    net = TwoLayerNet(24, 9, 10, weight_init_std=0.5, seed=0)
    report = check_net(net, input_shape=(4, 24))
    assert report.ok
    tensors = {r.tensor for r in report.results if r.layer.startswith("Affine1")}
    assert "dx" in tensors
    assert net.layers["Affine1"].need_dx is False  # the user's net is not touched
    assert check_layer(Affine(np.ones((3, 2)), np.zeros(2), need_dx=False)).ok


def test_check_catches_a_dx_bug_in_a_layer_that_skips_dx(rng):
    """need_dx=False does not hide the layer's dx formula from the check."""
    from harness import check_layer

    class BadDx(Affine):
        def backward(self, dout):
            super().backward(dout)
            return None if not self.need_dx else dout @ self.params["W"]  # W not transposed

    layer = BadDx(rng.standard_normal((4, 4)), np.zeros(4), need_dx=False)
    report = check_layer(layer)
    assert not report.ok and report.first_divergence.tensor == "dx"


def test_relu_forward_and_backward_equal_the_classic_where(rng):
    x = rng.standard_normal((50, 7)).astype(np.float32)
    x[0, :4] = [-0.0, 0.0, np.inf, -np.inf]
    x[1, 0] = np.nan
    dout = rng.standard_normal((50, 7)).astype(np.float32)
    relu = Relu()
    out, dx = relu.forward(x), relu.backward(dout)
    classic_out = np.where(x <= 0, 0, x).astype(np.float32)
    np.testing.assert_array_equal(out, classic_out)
    assert not np.signbit(out[0, :2]).any()
    assert (dx == np.where(x <= 0, 0, dout)).all()  # +0 and -0 compare equal
    assert out.dtype == dx.dtype == np.float32


def _classic_pool(x, ph, pw, stride, pad):
    """The book's max pooling: im2col rows, np.argmax per row, the classic col2im backward."""
    N, C, H, W = x.shape
    col = im2col(x, ph, pw, stride, pad, pad_value=-np.inf).reshape(-1, ph * pw)
    arg = np.argmax(col, axis=1)
    oh = (H + 2 * pad - ph) // stride + 1
    ow = (W + 2 * pad - pw) // stride + 1
    out = col[np.arange(col.shape[0]), arg].reshape(N, oh, ow, C).transpose(0, 3, 1, 2)
    return out, arg.reshape(N, oh, ow, C).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("ph, pw, stride, pad", [(2, 2, 2, 0), (3, 3, 2, 1), (3, 3, 1, 0),
                                                 (2, 3, 1, 1), (2, 2, 2, 1)])
def test_pooling_equals_the_classic_argmax_with_ties(ph, pw, stride, pad, rng):
    from scratch.convolution import col2im

    x = rng.integers(-3, 4, size=(3, 2, 7, 8)).astype(np.float64)  # many ties
    pool = Pooling(ph, pw, stride=stride, pad=pad)
    out = pool.forward(x)
    want, arg = _classic_pool(x, ph, pw, stride, pad)
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(pool.arg_max, arg)  # the first maximum of every window
    dout = rng.standard_normal(out.shape)
    dcol = np.zeros((dout.size, ph * pw))
    dcol[np.arange(dout.size), arg.transpose(0, 2, 3, 1).reshape(-1)] = \
        dout.transpose(0, 2, 3, 1).reshape(-1)
    want_dx = col2im(dcol.reshape(-1, 2 * ph * pw), x.shape, ph, pw, stride, pad)
    np.testing.assert_allclose(pool.backward(dout), want_dx, rtol=0, atol=1e-15)


def test_evaluation_counts_do_not_depend_on_the_chunk_size(mnist_dir):
    """Chunked evaluation (each framework in turn, at its own thread count) counts exactly
    what one chunk of all 70,000 images counts, for both frameworks."""
    import torch

    from harness.data import load_dataset
    from harness.train import NumpySide, TorchSide, _evaluate, make_net, make_optimizer_pair
    from reference.nets import to_torch

    data = load_dataset("mnist", data_dir=mnist_dir)
    net = make_net("two-layer", dtype=np.float32, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(50):  # a partly trained net: scores with near-ties, not all equal
        idx = rng.integers(0, 60000, 100)
        grads = net.gradient(data.x_train[idx], data.t_train[idx])
        SGD(lr=0.1).update(net.params, grads)
    tnet = to_torch(net, np.float32)
    np_side = NumpySide(net, SGD(lr=0.1))
    t_side = TorchSide(tnet, make_optimizer_pair("sgd", list(tnet.parameters()), 0.1))

    from types import SimpleNamespace

    holder = SimpleNamespace(timings={"numpy_eval": 0.0, "torch_eval": 0.0})
    args = (np_side, t_side, data.x_train, data.t_train, data.x_test, data.t_test,
            np.dtype(np.float32), None)
    one = _evaluate(holder, 0, 600.0, *args, 70000)
    torch_before = torch.get_num_threads()
    for chunk, threads in ((2000, {"numpy": 2, "torch": 2}), (999, None)):
        rec = _evaluate(holder, 0, 600.0, *args, chunk, threads)
        assert rec.train_acc == one.train_acc and rec.test_acc == one.test_acc
        assert list(rec.test_acc) == ["numpy", "torch"]
    assert torch.get_num_threads() == torch_before
    assert 0.2 < one.test_acc["numpy"] < 1.0 and 0.2 < one.test_acc["torch"] < 1.0


def test_checks_run_single_threaded_and_restore_the_thread_counts():
    import torch

    from harness.check import one_thread
    from harness.suite import all_cases
    from harness.threads import numpy_threads

    seen = []
    probe = one_thread(lambda: seen.append((numpy_threads(), torch.get_num_threads())))
    before = (numpy_threads(), torch.get_num_threads())
    torch.set_num_threads(2)
    try:
        probe()
        assert seen == [(1 if before[0] is not None else None, 1)]
        assert torch.get_num_threads() == 2
        case = next(c for c in all_cases() if c.name == "Affine")
        assert case.run(np.dtype(np.float32), 0, 3).ok
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before[1])


def test_relu_backward_zeroes_masked_entries_even_for_non_finite_upstream_gradients() -> None:
    import scratch

    relu = scratch.Relu()
    relu.forward(np.array([[-1.0, 2.0, -3.0]], dtype=np.float32))
    dx = relu.backward(np.array([[np.nan, 1.0, np.inf]], dtype=np.float32))
    np.testing.assert_array_equal(dx, [[0.0, 1.0, 0.0]])  # torch's threshold_backward gives 0
    assert dx.dtype == np.float32
