"""Whole nets written the book's way (OrderedDict of layers, ``self.params``, ``gradient()`` by
backprop) and their wiring bugs: each correct net passes ``check_net`` in float32 and float64,
each bug fails with a message naming the net, the key or layer and what is wrong."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import pytest

from harness import check_net
from harness.report import LayerReport
from scratch.multi_layer_net import MultiLayerNet


class Affine:  # the book's layout: weights as attributes
    def __init__(self, W: np.ndarray, b: np.ndarray) -> None:
        self.W, self.b = W, b
        self.x: Any = None
        self.dW: Any = None
        self.db: Any = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        return x @ self.W + self.b

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.dW = self.x.T @ dout
        self.db = dout.sum(axis=0)
        return dout @ self.W.T


class Relu:
    def forward(self, x: np.ndarray) -> np.ndarray:
        self.mask = x <= 0
        return np.where(self.mask, 0, x)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return np.where(self.mask, 0, dout)


class SoftmaxWithLoss:
    def forward(self, x: np.ndarray, t: np.ndarray) -> float:
        e = np.exp(x - x.max(axis=1, keepdims=True))
        self.y = e / e.sum(axis=1, keepdims=True)
        self.t = t if t.ndim == 1 else t.argmax(axis=1)
        return float(-np.log(self.y[np.arange(len(x)), self.t] + 1e-7).mean())

    def backward(self, dout: float = 1) -> np.ndarray:
        dx = self.y.copy()
        dx[np.arange(len(dx)), self.t] -= 1
        return dx / len(dx)


class BookTwoLayerNet:
    def __init__(self, input_size: int = 12, hidden_size: int = 8, output_size: int = 5) -> None:
        rng = np.random.default_rng(0)
        self.input_size = input_size
        self.params = {"W1": 0.5 * rng.standard_normal((input_size, hidden_size)),
                       "b1": np.zeros(hidden_size),
                       "W2": 0.5 * rng.standard_normal((hidden_size, output_size)),
                       "b2": np.zeros(output_size)}
        self.layers: OrderedDict[str, Any] = OrderedDict()
        self.layers["Affine1"] = Affine(self.params["W1"], self.params["b1"])
        self.layers["Relu1"] = Relu()
        self.layers["Affine2"] = Affine(self.params["W2"], self.params["b2"])
        self.lastLayer = SoftmaxWithLoss()

    def predict(self, x: np.ndarray) -> np.ndarray:
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x: np.ndarray, t: np.ndarray) -> float:
        return self.lastLayer.forward(self.predict(x), t)

    def accuracy(self, x: np.ndarray, t: np.ndarray) -> float:
        y = np.argmax(self.predict(x), axis=1)
        if t.ndim != 1:
            t = np.argmax(t, axis=1)
        return float(np.sum(y == t) / x.shape[0])

    def gradient(self, x: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
        self.loss(x, t)
        dout = self.lastLayer.backward(1)
        for layer in reversed(list(self.layers.values())):
            dout = layer.backward(dout)
        a1, a2 = self.layers["Affine1"], self.layers["Affine2"]
        return {"W1": a1.dW, "b1": a1.db, "W2": a2.dW, "b2": a2.db}


class ParamsCopied(BookTwoLayerNet):  # the layer gets a copy: updates of params never reach it
    def __init__(self) -> None:
        super().__init__()
        self.layers["Affine1"] = Affine(self.params["W1"].copy(), self.params["b1"])


class OneArrayTwoKeys(BookTwoLayerNet):  # params['W2'] = params['W1'] by mistake
    def __init__(self) -> None:
        super().__init__(8, 8, 8)
        self.params["W2"] = self.params["W1"]
        self.layers["Affine2"] = Affine(self.params["W2"], self.params["b2"])


class TiedOneKey(BookTwoLayerNet):  # weights tied on purpose: one key, the gradients summed
    def __init__(self) -> None:
        super().__init__(8, 8, 8)
        del self.params["W2"]
        self.layers["Affine2"] = Affine(self.params["W1"], self.params["b2"])

    def gradient(self, x: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
        g = super().gradient(x, t)
        return {"W1": self.layers["Affine1"].dW + self.layers["Affine2"].dW,
                "b1": g["b1"], "b2": g["b2"]}


class AccuracyArgmaxAxis0(BookTwoLayerNet):  # raises on any batch whose size is not 5
    def accuracy(self, x: np.ndarray, t: np.ndarray) -> float:
        y = np.argmax(self.predict(x), axis=0)
        if t.ndim != 1:
            t = np.argmax(t, axis=1)
        return float(np.sum(y == t) / x.shape[0])


def bad(r: LayerReport) -> list[Any]:
    return [x for x in r.results if x.status != "PASS"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cls", [BookTwoLayerNet, TiedOneKey])
def test_correct_book_nets_pass(cls: type, dtype: str) -> None:
    r = check_net(cls(), dtype=dtype)
    assert r.ok, str(r)


def test_tied_weights_say_why_the_methods_are_not_checked() -> None:
    r = check_net(TiedOneKey())
    assert any("params['W1'] is used by Affine1.W and Affine2.W (tied weights)" in n
               for n in r.info["notes"]), r.info["notes"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_params_that_are_a_copy_of_the_layers_weights_fail(dtype: str) -> None:
    r = check_net(ParamsCopied(), dtype=dtype)
    rows = bad(r)
    assert [x.tensor for x in rows] == ["params['W1'] is the layers' array"], str(r)
    assert "ParamsCopied.params['W1']" in rows[0].message
    assert "equals Affine1.W but is a copy" in rows[0].message


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_two_keys_holding_one_array_fail_and_the_twin_is_not_half_loaded(dtype: str) -> None:
    r = check_net(OneArrayTwoKeys(), dtype=dtype)
    rows = bad(r)
    assert rows[0].tensor == "params['W2'] is the layers' array", str(r)
    assert ("OneArrayTwoKeys.params['W1'] and OneArrayTwoKeys.params['W2'] are the same array"
            in rows[0].message)
    # the whole-net twin would load one layer only (torch's random init in the other): the
    # net's methods are not compared against it
    assert len(rows) == 1, str(r)
    assert any("are the same array" in n for n in r.info["notes"])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_an_accuracy_that_raises_on_every_form_fails(dtype: str) -> None:
    r = check_net(AccuracyArgmaxAxis0(), dtype=dtype)
    rows = bad(r)
    assert [x.tensor for x in rows] == ["accuracy()"], str(r)
    assert rows[0].message.startswith("AccuracyArgmaxAxis0.accuracy(x, t) raised with integer")
    assert "not compared" not in rows[0].message


def test_a_layers_own_note_names_the_layer() -> None:
    class IgnoresDout(SoftmaxWithLoss):
        pass

    net = BookTwoLayerNet()
    net.lastLayer = IgnoresDout()
    r = check_net(net)
    assert any(n.startswith("BookTwoLayerNet.last_layer: backward(dout) ignores dout")
               for n in r.info["notes"]), r.info["notes"]


# --- what a wrong gradient() or loss() is, said in the message -------------------------------

def decayed(cls: type = MultiLayerNet) -> Any:
    net = cls(6, [6, 6], 6, seed=0, weight_decay_lambda=0.1)
    for k, v in net.params.items():  # biases away from 0, so a term in them shows
        if k.startswith("b"):
            v[...] = np.linspace(-0.5, 0.5, v.size)
    return net


class GradientWithoutDecay(MultiLayerNet):
    def gradient(self, x, t):  # type: ignore[no-untyped-def]
        g = super().gradient(x, t)
        return {k: v - self.weight_decay_lambda * self.params[k] if k.startswith("W") else v
                for k, v in g.items()}


class DecaysBiasesInGradient(MultiLayerNet):
    def gradient(self, x, t):  # type: ignore[no-untyped-def]
        g = super().gradient(x, t)
        return {k: v + self.weight_decay_lambda * self.params[k] if k.startswith("b") else v
                for k, v in g.items()}


class DecaysBiasesInLoss(MultiLayerNet):
    def loss(self, x, t, train_flg=True):  # type: ignore[no-untyped-def]
        biases = sum(float(np.sum(v ** 2)) for k, v in self.params.items() if k.startswith("b"))
        return super().loss(x, t, train_flg) + 0.5 * self.weight_decay_lambda * biases


class LossWithoutDecay(MultiLayerNet):
    def loss(self, x, t, train_flg=True):  # type: ignore[no-untyped-def]
        weights = sum(float(np.sum(v ** 2)) for k, v in self.params.items() if k.startswith("W"))
        return super().loss(x, t, train_flg) - 0.5 * self.weight_decay_lambda * weights


class W1W2Swapped(MultiLayerNet):
    def gradient(self, x, t):  # type: ignore[no-untyped-def]
        g = super().gradient(x, t)
        return {**g, "W1": g["W2"], "W2": g["W1"]}


class PreviousCall(MultiLayerNet):
    def gradient(self, x, t):  # type: ignore[no-untyped-def]
        prev = getattr(self, "prev", None)
        self.prev = {k: v.copy() for k, v in super().gradient(x, t).items()}
        return prev if prev is not None else self.prev


def messages(net: Any, dtype: str) -> dict[str, str]:
    return {x.tensor: x.message for x in bad(check_net(net, dtype=dtype))}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_gradient_without_the_decay_term_is_named(dtype: str) -> None:
    m = messages(decayed(GradientWithoutDecay), dtype)
    assert set(m) == {"gradient()['W1']", "gradient()['W2']", "gradient()['W3']"}, m
    assert "by exactly -0.1 * params['W1']: the weight-decay term" in m["gradient()['W1']"]
    assert "is missing" in m["gradient()['W1']"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_decayed_biases_are_named_in_gradient_and_loss(dtype: str) -> None:
    m = messages(decayed(DecaysBiasesInGradient), dtype)
    assert set(m) == {"gradient()['b1']", "gradient()['b2']", "gradient()['b3']"}, m
    assert "weight decay is applied to 'b2'" in m["gradient()['b2']"]
    m = messages(decayed(DecaysBiasesInLoss), dtype)
    assert "loss(x, t)" in m and "loss() also adds 0.5 * lambda * sum(p**2) of ['b1', 'b2', " \
        "'b3']" in m["loss(x, t)"], m


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_loss_without_the_decay_term_is_named(dtype: str) -> None:
    m = messages(decayed(LossWithoutDecay), dtype)
    assert set(m) == {"loss(x, t)"}, m
    assert m["loss(x, t)"].endswith("loss() leaves it out (its gradient() may still add "
                                     "lambda * W)")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_swapped_and_stale_gradients_are_named(dtype: str) -> None:
    m = messages(decayed(W1W2Swapped), dtype)
    assert set(m) == {"gradient()['W1']", "gradient()['W2']"}, m
    assert "it is the gradient of 'W2' (stored under the wrong key" in m["gradient()['W1']"]
    m = messages(decayed(PreviousCall), dtype)
    assert "gradient()['b3']" in m, m
    assert "it is the gradient of the previous call" in m["gradient()['b3']"]


# --- nn-parity check --module: the nets a module defines are checked too ---------------------

BOOK_MODULE = '''
import numpy as np
from collections import OrderedDict


class Affine:
    def __init__(self, W, b):
        self.W, self.b, self.x, self.dW, self.db = W, b, None, None, None
    def forward(self, x):
        self.x = x
        return x @ self.W + self.b
    def backward(self, dout):
        self.dW = self.x.T @ dout
        self.db = dout.sum(axis=0)
        return dout @ self.W.T


class Relu:
    def forward(self, x):
        self.mask = x <= 0
        return np.where(self.mask, 0, x)
    def backward(self, dout):
        return np.where(self.mask, 0, dout)


class SoftmaxWithLoss:
    def forward(self, x, t):
        e = np.exp(x - x.max(axis=1, keepdims=True))
        self.y = e / e.sum(axis=1, keepdims=True)
        self.t = t if t.ndim == 1 else t.argmax(axis=1)
        return -np.log(self.y[np.arange(len(x)), self.t] + 1e-7).mean()
    def backward(self, dout=1):
        dx = self.y.copy()
        dx[np.arange(len(dx)), self.t] -= 1
        return dx / len(dx)


class TwoLayerNet:
    def __init__(self, input_size, hidden_size, output_size, weight_init_std=0.5):
        self.params = {
            "W1": weight_init_std * np.random.randn(input_size, hidden_size),
            "b1": np.zeros(hidden_size),
            "W2": weight_init_std * np.random.randn(hidden_size, output_size),
            "b2": np.zeros(output_size)}
        self.layers = OrderedDict()
        self.layers["Affine1"] = Affine(self.params["W1"], self.params["b1"])
        self.layers["Relu1"] = Relu()
        self.layers["Affine2"] = Affine(self.params["W2"], self.params["b2"])
        self.lastLayer = SoftmaxWithLoss()

    def predict(self, x):
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        return self.lastLayer.forward(self.predict(x), t)

    def accuracy(self, x, t):
        y = np.argmax(self.predict(x), axis=1)
        if t.ndim != 1:
            t = np.argmax(t, axis=1)
        return np.sum(y == t) / float(x.shape[0])

    def gradient(self, x, t):
        self.loss(x, t)
        dout = self.lastLayer.backward(1)
        for layer in reversed(list(self.layers.values())):
            dout = layer.backward(dout)
        a1, a2 = self.layers["Affine1"], self.layers["Affine2"]
        return {"W1": a1.dW, "b1": a1.db, "W2": a2.dW, "b2": a2.db}
'''
CLI_FAST = ["--seeds", "1", "--batches", "3"]


@pytest.fixture()
def _forget_modules() -> Any:
    from harness.user_modules import forget_user_modules

    yield
    forget_user_modules()


def module_file(tmp_path: Any, name: str, body: str) -> str:
    path = tmp_path / f"{name}.py"
    path.write_text(body)
    return str(path)


def test_check_module_checks_the_book_net_it_defines(tmp_path: Any, capsys: Any,
                                                     _forget_modules: Any) -> None:
    from harness.cli import main

    path = module_file(tmp_path, "booknet", BOOK_MODULE)
    assert main(["check", "--module", path, "--list"]) == 0
    assert "user       booknet.TwoLayerNet" in capsys.readouterr().out.splitlines()
    assert main(["check", "--module", path, *CLI_FAST, "--only", "booknet.TwoLayerNet"]) == 0
    out = capsys.readouterr().out
    assert "gradient()['W1']" in out and "accuracy()" in out, out
    assert ("booknet.TwoLayerNet: built as TwoLayerNet(input_size=12, hidden_size=8, "
            "output_size=5)") in out, out


def test_check_module_fails_a_net_whose_gradient_takes_the_wrong_layer(
        tmp_path: Any, capsys: Any, _forget_modules: Any) -> None:
    from harness.cli import main

    body = BOOK_MODULE.replace('"b2": a2.db', '"b2": a1.db[: a2.db.size]')
    path = module_file(tmp_path, "bookbug", body)
    assert main(["check", "--module", path, *CLI_FAST]) == 1
    out = capsys.readouterr().out
    assert "TwoLayerNet.gradient()['b2'] [float64" in out, out
    assert "differs from autograd through the whole net for 'b2'" in out


def test_check_module_checks_a_module_level_net_and_notes_one_it_cannot_build(
        tmp_path: Any, capsys: Any, _forget_modules: Any) -> None:
    from harness.cli import main

    body = BOOK_MODULE + '''

class SizedNet(TwoLayerNet):
    def __init__(self, n_in, n_hidden):
        super().__init__(n_in, n_hidden, 3)


np.random.seed(1)
net = TwoLayerNet(6, 4, 3)
net.params["W1"] = net.params["W1"].copy()   # the layer keeps the old array
'''
    path = module_file(tmp_path, "instances", body)
    assert main(["check", "--module", path, *CLI_FAST]) == 1
    out = capsys.readouterr().out
    assert "instances.net" in out and "TwoLayerNet.params['W1'] is the layers' array" in out
    assert "instances.SizedNet: a net, not checked: its constructor needs ['n_in', " \
        "'n_hidden']" in out, out
    assert "instances.TwoLayerNet" not in out.replace("instances.TwoLayerNet:", "")


class ScratchAffineReadTheBooksWay(BookTwoLayerNet):  # scratch's Affine keeps .grads['W']
    def __init__(self) -> None:
        super().__init__()
        from scratch.layers import Affine as ScratchAffine

        self.layers["Affine1"] = ScratchAffine(self.params["W1"], self.params["b1"])


def test_a_gradient_reading_dW_of_a_layer_with_a_grads_dict_says_where_it_is() -> None:
    r = check_net(ScratchAffineReadTheBooksWay())
    rows = bad(r)
    assert [x.tensor for x in rows] == ["gradient()"], str(r)
    assert rows[0].message.endswith(
        "layers['Affine1'] is a Affine that keeps its gradients in a dict (.grads['W'], as "
        "scratch's layers do), not in the attribute .dW of the book's layout: read "
        ".grads['W'] in gradient()"), rows[0].message


def test_the_whole_net_twin_refuses_one_array_under_two_keys_saying_why() -> None:
    from reference.nets import to_torch

    with pytest.raises(LookupError, match=r"OneArrayTwoKeys.params\['W1'\] and OneArrayTwoKeys"
                       r".params\['W2'\] are the same array: an optimizer updates it twice"):
        to_torch(OneArrayTwoKeys())
    with pytest.raises(LookupError, match=r"TiedOneKey.params\['W1'\] is used by Affine1.W and "
                       r"Affine2.W \(tied weights\)"):
        to_torch(TiedOneKey())


# --- the book's SimpleConvNet: no input_dim attribute, accuracy() by whole batches of 100 ----

class BookConvNet:
    """The book's layout: input_dim only as a constructor argument; accuracy() in batches."""

    def __init__(self, input_dim: tuple[int, int, int] = (1, 8, 8), filter_num: int = 3,
                 hidden_size: int = 6, output_size: int = 4) -> None:
        from scratch import Convolution, Pooling

        rng = np.random.default_rng(0)
        pooled = filter_num * ((input_dim[1] - 2) // 2) ** 2
        self.params = {"W1": 0.3 * rng.standard_normal((filter_num, input_dim[0], 3, 3)),
                       "b1": np.zeros(filter_num),
                       "W2": 0.3 * rng.standard_normal((pooled, hidden_size)),
                       "b2": np.zeros(hidden_size),
                       "W3": 0.3 * rng.standard_normal((hidden_size, output_size)),
                       "b3": np.zeros(output_size)}
        self.layers: OrderedDict[str, Any] = OrderedDict()
        self.layers["Conv1"] = Convolution(self.params["W1"], self.params["b1"])
        self.layers["Relu1"] = Relu()
        self.layers["Pool1"] = Pooling(2, 2, stride=2)
        self.layers["Affine1"] = FlatAffine(self.params["W2"], self.params["b2"])
        self.layers["Relu2"] = Relu()
        self.layers["Affine2"] = FlatAffine(self.params["W3"], self.params["b3"])
        self.last_layer = SoftmaxWithLoss()

    def predict(self, x: np.ndarray) -> np.ndarray:
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x: np.ndarray, t: np.ndarray) -> float:
        return self.last_layer.forward(self.predict(x), t)

    def accuracy(self, x: np.ndarray, t: np.ndarray, batch_size: int = 100) -> float:
        if t.ndim != 1:
            t = np.argmax(t, axis=1)
        acc = 0.0
        for i in range(int(x.shape[0] / batch_size)):
            tx, tt = x[i * batch_size:(i + 1) * batch_size], t[i * batch_size:(i + 1) * batch_size]
            acc += np.sum(np.argmax(self.predict(tx), axis=1) == tt)
        return acc / x.shape[0]

    def gradient(self, x: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
        self.loss(x, t)
        dout = self.last_layer.backward(1)
        for layer in reversed(list(self.layers.values())):
            dout = layer.backward(dout)
        c, a1, a2 = self.layers["Conv1"], self.layers["Affine1"], self.layers["Affine2"]
        return {"W1": c.grads["W"], "b1": c.grads["b"], "W2": a1.dW, "b2": a1.db,
                "W3": a2.dW, "b3": a2.db}


class FlatAffine(Affine):  # the book's Affine flattens a 4-D input
    def forward(self, x: np.ndarray) -> np.ndarray:
        self.shape = x.shape
        return super().forward(x.reshape(len(x), -1))

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return super().backward(dout).reshape(self.shape)


class BookConvNetSubclass(BookConvNet):
    def __init__(self) -> None:
        super().__init__()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cls", [BookConvNet, BookConvNetSubclass])
def test_the_books_convnet_passes_from_its_constructors_input_dim(cls: type, dtype: str) -> None:
    r = check_net(cls(), dtype=dtype)
    assert r.ok, str(r)
    assert r.input_shape == (4, 1, 8, 8)
    notes = r.info["notes"]
    assert any("input of shape (batch, 1, 8, 8) from the default input_dim=(1, 8, 8) of" in n
               for n in notes), notes
    assert any("accuracy(x, t) counts whole batches of batch_size=100 only: the rows after "
               "the last whole batch are never counted" in n for n in notes), notes


class BatchedAccuracyWrongAxis(BookConvNet):
    def accuracy(self, x: np.ndarray, t: np.ndarray, batch_size: int = 100) -> float:
        return 0.0 if len(x) < batch_size else 1.0


def test_a_batched_accuracy_that_is_wrong_on_a_whole_batch_still_fails() -> None:
    r = check_net(BatchedAccuracyWrongAxis())
    assert [x.tensor for x in bad(r)] == ["accuracy()"], str(r)


def test_a_net_built_with_other_sizes_than_its_constructors_defaults_still_passes() -> None:
    net = BookTwoLayerNet(7, 5, 3)
    del net.input_size  # the book's TwoLayerNet keeps no input size: the default 12 is wrong
    r = check_net(net)
    assert r.ok and r.input_shape == (4, 7), str(r)
    assert not any("input of shape" in n for n in r.info["notes"])


class SoftmaxInPredict(BookTwoLayerNet):  # softmax in predict(), then again in the loss layer
    def predict(self, x: np.ndarray) -> np.ndarray:
        y = super().predict(x)
        e = np.exp(y - y.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_applied_twice_is_named_on_loss_gradient_and_predict(dtype: str) -> None:
    m = messages(SoftmaxInPredict(), dtype)
    assert {"loss(x, t)", "gradient()['W1']", "predict() (evaluation mode)"} <= set(m), m
    for tensor in ("loss(x, t)", "gradient()['W1']", "predict() (evaluation mode)"):
        assert "SoftmaxInPredict.predict(x) returns probabilities (every row sums to 1), so " \
            "softmax is applied in predict() and again in the loss layer" in m[tensor], m[tensor]


class GradientWithoutForward(BookTwoLayerNet):  # backprop of whatever forward ran last
    def gradient(self, x: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
        dout = self.lastLayer.backward(1)
        for layer in reversed(list(self.layers.values())):
            dout = layer.backward(dout)
        a1, a2 = self.layers["Affine1"], self.layers["Affine2"]
        return {"W1": a1.dW, "b1": a1.db, "W2": a2.dW, "b2": a2.db}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_gradient_that_never_runs_the_forward_pass_is_named(dtype: str) -> None:
    m = messages(GradientWithoutForward(), dtype)  # a fresh net: nothing to backpropagate
    assert set(m) == {"gradient()"}, m
    assert "it runs when GradientWithoutForward.loss(x, t) ran just before it, so gradient() " \
        "does not run the forward pass itself" in m["gradient()"]
    net = GradientWithoutForward()
    net.loss(np.ones((3, 12)), np.array([0, 1, 2]))  # a forward ran once, on other data
    m = messages(net, dtype)
    assert "gradient()['W1']" in m, m
    assert "it is what gradient() returned for other inputs, on the call before: gradient(x, t) " \
        "ignores x and t" in m["gradient()['W1']"]


class BackpropInForwardOrder(BookTwoLayerNet):
    def gradient(self, x: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
        self.loss(x, t)
        dout = self.lastLayer.backward(1)
        for layer in self.layers.values():  # forward order
            dout = layer.backward(dout)
        a1, a2 = self.layers["Affine1"], self.layers["Affine2"]
        return {"W1": a1.dW, "b1": a1.db, "W2": a2.dW, "b2": a2.db}


def test_backprop_in_forward_order_points_at_the_order() -> None:
    m = messages(BackpropInForwardOrder(), "float64")
    assert set(m) == {"gradient()"}, m
    assert m["gradient()"].endswith("look at the order gradient() calls backward in: the last "
                                    "layer first, then the layers in reverse "
                                    "(reversed(list(self.layers.values())))"), m


def test_the_whole_net_twin_names_the_layer_holding_a_copy() -> None:
    from reference.nets import to_torch

    with pytest.raises(LookupError, match=r"ParamsCopied.params\['W1'\] is not shared with any "
                       r"layer's params: Affine1.W holds a copy of it, so an optimizer's "
                       r"in-place update of net.params never reaches the layer"):
        to_torch(ParamsCopied())


class W1W2SwappedNonSquare(BookTwoLayerNet):
    def gradient(self, x: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
        g = super().gradient(x, t)
        return {**g, "W1": g["W2"], "W2": g["W1"]}


def test_a_gradient_of_another_keys_shape_names_the_key() -> None:
    m = messages(W1W2SwappedNonSquare(), "float32")
    assert m["gradient()['W1']"] == ("W1W2SwappedNonSquare.gradient()['W1'] has shape (8, 5), "
                                     "net.params['W1'] (12, 8): it is the gradient of 'W2' "
                                     "(stored under the wrong key)"), m


def test_scratch_batch_norm_gives_the_books_dgamma_and_dbeta() -> None:
    """The README tells a book-style net to use (a subclass of) scratch's BatchNormalization;
    the book's MultiLayerNetExtend.gradient() reads .dgamma and .dbeta, which did not exist."""
    from scratch import BatchNormalization

    rng = np.random.default_rng(0)
    bn = BatchNormalization(np.ones(4), np.zeros(4))
    bn.forward(rng.standard_normal((5, 4)))
    dout = rng.standard_normal((5, 4))
    bn.backward(dout)
    assert bn.dgamma is bn.grads["gamma"] and bn.dbeta is bn.grads["beta"]
    np.testing.assert_allclose(bn.dbeta, dout.sum(axis=0))
    bn.dgamma = np.full(4, 7.0)  # the book's backward assigns them: they land in grads
    assert bn.grads["gamma"].tolist() == [7.0] * 4


def test_parity_of_a_net_class_builds_it_and_checks_it() -> None:
    """parity(TwoLayerNet) (the class) said 'no PyTorch twin registered ... pass an instance';
    it is built as check --module builds a net class, and a bug in it fails."""
    from harness.check import CheckError
    from harness.pytest_plugin import check_any
    from scratch import TwoLayerNet

    good = check_any(TwoLayerNet, dtype="float64", seed=0)
    assert good.ok and "the net built as TwoLayerNet()" in good.info.get("notes", [])

    class HalfGradient(TwoLayerNet):
        def gradient(self, x, t):
            g = super().gradient(x, t)
            g["W1"] = g["W1"] * 0.5
            return g

    bad = check_any(HalfGradient, dtype="float64", seed=0)
    assert not bad.ok and [r.tensor for r in bad.results if r.status != "PASS"] == [
        "gradient()['W1']"]

    class NeedsAFile(TwoLayerNet):
        def __init__(self, weights_file: str) -> None:
            super().__init__()

    with pytest.raises(CheckError, match="weights_file"):
        check_any(NeedsAFile)


def test_an_imported_class_is_named_as_the_module_names_it(tmp_path) -> None:
    """from book_src import Affine as BookAffine; class Affine(BookAffine): both were reported
    as mymod.Affine, so the imported one's rows showed under the user's class."""
    from harness.user_modules import discover, forget_user_modules, import_user_module

    (tmp_path / "book_src.py").write_text(
        "import numpy as np\n"
        "class Affine:\n"
        "    def __init__(self, W, b):\n"
        "        self.W, self.b = W, b\n"
        "    def forward(self, x):\n"
        "        self.x = x\n"
        "        return x @ self.W + self.b\n"
        "    def backward(self, dout):\n"
        "        self.dW, self.db = self.x.T @ dout, dout.sum(axis=0)\n"
        "        return dout @ self.W.T\n")
    (tmp_path / "mymod.py").write_text(
        "from book_src import Affine as BookAffine\n"
        "class Affine(BookAffine):\n"
        "    pass\n")
    try:
        names = sorted(s.name for s in discover(import_user_module(str(tmp_path / "mymod.py"))))
    finally:
        forget_user_modules()
    assert names == ["mymod.Affine", "mymod.BookAffine"]
