"""The pytest plugin, run the way a user runs it: test files in a fresh directory outside the
repository (pytester), the plugin loaded by its entry point when the package is installed or
with ``-p harness.pytest_plugin`` when it is not."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import scratch
from harness.compare import FAIL
from harness.pytest_plugin import ParityError, assert_parity, id_word, is_autoloaded, parity_cases
from harness.suite import variants_for

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
PLUGIN = [] if is_autoloaded() else ["-p", "harness.pytest_plugin"]
ARGS = [*PLUGIN, "-p", "no:cacheprovider", "-W", "ignore::pytest.PytestAssertRewriteWarning"]


class SoftmaxNoMean(scratch.SoftmaxWithLoss):
    def backward(self, dout=1.0):
        return super().backward(dout) * self.y.shape[0]


def test_three_line_file_checks_a_users_layers(pytester: pytest.Pytester) -> None:
    shutil.copy(EXAMPLES / "user_layers_buggy.py", pytester.path)
    shutil.copy(EXAMPLES / "user_layers.py", pytester.path)
    pytester.makepyfile(
        test_buggy="import user_layers_buggy\n"
                   "from harness.pytest_plugin import parity_test\n"
                   "test_my_layers = parity_test(user_layers_buggy)\n",
        test_good="import user_layers\n"
                  "from harness.pytest_plugin import parity_test\n"
                  "test_my_layers = parity_test(user_layers)\n",
    )
    result = pytester.runpytest(*ARGS, "-rf")
    # 3 layers, each also in the built-in's other settings (as check --module), x 2 dtypes x 3
    # seeds per file; only the buggy SoftmaxWithLoss fails (in each of its settings)
    n = {c: 1 + sum(1 for v in variants_for(c) if v.label)
         for c in (scratch.Relu, scratch.Affine, scratch.SoftmaxWithLoss)}
    soft = n[scratch.SoftmaxWithLoss]
    result.assert_outcomes(passed=(2 * sum(n.values()) - soft) * 6, failed=soft * 6)
    result.stdout.fnmatch_lines([
        "FAILED test_buggy.py::test_my_layers[[]SoftmaxWithLoss-float32-seed0[]]*",
        "FAILED test_buggy.py::test_my_layers[[]SoftmaxWithLoss-float64-seed2[]]*",
    ])
    out = result.stdout.str()
    assert "test_good.py" not in out.split("short test summary")[1]
    # the assertion message is the harness's precise report of the failing tensor only, at
    # the first batch size that fails (1, 3, 8 as nn-parity check: batch 1 passes this bug)
    result.stdout.fnmatch_lines([
        ">*parity_case.check()",
        "E*harness.pytest_plugin.ParityError: SoftmaxWithLoss [[]float32, input (3, 10), seed 0[]]: "
        "FAIL: scratch differs from PyTorch",
        "E*first divergence: SoftmaxWithLoss.dx",
        "E*SoftmaxWithLoss.dx [[]float32, shape (3, 10)[]]: FAIL",
        "E*  Mismatched elements: 30 / 30 (100.0%)",
        "E*  Greatest absolute difference: * at index *",
        "E*  Worst element vs tolerance: index *: actual (scratch) *, expected (torch) *",
        "E*  Tolerance: rtol=1.0e-04, atol=1.0e-05 x max|expected|*",
        "E*verdict: 1 of 4 tensors not passing (dx); passed: loss, input x unchanged, targets t unchanged",
    ])
    assert "SoftmaxWithLoss.loss [float32" not in out  # passing tensors are only named
    # a clean traceback: none of the harness's internals
    for internal in ("harness/check.py", "run_pair", "def assert_parity", "def check_any"):
        assert internal not in out, internal


def test_fixture_marker_and_one_liners(pytester: pytest.Pytester) -> None:
    shutil.copy(EXAMPLES / "user_layers_buggy.py", pytester.path)
    pytester.makepyfile(test_one_liners="""
        import numpy as np
        import pytest
        import torch

        import scratch
        from user_layers_buggy import Affine, SoftmaxWithLoss

        def test_affine(parity): parity(Affine(np.ones((3, 2)), np.zeros(2)), input_shape=(4, 3))
        def test_builtin_class(parity): parity(scratch.Tanh)
        def test_softmax_one_sample(parity): parity(SoftmaxWithLoss, batch=1)
        def test_softmax(parity): parity(SoftmaxWithLoss)
        def test_explicit_twin(parity): parity(scratch.Relu(), torch.nn.ReLU(), input_shape=(2, 5))
        def test_net(parity): parity(scratch.TwoLayerNet(6, 5, 3, weight_init_std=0.5), input_shape=(4, 6))

        @pytest.mark.parity(dtype="float32", batch=1)
        def test_marker_defaults(parity):
            report = parity(SoftmaxWithLoss)
            assert report.dtype == "float32" and report.input_shape == (1, 10)

        @pytest.mark.parity(dtypes=["float32", "float64"], seeds=[0, 1])
        def test_marker_parametrises(parity): parity(scratch.Relu)

        def test_is_an_assertion_error(parity):
            with pytest.raises(AssertionError, match="first divergence: SoftmaxWithLoss.dx"):
                parity(SoftmaxWithLoss)
        """)
    result = pytester.runpytest(*ARGS, "-v", "--strict-markers")
    result.assert_outcomes(passed=11, failed=1)
    result.stdout.fnmatch_lines([
        "*::test_softmax_one_sample PASSED*",
        "*::test_softmax FAILED*",
        "*::test_marker_parametrises[[]float32-seed0[]] PASSED*",
        "*::test_marker_parametrises[[]float64-seed1[]] PASSED*",
    ])
    # the failing one-liner shows its own line and the report, nothing else
    result.stdout.fnmatch_lines([
        ">   def test_softmax(parity): parity(SoftmaxWithLoss)",
        "E   harness.pytest_plugin.ParityError: SoftmaxWithLoss [[]float64, input (3, 10), seed 0[]]: "
        "FAIL: scratch differs from PyTorch",
        "E   first divergence: SoftmaxWithLoss.dx",
    ])
    assert "harness/check.py" not in result.stdout.str()


def test_parity_cases_ids() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("user_layers_for_ids", EXAMPLES / "user_layers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    params = parity_cases(scratch.Affine, scratch.Relu(), scratch.Relu(), dtypes=("float32",),
                          seeds=range(2))
    assert [p.id for p in params] == ["Affine-float32-seed0", "Affine-float32-seed1",
                                      "Relu-float32-seed0", "Relu-float32-seed1",
                                      "Relu2-float32-seed0", "Relu2-float32-seed1"]
    ids = [p.id for p in parity_cases(module, seeds=[0])]
    # each subclass also in the built-in's other settings (as check --module), named after them
    names = [n for c in (scratch.Relu, scratch.Affine, scratch.SoftmaxWithLoss)
             for n in (c.__name__, *(f"{c.__name__} ({v.label})" for v in variants_for(c) if v.label))]
    assert ids == [f"{id_word(n)}-{d}-seed0" for n in names for d in ("float32", "float64")]
    assert "Affine_4-D_input-float64-seed0" in ids  # one word: pytest -k can select it
    assert not any(c in i for i in ids for c in " (),")
    cases = [p.values[0] for p in parity_cases(module, seeds=[0])]
    assert "Affine (4-D input)" in {c.name for c in cases}  # the display name is kept
    for p in params:
        p.values[0].check()


def test_assert_parity_message_and_return_value() -> None:
    report = assert_parity(scratch.Relu(), input_shape=(2, 4), dtype=np.float32)
    assert report.ok and report.dtype == "float32"
    with pytest.raises(ParityError) as exc:
        assert_parity(SoftmaxNoMean(), input_shape=(4, 10), seed=3)
    assert isinstance(exc.value, AssertionError) and exc.value.report.status == FAIL
    lines = str(exc.value).splitlines()
    assert lines[0] == ("SoftmaxNoMean [float64, input (4, 10), seed 3]: FAIL: scratch differs "
                        "from PyTorch")
    assert lines[1] == "first divergence: SoftmaxNoMean.dx"
    assert lines[2] == "SoftmaxNoMean.dx [float64, shape (4, 10)]: FAIL"
    assert lines[-1] == ("verdict: 1 of 4 tensors not passing (dx); passed: loss, input x unchanged, "
                         "targets t unchanged")
    assert not any(": PASS" in line for line in lines)


def test_a_given_dout_or_t_fixes_the_batch_size() -> None:
    W, b = np.random.default_rng(0).normal(size=(6, 3)), np.zeros(3)
    dout = np.random.default_rng(1).normal(size=(4, 3))
    assert assert_parity(scratch.Affine(W, b), dout=dout).input_shape[0] == 4
    labels = np.array([0, 1, 2, 3])
    assert assert_parity(scratch.SoftmaxWithLoss(), t=labels).input_shape[0] == 4
    assert assert_parity(scratch.SoftmaxWithLoss(), t=np.eye(10)[labels]).input_shape[0] == 4


def test_a_failure_at_a_default_batch_size_says_where_the_size_came_from() -> None:
    with pytest.raises(ParityError) as exc:
        assert_parity(SoftmaxNoMean(), seed=3)
    assert "parity runs batch sizes [1, 3, 8] by default" in str(exc.value)
    with pytest.raises(ParityError) as exc:
        assert_parity(SoftmaxNoMean(), input_shape=(4, 10), seed=3)
    assert "by default" not in str(exc.value), "a fixed input needs no such note"


def test_a_mistake_in_the_call_shows_no_harness_frames(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_misuse="""
        import numpy as np
        class Plain:                       # no twin registered, none given
            def forward(self, x): return x
            def backward(self, dout): return dout
        def test_no_twin(parity): parity(Plain())
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "CheckError: no PyTorch twin registered for Plain" in out
    for internal in ("harness/check.py", "def check_any", "def resolve_twin", "parity runs batch sizes"):
        assert internal not in out, internal


