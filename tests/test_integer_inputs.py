"""Integer-index inputs (Embedding-style layers): the scratch layer gets the integer array as
given, the torch twin a torch.long tensor, parameters are cast to the check's dtype, and no
input gradient is compared (indices have none). A backward that loses repeated indices, a
forward off by one, an index torch rejects and a bool input are each caught and named."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import scratch
from harness import CheckError, check_layer, check_net, gradient_check
from harness.check import make_input
from harness.cli import main
from harness.compare import FAIL, PASS
from harness.pytest_plugin import ParityError, assert_parity, parity_cases
from harness.user_modules import forget_user_modules, import_user_module
from reference.registry import index_input, lookup, register, registered, unregister

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = str(REPO / "examples" / "user_embedding.py")
SEEN: list[tuple[np.dtype, np.dtype]] = []
IDX = np.array([[1, 2, 3, 1], [4, 0, 1, 19]])  # index 1 three times: np.add.at vs += matters
W = np.random.default_rng(7).standard_normal((20, 4))


class Embedding:
    def __init__(self, W):
        self.params, self.grads = {"W": W}, {"W": np.zeros_like(W)}
    def forward(self, idx):
        self.idx = idx
        return self.params["W"][idx]
    def backward(self, dout):
        self.grads["W"] = np.zeros_like(self.params["W"])
        np.add.at(self.grads["W"], self.idx, dout)


class PlusEqEmbedding(Embedding):  # fancy-index += keeps one of the repeated rows' gradients
    def backward(self, dout):
        self.grads["W"] = np.zeros_like(self.params["W"])
        self.grads["W"][self.idx] += dout


class OffByOneEmbedding(Embedding):
    def forward(self, idx):
        self.idx = (idx + 1) % len(self.params["W"])
        return self.params["W"][self.idx]


class ShiftsIdxInPlace(Embedding):  # right output, but the caller's indices are changed
    def forward(self, idx):
        idx += 1
        return super().forward(idx - 1)


class CachesFirstIdx(Embedding):  # keeps the first call's indices: stale from the second call
    def forward(self, idx):
        self.first = getattr(self, "first", idx)
        self.idx = self.first
        return self.params["W"][idx]


class ZerosDx(Embedding):  # returns an array for the indices' "gradient": not compared
    def backward(self, dout):
        super().backward(dout)
        return np.zeros(self.idx.shape)


class Spy(Embedding):  # records what the scratch layer was given
    def forward(self, idx):
        SEEN.append((idx.dtype, self.params["W"].dtype))
        return super().forward(idx)


class EmbeddingBag(Embedding):  # sums each row's bag of embeddings
    def forward(self, idx):
        self.idx = idx
        return self.params["W"][idx].sum(axis=1)
    def backward(self, dout):
        self.grads["W"] = np.zeros_like(self.params["W"])
        np.add.at(self.grads["W"], self.idx, dout[:, None, :])


class BagPlusEq(EmbeddingBag):
    def backward(self, dout):
        self.grads["W"] = np.zeros_like(self.params["W"])
        self.grads["W"][self.idx] += dout[:, None, :]


class OneHot:  # no parameters: nothing but the output to compare
    def __init__(self, c=20):
        self.c = c
    def forward(self, idx):
        return np.eye(self.c)[idx]
    def backward(self, dout):
        return None


class OneHotTorch(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
    def forward(self, idx):
        return F.one_hot(idx, self.c).double()


class SoftLookup(Embedding):  # indices, or soft (one-hot-like) weights over the rows
    def forward(self, x):
        self.x = self.idx = x
        return self.params["W"][x] if x.dtype.kind in "iu" else x @ self.params["W"]
    def backward(self, dout):
        if self.x.dtype.kind in "iu":
            return super().backward(dout)
        self.grads["W"] = self.x.T @ dout
        return dout @ self.params["W"].T


class SoftLookupTorch(nn.Embedding):
    def forward(self, x):
        return super().forward(x) if not x.is_floating_point() else x @ self.weight


def rows(layer):
    return layer.params["W"].shape[0]


TWINS = {
    Embedding: (lambda l: nn.Embedding(*l.params["W"].shape), {"W": "weight"}),
    EmbeddingBag: (lambda l: nn.EmbeddingBag(*l.params["W"].shape, mode="sum"), {"W": "weight"}),
    OneHot: (lambda l: OneHotTorch(l.c), {}),
    SoftLookup: (lambda l: SoftLookupTorch(*l.params["W"].shape), {"W": "weight"}),
}


@pytest.fixture(autouse=True)
def _twins():
    before = set(registered())
    for cls, (factory, wmap) in TWINS.items():
        register(cls, factory, wmap, make_input=index_input(rows) if cls is not OneHot else None,
                 input_shape=lambda layer, n: (n, 5))
    yield
    for cls in set(registered()) - before:
        unregister(cls)
        if cls.__module__ != __name__:  # an imported example: import (and register) it afresh
            sys.modules.pop(cls.__module__, None)
    forget_user_modules()


def check(layer, x=IDX, **kw):
    return check_layer(layer, x=x, **kw)


def statuses(report):
    return {r.tensor: r.status for r in report.results}


def raises(exc, fn, *args, **kw):
    with pytest.raises(exc) as info:
        fn(*args, **kw)
    return str(info.value)


UNCHANGED = {"input x unchanged": PASS, "upstream dout unchanged": PASS}
RNG = np.random.default_rng
F32 = np.dtype(np.float32)


# ---------------------------------------------------------------------------------------
# check_layer with a given integer x

def test_embedding_float64_passes(): assert check(Embedding(W), dtype="float64").ok
def test_embedding_float32_passes(): assert check(Embedding(W), dtype="float32").ok
def test_int32_indices_pass(): assert check(Embedding(W), x=IDX.astype(np.int32)).ok
def test_uint8_indices_pass(): assert check(Embedding(W), x=IDX.astype(np.uint8), dtype="float32").ok
def test_only_out_dW_compared(): assert statuses(check(Embedding(W))) == {"out": PASS, "dW": PASS} | UNCHANGED
def test_dx_not_applicable_in_info(): assert "no gradient" in check(Embedding(W)).info["not_compared"]["dx"]
def test_backward_returning_an_array_for_x_is_fine(): assert check(ZerosDx(W)).ok
def test_embedding_bag_passes(): assert check(EmbeddingBag(W), dtype="float32").ok
def test_one_hot_passes_without_params(): assert statuses(check(OneHot())) == {"out": PASS} | UNCHANGED
def test_lookup_takes_indices(): assert check(SoftLookup(W)).ok
def test_float_input_keeps_the_float_path(): assert check(SoftLookup(W), x=RNG(0).random((3, 20)))["dx"].ok


def test_scratch_gets_the_integers_and_cast_params():
    check(Spy(W), x=IDX.astype(np.int32), dtype="float32")
    assert SEEN[-1] == (np.dtype(np.int32), np.dtype(np.float32))


def test_torch_gets_long():
    mod, seen = nn.Embedding(20, 4), []
    mod.register_forward_pre_hook(lambda m, a: seen.append(a[0].dtype))
    check_layer(Embedding(W), mod, weight_map={"W": "weight"}, x=IDX.astype(np.int32))
    assert seen == [torch.long] * len(seen) and seen


def test_users_index_array_is_untouched():
    x = IDX.copy()
    check(Embedding(W), x=x)
    assert x.dtype == IDX.dtype and np.array_equal(x, IDX)


def test_plus_eq_embedding_fails_on_dW_naming_layer_and_tensor():
    r = check(PlusEqEmbedding(W), dtype="float32")
    assert statuses(r) == {"out": PASS, "dW": FAIL, **UNCHANGED}
    assert "PlusEqEmbedding.dW [float32, shape (20, 4)]: FAIL" in str(r)


def test_off_by_one_forward_fails_on_out(): assert check(OffByOneEmbedding(W))["out"].status == FAIL
def test_index_changed_in_place_fails(): assert check(ShiftsIdxInPlace(W))["input x unchanged"].status == FAIL
def test_stale_indices_caught_by_the_warm_up(): assert check(CachesFirstIdx(W))["dW"].status == FAIL
def test_plus_eq_in_a_bag_fails_on_dW(): assert statuses(check(BagPlusEq(W)))["dW"] == FAIL


# ---------------------------------------------------------------------------------------
# Default inputs from the registration

def draw(shape, n=20): return index_input(n)(None, shape, np.float32, RNG(0))
def test_index_input_is_int64_in_range(): assert draw((3, 5)).dtype == np.int64 and draw((3, 5)).max() < 20
def test_index_input_repeats_an_index(): assert len(np.unique(draw((1, 2), n=1000))) == 1
def test_index_input_covers_both_ends(): assert {0, 19} <= set(draw((2, 3)).ravel().tolist())
def test_index_input_rejects_zero(): raises(ValueError, index_input(lambda _: 0), None, (2,), None, RNG(0))
def test_make_input_keeps_integers(): assert make_input(lookup(Embedding), Embedding(W), (2, 5), F32, RNG(0)).dtype.kind == "i"  # noqa: E501
def test_check_layer_without_x(): assert check_layer(Embedding(W), dtype="float32").input_shape == (4, 5)
def test_check_layer_without_x_passes(): assert check_layer(Embedding(W), dtype="float32").ok
def test_plus_eq_caught_by_default_x(): assert check_layer(PlusEqEmbedding(W), batch=3)["dW"].status == FAIL


def test_lambda_make_input_from_the_docs():
    register(Embedding, TWINS[Embedding][0], {"W": "weight"}, input_shape=lambda layer, n: (n, 3),
             make_input=lambda layer, shape, dtype, rng: rng.integers(0, layer.params["W"].shape[0], shape))
    assert check_layer(Embedding(W)).ok


# ---------------------------------------------------------------------------------------
# Bad input: clear errors

@pytest.mark.parametrize(("x", "message"), [
    (IDX.astype(bool), "Embedding: input x must be a float array, got dtype bool"),
    (IDX.astype(np.complex128), "Embedding: input x must be a float array, got dtype complex128"),
    (IDX.astype(object), "Embedding: input x must be a float array, got dtype object"),
    (np.array([[1, 20]]), "Embedding: integer input x (indices): index 20 at (0, 1) is out of range 0..19"),
    (np.array([[1, -1]]), "index -1 at (0, 1) is out of range 0..19 (num_embeddings=20 in the torch twin"),
    (np.array([[1, -1]]), "NumPy counts negative indices from the end; torch does not"),
])
def test_bad_index_input_is_a_clear_check_error(x, message):
    assert message in raises(CheckError, check, Embedding(W), x=x)


def test_index_rejected_by_a_twin_without_num_embeddings():
    msg = raises(CheckError, check, OneHot(), x=np.array([[3, 20]]))
    assert msg.startswith("OneHot: the torch twin rejected input")
    assert "passed to the twin as indices (torch.long), here 3..20" in msg


def test_integers_to_a_float_layer_say_cast_them():
    affine = scratch.Affine(np.ones((3, 2)), np.zeros(2))
    msg = raises(CheckError, check_layer, affine, x=np.ones((2, 3), int))
    assert "input x must be a float array, got dtype int64 (cast it with x.astype(np.float64))" in msg


# ---------------------------------------------------------------------------------------
# gradient_check, check_net, pytest plugin, CLI

def test_gradient_check_embedding(): assert gradient_check(Embedding(W), x=IDX).ok
def test_gradient_check_compares_dW_never_dx(): assert [t for t in statuses(gradient_check(Embedding(W), x=IDX)) if "numerical" in t] == ["dW backprop vs numerical", "dW torch vs numerical"]  # noqa: E501
def test_gradient_check_catches_plus_eq(): assert statuses(gradient_check(PlusEqEmbedding(W), x=IDX))["dW backprop vs numerical"] == FAIL  # noqa: E501
def test_gradient_check_without_x(): assert gradient_check(EmbeddingBag(W)).ok
def test_gradient_check_one_hot(): assert gradient_check(OneHot(), x=IDX).ok


class EmbedNet:
    def __init__(self, emb=Embedding):
        affine = scratch.Affine(RNG(3).standard_normal((16, 5)), np.zeros(5))
        self.layers = {"Embed": emb(W.copy()), "Affine": affine}
        self.last_layer = scratch.SoftmaxWithLoss()


T = np.array([1, 4])
def test_check_net_with_an_index_first_layer(): assert check_net(EmbedNet(), IDX, T, dtype="float32").ok
def test_check_net_pins_the_bug_to_the_embedding(): assert check_net(EmbedNet(PlusEqEmbedding), IDX, T).first_divergence.name == "Embed(PlusEqEmbedding).dW"  # noqa: E501
def test_check_net_draws_index_input(): assert check_net(EmbedNet(), input_shape=(3, 4)).ok
def test_check_net_notes_dx_not_applicable(): assert "Embed(Embedding).dx" in check_net(EmbedNet(), IDX, T).info["not_compared"]  # noqa: E501


def test_parity_with_integer_x(): assert_parity(Embedding(W), x=IDX, dtype="float32")
def test_parity_default_batches(): assert_parity(EmbeddingBag(W))
def test_parity_failure_names_dW(): assert "PlusEqEmbedding.dW [float64, shape (20, 4)]: FAIL" in raises(ParityError, assert_parity, PlusEqEmbedding(W), x=IDX)  # noqa: E501
def test_parity_failure_says_dx_not_compared(): assert "not compared: dx (not applicable" in raises(ParityError, assert_parity, PlusEqEmbedding(W), x=IDX)  # noqa: E501
def test_parity_cases_of_the_example_module(): assert all(p.values[0].check().ok for p in parity_cases(import_user_module(EXAMPLE), seeds=[0]))  # noqa: E501


GOOD = f"""
import numpy as np
from torch import nn
from reference import index_input, register

