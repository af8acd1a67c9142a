"""Layers written the book's way (weights as attributes W, b; gradients dW, db; no params
dict, no registration) are checked against the built-in of their name, and their bugs fail."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness import CheckError, check_layer, check_net
from harness.cli import main
from harness.user_modules import forget_user_modules, import_user_module

REPO = Path(__file__).resolve().parents[1]
book = import_user_module(str(REPO / "examples" / "book_layers.py"))
RNG = np.random.default_rng(0)
W, B = RNG.standard_normal((12, 7)), np.zeros(7)


@pytest.fixture(autouse=True)
def _forget():
    yield
    forget_user_modules()


class Convolution:  # the book's attribute layout, a product over sliding windows
    def __init__(self, W, b, stride=1, pad=0):
        self.W, self.b, self.stride, self.pad = W, b, stride, pad
        self.dW = self.db = None

    def forward(self, x):
        self.x = np.pad(x, [(0, 0), (0, 0), (self.pad,) * 2, (self.pad,) * 2])
        win = np.lib.stride_tricks.sliding_window_view(self.x, self.W.shape[2:], axis=(2, 3))
        self.win = win[:, :, ::self.stride, ::self.stride]
        return np.einsum("nchwij,fcij->nfhw", self.win, self.W) + self.b[:, None, None]

    def backward(self, dout):
        self.dW = np.einsum("nchwij,nfhw->fcij", self.win, dout)
        self.db = dout.sum(axis=(0, 2, 3))
        dx = np.zeros_like(self.x)
        fh, fw = self.W.shape[2:]
        for i in range(fh):
            for j in range(fw):
                dx[:, :, i:i + self.stride * dout.shape[2]:self.stride,
                   j:j + self.stride * dout.shape[3]:self.stride] += np.einsum(
                    "nfhw,fc->nchw", dout, self.W[:, :, i, j])
        h, w = dx.shape[2] - self.pad, dx.shape[3] - self.pad
        return dx[:, :, self.pad:h, self.pad:w]


class BiasSummedOverFeatures(book.Affine):
    def backward(self, dout):
        dx = super().backward(dout)
        self.db = dout.sum(axis=1)[: self.b.size]
        return dx


class ReluWritingIntoDout(book.Relu):  # the book's own Relu.backward
    def backward(self, dout):
        dout[self.mask] = 0
        return dout


def conv() -> Convolution:
    return Convolution(RNG.standard_normal((3, 2, 3, 3)), RNG.standard_normal(3), stride=2, pad=1)


def test_book_affine(): assert check_layer(book.Affine(W, B), dtype="float32").ok
def test_book_relu(): assert check_layer(book.Relu()).ok
def test_book_sigmoid(): assert check_layer(book.Sigmoid(), dtype="float32").ok
def test_book_softmax_with_loss(): assert check_layer(book.SoftmaxWithLoss()).ok
def test_book_convolution(): assert check_layer(conv(), input_shape=(2, 2, 7, 7)).ok


def test_the_notes_say_how_it_was_read() -> None:
    notes = check_layer(book.Affine(W, B)).info["notes"]
    assert "matched by its class name" in notes[0] and "attributes W, b" in notes[1]


def test_a_bias_gradient_bug_fails_on_db() -> None:
    r = check_layer(BiasSummedOverFeatures(W, B))
    assert {x.tensor for x in r.failures} == {"db"}


def test_the_books_relu_writing_into_dout_fails_and_says_why() -> None:
    r = check_layer(ReluWritingIntoDout())
    assert {x.tensor for x in r.failures} == {"upstream dout unchanged"}
    assert "the book's Relu.backward does this" in r.failures[0].message


def test_the_users_layer_is_not_touched() -> None:
    layer = book.Affine(W.copy(), B.copy())
    check_layer(layer)
    assert layer.dW is None and np.array_equal(layer.W, W) and not hasattr(layer, "params")


def test_an_unknown_name_still_needs_a_twin() -> None:
    class Swish:
        def forward(self, x): return x
        def backward(self, dout): return dout

    with pytest.raises(CheckError, match="no PyTorch twin registered for Swish"):
        check_layer(Swish())


class BookNet:  # the book's TwoLayerNet layout: params shared with attribute-style layers
    def __init__(self):
        self.params = {"W1": W.copy(), "b1": B.copy(), "W2": RNG.standard_normal((7, 10)),
                       "b2": np.zeros(10)}
        self.layers = {"Affine1": book.Affine(self.params["W1"], self.params["b1"]),
                       "Relu1": book.Relu(),
                       "Affine2": book.Affine(self.params["W2"], self.params["b2"])}
        self.lastLayer = book.SoftmaxWithLoss()

    def predict(self, x):
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        return self.lastLayer.forward(self.predict(x), t)

    def gradient(self, x, t):
        self.loss(x, t)
        dout = self.lastLayer.backward(1)
        for layer in reversed(list(self.layers.values())):
            dout = layer.backward(dout)
        a1, a2 = self.layers["Affine1"], self.layers["Affine2"]
        return {"W1": a1.dW, "b1": a1.db, "W2": a2.dW, "b2": a2.db}


class BookNetHalfB1(BookNet):
    def gradient(self, x, t):
        g = super().gradient(x, t)
        return {**g, "b1": g["b1"] * 0.5}


def test_check_net_checks_a_book_net_and_its_own_methods() -> None:
    r = check_net(BookNet())
    assert r.ok and {"dW", "db", "loss(x, t)", "gradient()['b1']", "predict() (evaluation mode)"} \
        <= {x.tensor for x in r.results}
    assert {x.tensor for x in check_net(BookNetHalfB1()).failures} == {"gradient()['b1']"}


def test_check_module_finds_them_by_name(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    assert main(["check", "--module", str(REPO / "examples" / "book_layers.py"), "--seeds", "1",
                 "--batches", "3", "-q", "--json", str(out)]) == 0
    components = {r["component"] for r in json.loads(out.read_text())["summary"]["rows"]}
    assert {"book_layers.Affine", "book_layers.Relu", "book_layers.SoftmaxWithLoss"} <= components


def test_book_classes_get_the_builtins_settings(tmp_path: Path, capsys) -> None:
    import inspect
    import textwrap

    path = tmp_path / "mine.py"
    path.write_text((REPO / "examples" / "book_layers.py").read_text() + "\n\n"
                    + textwrap.dedent(inspect.getsource(Convolution)))
    assert main(["check", "--module", str(path), "--list"]) == 0
    listed = capsys.readouterr().out
    assert "mine.Convolution (stride 2, pad 1)" in listed and "mine.Affine (4-D input)" in listed


class GradUnderOtherName(book.Affine):
    def backward(self, dout):
        dx = super().backward(dout)
        self.grad_W, self.dW = self.dW, None
        return dx


def test_a_gradient_under_another_attribute_is_named() -> None:
    r = check_layer(GradUnderOtherName(W, B))
    assert "no attribute dW after backward" in r["dW"].message and "['grad_W']" in r["dW"].message


def test_a_book_layer_on_an_empty_base_params_dict() -> None:
    from scratch.layers import Layer, Sigmoid

    class Affine(Layer):  # Layer.__init__ sets params = {}; the weights are attributes
        def __init__(self, W, b):
            super().__init__()
            self.W, self.b, self.dW, self.db = W, b, None, None

        forward, backward = book.Affine.forward, book.Affine.backward

    assert check_layer(Affine(W, B)).ok

    class Tanh(Sigmoid):
        pass

    assert any("named Tanh but a subclass of Sigmoid" in n
               for n in check_layer(Tanh()).info["notes"])


class Dropout:  # the book's: draws its own mask, no scratch base class
    def __init__(self, dropout_ratio=0.5):
        self.dropout_ratio, self.mask = dropout_ratio, None

    def forward(self, x, train_flg=True):
        self.mask = np.random.rand(*x.shape) > self.dropout_ratio  # noqa: NPY002 (the book's)
        return x * self.mask

    def backward(self, dout):
        return dout * self.mask


def test_a_book_dropout_says_to_subclass_scratchs() -> None:
    with pytest.raises(CheckError, match=r"subclass scratch's \(from scratch import Dropout\)"):
        check_layer(Dropout())


def test_a_scratch_dropout_drawing_its_own_mask_is_told_how_to_share_it() -> None:
    import scratch

    class OwnMask(scratch.Dropout):
        def forward(self, x, train_flg=True):
            self.mask = np.random.rand(*x.shape) > self.dropout_ratio  # noqa: NPY002
            return x * self.mask

    r = check_layer(OwnMask(0.5))
    assert "use self.fixed_mask when it is set" in r["out"].message

    class SharesIt(scratch.Dropout):  # the hint followed: the same maths, the shared mask
        def forward(self, x, train_flg=True):
            mask = self.fixed_mask if self.fixed_mask is not None else self.draw_mask(x.shape)
            self.mask = mask
            return x * mask if train_flg else x * (1.0 - self.dropout_ratio)

    assert check_layer(SharesIt(0.5)).ok


def test_a_module_importing_book_layers_checks_them(tmp_path: Path, capsys) -> None:
    (tmp_path / "mybook.py").write_text((REPO / "examples" / "book_layers.py").read_text())
    (tmp_path / "uses.py").write_text("import numpy as np\nfrom mybook import Affine, Relu\n")
    assert main(["check", "--module", str(tmp_path / "uses.py"), "--list"]) == 0
    assert capsys.readouterr().out.split() == ["user", "uses.Affine", "user", "uses.Affine", "(4-D",
                                               "input)", "user", "uses.Relu", "user", "uses.Relu",
                                               "(exact", "zeros)"]