class Float16OnTheFloat32Path(scratch.Affine):  # right in float64, rounds to float16 in float32
    def forward(self, x):
        if x.dtype == np.float32:
            self.original_x_shape, self.x = x.shape, x
            return (x.astype(np.float16) @ self.W.astype(np.float16)).astype(np.float32) + self.b
        return super().forward(x)


def test_parity_runs_both_dtypes_unless_told() -> None:
    layer = Float16OnTheFloat32Path(np.random.default_rng(0).standard_normal((12, 7)), np.zeros(7))
    with pytest.raises(ParityError, match=r"\[float32, input"):
        assert_parity(layer)
    assert assert_parity(layer, dtype="float64").ok


def test_parity_test_skips_a_class_without_a_twin_visibly(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(mixed="""
        import scratch
        class Relu(scratch.Relu): pass
        class Swish:
            def forward(self, x): return x
            def backward(self, dout): return dout
    """, test_mixed="""
        import mixed
        from harness.pytest_plugin import parity_test
        test_it = parity_test(mixed, seeds=[0])
    """)
    result = pytester.runpytest("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(passed=4, skipped=1)  # Relu and Relu (exact zeros) x 2 dtypes
    result.stdout.fnmatch_lines(["*Swish has forward/backward but no PyTorch twin*"])


def test_ids_are_one_word_each_so_plain_k_selects_a_setting(pytester: pytest.Pytester) -> None:
    """``pytest -k`` cannot name spaces or parentheses: a layer's setting is part of its id as
    one word, and the failure message keeps the display name."""
    assert id_word("MyConv (stride 2, pad 1)") == "MyConv_stride_2_pad_1"
    assert id_word("BatchNormalization (4-D, per channel)") == "BatchNormalization_4-D_per_channel"
    assert id_word("mod.Dense (large inputs)") == "mod.Dense_large_inputs"
    pytester.makepyfile(
        convs="import numpy as np\n"
              "import scratch\n"
              "class MyConv(scratch.Convolution):\n"
              "    def backward(self, dout):\n"
              "        return np.roll(super().backward(dout), 1, axis=-1) if self.pad else "
              "super().backward(dout)\n",
        test_convs="import convs\n"
                   "from harness.pytest_plugin import parity_test\n"
                   "test_convs = parity_test(convs, dtypes=['float64'], seeds=[0])\n",
    )
    others = sum(1 for v in variants_for(scratch.Convolution) if v.label)
    result = pytester.runpytest(*ARGS, "-k", "stride_2_pad_1", "-rf")
    result.assert_outcomes(failed=1, deselected=others)
    result.stdout.fnmatch_lines([
        "E*ParityError: MyConv (stride 2, pad 1) [[]float64, *",
        "FAILED test_convs.py::test_convs[[]MyConv_stride_2_pad_1-float64-seed0[]]*",
    ])
    result = pytester.runpytest(*ARGS, "-k", "MyConv and not stride and not kernel and not filters")
    result.assert_outcomes(passed=1, deselected=others)


class PadOnlyBug(scratch.Convolution):
    """Right at pad 0, wrong (dx shifted) at any padding: the suite's stride 2, pad 1 setting."""

    def backward(self, dout):
        dx = super().backward(dout)
        return np.roll(dx, 1, axis=-1) if self.pad else dx


def test_parity_of_a_class_checks_it_in_every_setting_check_module_does() -> None:
    with pytest.raises(ParityError, match=r"^PadOnlyBug \(stride 2, pad 1\) \[float64"):
        assert_parity(PadOnlyBug, seed=0, batches=[2])

    class Fine(scratch.Convolution):
        pass

    assert assert_parity(Fine, seed=0, batches=[2]).ok
    # a given input fits the class's own configuration only: that one is checked
    assert assert_parity(PadOnlyBug, seed=0, input_shape=(2, 3, 7, 7)).ok


def test_ids_keep_letters_of_any_script() -> None:
    assert id_word("Réseau (pad 1)") == "Réseau_pad_1"
    assert id_word("()") == "layer"


def test_a_keyword_parity_does_not_take_is_named_with_the_fix() -> None:
    from harness.check import CheckError

    with pytest.raises(CheckError, match=r"unknown keyword input_shap= \(did you mean input_shape=\?\)"):
        assert_parity(scratch.Relu(), input_shap=(3, 4))
    with pytest.raises(CheckError, match=r"parity\(\) got dtypes=: it checks one dtype and seed "
                                         r"per call .* @pytest.mark.parity\(dtypes=\[...\]\)"):
        assert_parity(scratch.Relu(), dtypes=["float32"])
    with pytest.raises(CheckError, match=r"batches must be positive integers, got \[0\]"):
        assert_parity(scratch.Relu(), batches=[0])


def test_a_failure_message_carries_the_reports_notes() -> None:
    class BookAffine:  # the book's layout, named like the built-in: read through a note
        def __init__(self, W, b):
            self.W, self.b, self.dW, self.db = W, b, None, None

        def forward(self, x):
            self.x = x
            return x @ self.W + self.b

        def backward(self, dout):
            self.dW, self.db = self.x.T @ dout, dout.sum(axis=0)
            return dout @ self.W  # transpose forgotten: W is square

    BookAffine.__name__ = BookAffine.__qualname__ = "Affine"
    rng = np.random.default_rng(0)
    with pytest.raises(ParityError) as exc:
        assert_parity(BookAffine(rng.standard_normal((4, 4)), np.zeros(4)), dtype="float64",
                      batch=3)
    assert "note: parameters read from the attributes W, b" in str(exc.value)


class NoMaxShiftSoftmax:
    """Softmax without the max shift: right for ordinary inputs, inf/NaN for logits > 88."""

    def forward(self, x):
        e = np.exp(x)
        self.y = e / e.sum(axis=1, keepdims=True)
        return self.y

    def backward(self, dout):
        return self.y * (dout - (dout * self.y).sum(axis=1, keepdims=True))


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning")
def test_parity_of_a_registered_instance_runs_the_large_input_setting_too() -> None:
    from torch import nn

    from reference.registry import register, unregister

    register(NoMaxShiftSoftmax, lambda layer: nn.Softmax(dim=1),
             input_shape=lambda layer, n: (n, 7))
    try:
        with pytest.raises(ParityError, match=r"^NoMaxShiftSoftmax \(large inputs\) \[float32"):
            assert_parity(NoMaxShiftSoftmax(), batches=[3])
        # a given input is the layer's own configuration: checked as given
        assert assert_parity(NoMaxShiftSoftmax(), input_shape=(3, 7)).ok
    finally:
        unregister(NoMaxShiftSoftmax)


class Doubles:
    """2 x, with a train_flg it ignores: registered, so parity() also runs it at test time."""

    def forward(self, x, train_flg=True):
        return 2 * x

    def backward(self, dout):
        return 2 * dout


def test_parity_of_a_registered_instance_with_train_flg_takes_name_and_train() -> None:
    from torch import nn

    from reference.registry import register, unregister

    class Twice(nn.Module):
        def forward(self, x):
            return 2 * x

    register(Doubles, lambda layer: Twice(), input_shape=lambda layer, n: (n, 5))
    try:
        report = assert_parity(Doubles(), name="mine", train=True, batches=[3])
        assert report.ok and report.layer == "mine (eval)"  # the last setting's report
    finally:
        unregister(Doubles)


def test_parity_of_a_class_takes_a_name_for_each_setting() -> None:
    class MyConv(scratch.Convolution):
        pass

    report = assert_parity(MyConv, name="mine", batches=[2], dtype="float64")
    last = sum(1 for v in variants_for(scratch.Convolution) if v.label)
    assert report.ok and report.layer.startswith("mine (") and last