{inspect.getsource(Embedding)}
register(Embedding, lambda l: nn.Embedding(*l.params["W"].shape), {{"W": "weight"}},
         input_shape=lambda l, n: (n, 6), make_input=index_input(lambda l: len(l.params["W"])),
         example=lambda rng, dtype: Embedding(rng.standard_normal((9, 3)).astype(dtype)))
"""
BUGGY = GOOD.replace('np.add.at(self.grads["W"], self.idx, dout)', 'self.grads["W"][self.idx] += dout')


def cli(tmp_path, body, *extra):
    (tmp_path / "emb_mod.py").write_text(textwrap.dedent(body))
    return main(["check", "-q", "--module", str(tmp_path / "emb_mod.py"), *extra])


def test_cli_module_with_embedding_passes(tmp_path): assert cli(tmp_path, GOOD) == 0
def test_cli_module_with_buggy_embedding_fails(tmp_path): assert cli(tmp_path, BUGGY) == 1
def test_json_report_says_dx_not_compared(tmp_path):
    cli(tmp_path, GOOD, "--json", str(tmp_path / "r.json"))
    layers = json.loads((tmp_path / "r.json").read_text())["layers"]
    assert layers and all("dx" in lr["info"]["not_compared"] for lr in layers)


def test_cli_example_module(): assert subprocess.run([sys.executable, "-m", "harness", "check", "-q", "--module", EXAMPLE], cwd=REPO).returncode == 0  # noqa: E501
