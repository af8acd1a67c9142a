"""``nn-parity check --module``: a user's own layers, found by registration or by subclassing
a built-in, checked like the built-ins; every mistake the user can make is exit code 2 with a
message that says what to fix."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import scratch
from harness.check import CheckError
from harness.cli import main
from harness.compare import ERROR, PASS
from harness.user_modules import (
    construct_like,
    discover,
    forget_user_modules,
    import_user_module,
    load_user_modules,
    spec_for_class,
    user_cases,
)
from reference.registry import registered

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
FAST = ["--seeds", "1", "--batches", "3"]


@pytest.fixture(autouse=True)
def _forget():
    yield
    forget_user_modules()


def write(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


# ---------------------------------------------------------------------------------------
# Discovery and construction


def test_subclasses_of_builtins_need_no_registration() -> None:
    module = import_user_module(str(EXAMPLES / "user_layers.py"))
    specs = discover(module)
    assert [s.name for s in specs] == ["user_layers.Relu", "user_layers.Affine",
                                       "user_layers.SoftmaxWithLoss"]
    assert [s.how for s in specs] == ["subclass of Relu", "subclass of Affine",
                                      "subclass of SoftmaxWithLoss"]
    affine = specs[1].build("float32", seed=0)
    assert type(affine) is module.Affine and affine.params["W"].dtype == np.float32
    assert specs[1].notes == []  # built by calling Affine(W, b), not re-classed
    for spec in specs:
        report = spec.check("float64", seed=0, batch=3)
        assert report.ok, str(report)
        assert report.layer == spec.name


def test_constructor_that_cannot_be_matched_gets_a_reclassed_example() -> None:
    class RandomAffine(scratch.Affine):
        def __init__(self, n_in: int, n_out: int) -> None:
            rng = np.random.default_rng(0)
            super().__init__(rng.standard_normal((n_in, n_out)), np.zeros(n_out))

    template = scratch.Affine(np.ones((3, 2)), np.zeros(2))
    notes: list[str] = []
    layer = construct_like(RandomAffine, template, notes)
    assert type(layer) is RandomAffine and np.array_equal(layer.params["W"], np.ones((3, 2)))
    assert layer.params["W"] is not template.params["W"]
    assert "re-classed" in notes[0] and "n_in" in notes[0]
    spec = spec_for_class(RandomAffine)
    assert spec is not None and spec.how == "subclass of Affine"
    assert spec.check("float64", seed=1, batch=2).ok


def test_registered_user_layers() -> None:
    module = import_user_module(str(EXAMPLES / "user_registered.py"))
    specs = discover(module)
    assert [(s.name, s.how) for s in specs] == [("user_registered.LeakyRelu", "registered"),
                                                ("user_registered.Dense", "registered")]
    leaky = specs[0].build("float64", 0)  # no example: the zero-argument constructor
    assert type(leaky) is module.LeakyRelu and leaky.alpha == 0.01
    for spec in specs:
        for dtype in ("float32", "float64"):
            assert spec.check(dtype, seed=2, batch=5).ok


def test_load_adds_user_cases_and_forget_removes_them() -> None:
    load_user_modules([str(EXAMPLES / "user_registered.py")])
    names = [c.name for c in user_cases()]
    assert names == ["user_registered.LeakyRelu", "user_registered.LeakyRelu (large inputs)",
                     "user_registered.Dense", "user_registered.Dense (large inputs)"]
    assert any(cls.__name__ == "Dense" for cls in registered())
    report = user_cases()[2].run(np.dtype("float32"), 0, 3)
    assert report.ok and report.input_shape == (3, 6)
    forget_user_modules()
    assert user_cases() == []
    assert not any(cls.__name__ in ("Dense", "LeakyRelu") for cls in registered())
    assert "user_registered" not in sys.modules


def test_input_shape_from_the_option(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, "shapeless.py", """
        import numpy as np
        from torch import nn
        from reference import register

        class Square:
            def forward(self, x):
                self.x = x
                return x * x
            def backward(self, dout):
                return 2 * self.x * dout

        class Sq(nn.Module):
            def forward(self, x):
                return x * x

        register(Square, lambda layer: Sq())
        """)
    assert main(["check", "--module", str(path), *FAST]) == 2
    assert "no input shape" in capsys.readouterr().err
    forget_user_modules()
    assert main(["check", "--module", str(path), *FAST, "--input-shape", "2,3", "-q"]) == 0
    assert capsys.readouterr().out.startswith("PASS: 4 checks")  # and on large inputs
    with pytest.raises(SystemExit) as exc:
        main(["check", "--module", str(path), "--input-shape", "2,-3"])
    assert exc.value.code == 2


def test_registration_without_example_and_with_constructor_args(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, "needs_args.py", """
        from torch import nn
        from reference import register

        class Scale:
            def __init__(self, k):
                self.k = k
            def forward(self, x):
                return self.k * x
            def backward(self, dout):
                return self.k * dout

        register(Scale, lambda layer: nn.Identity(), input_shape=lambda layer, n: (n, 3))
        """)
    assert main(["check", "--module", str(path), *FAST]) == 2
    err = capsys.readouterr().err
    assert "Scale: cannot build it: its constructor needs ['k']" in err and "example=" in err


def test_an_example_that_raises_is_an_error_result(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, "bad_example.py", """
        from torch import nn
        from reference import register

        class Ident:
            def forward(self, x):
                return x
            def backward(self, dout):
                return dout

        def example(rng, dtype):
            raise RuntimeError("my example is broken")

        register(Ident, lambda layer: nn.Identity(), input_shape=lambda l, n: (n, 3), example=example)
        """)
    assert main(["check", "--module", str(path), *FAST, "--dtype", "float64"]) == 1
    out = capsys.readouterr().out
    assert "bad_example.Ident.construct" in out and "my example is broken" in out
    load_user_modules([str(path)])
    report = user_cases()[0].run(np.dtype("float64"), 0, 2)
    assert report.status == ERROR


# ---------------------------------------------------------------------------------------
# Mistakes: exit code 2, a message that names the problem


def test_missing_file(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nope" / "layers.py"
    assert main(["check", "--module", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "file not found" in err and str(missing) in err


def test_import_error_is_summarised(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, "crashes.py", """
        import numpy as np


        def helper():
            return 1 / 0


        VALUE = helper()
        """)
    assert main(["check", "--module", str(path)]) == 2
    err = capsys.readouterr().err
    assert "importing it raised ZeroDivisionError" in err
    assert f'File "{path}", line 9, in <module>' in err and "line 6, in helper" in err
    assert "ZeroDivisionError: division by zero" in err
    assert "importlib" not in err and "<frozen" not in err and "harness/" not in err
    assert "crashes" not in sys.modules


def test_syntax_error_and_missing_dependency(tmp_path: Path, capsys) -> None:
    bad = write(tmp_path, "broken.py", "def f(:\n    pass\n")
    assert main(["check", "--module", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "SyntaxError" in err and "broken.py" in err and "line 1" in err
    dep = write(tmp_path, "needs_dep.py", "import no_such_package_xyz\n")
    assert main(["check", "--module", str(dep)]) == 2
    assert "ModuleNotFoundError: No module named 'no_such_package_xyz'" in capsys.readouterr().err


def test_dotted_names_and_other_wrong_targets(tmp_path: Path, capsys) -> None:
    assert main(["check", "--module", "no_such_module_xyz.layers"]) == 2
    assert "no module named 'no_such_module_xyz'" in capsys.readouterr().err
    empty = write(tmp_path, "nothing_here.py", "class Helper:\n    pass\n")
    assert main(["check", "--module", str(empty)]) == 2
    assert "no layers found in nothing_here" in capsys.readouterr().err
    text = write(tmp_path, "layers.txt", "")
    assert main(["check", "--module", str(text)]) == 2
    assert "not a Python file" in capsys.readouterr().err
    assert main(["check", "--module", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    with pytest.raises(CheckError, match="file not found"):
        load_user_modules([str(tmp_path / "x.py")])


def test_dotted_module_name(tmp_path: Path, monkeypatch, capsys) -> None:
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    shutil.copy(EXAMPLES / "user_layers.py", pkg / "layers.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["check", "--module", "mypkg.layers", *FAST, "--dtype", "float32", "-q"]) == 0
    assert capsys.readouterr().out.startswith("PASS: 6 checks")
    sys.modules.pop("mypkg.layers", None)
    sys.modules.pop("mypkg", None)


# ---------------------------------------------------------------------------------------
# The acceptance test: a user's file outside the repository, one deliberate bug


def test_user_files_outside_the_repo(tmp_path: Path, monkeypatch, capsys) -> None:
    for name in ("user_layers.py", "user_layers_buggy.py"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    assert main(["check", "--module", "user_layers.py"]) == 0
    assert "PASS: 72 checks, 336 tensors passed" in capsys.readouterr().out

    # the real command line, from outside the repository, output piped
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run([sys.executable, "-m", "harness", "check", "--module", "user_layers_buggy.py",
                           "--json", "out/report.json"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout
    assert "\x1b[" not in out
    for layer in ("Relu", "Affine"):  # the correct layers pass
        rows = [line for line in out.splitlines() if f"user_layers_buggy.{layer} " in line]
        assert rows and all("PASS" in r for r in rows), rows
    loss_rows = [line for line in out.splitlines() if "SoftmaxWithLoss" in line and "│ loss" in line]
    assert loss_rows and all("PASS" in r for r in loss_rows)
    # the buggy one fails, with the precise report
    assert "user_layers_buggy.SoftmaxWithLoss.dx [float32, shape (3, 10)]: FAIL" in out
    assert "Mismatched elements: 30 / 30 (100.0%)" in out
    assert "Worst element vs tolerance: index" in out and "expected (torch)" in out
    assert out.rstrip().endswith("FAIL: 72 checks, 320 tensors passed, 16 failed, 0 vacuous, 0 errors")
    doc = json.loads((tmp_path / "out" / "report.json").read_text())
    bad = {(lr["info"]["component"], lr["dtype"], lr["info"]["batch"]) for lr in doc["layers"]
           if lr["status"] != PASS}
    assert bad == {(f"user_layers_buggy.SoftmaxWithLoss{v}", d, b) for d in ("float32", "float64")
                   for b in (3, 8) for v in ("", " (logits in the hundreds)")}
    # batch 1 is right: the bug is a missing / batch_size


# ---------------------------------------------------------------------------------------
# Subclasses of built-ins: their own constructor defaults, and the built-in's other settings

def failing(tmp_path: Path, body: str, *extra: str) -> set[str]:
    """Components that do not pass, from the JSON report of ``check --module``."""
    rc = main(["check", "-q", "--module", str(write(tmp_path, "convs.py", body)), *FAST,
               "--json", str(tmp_path / "r.json"), *extra])
    doc = json.loads((tmp_path / "r.json").read_text())
    bad = {lr["info"]["component"] for lr in doc["layers"] if lr["status"] != PASS}
    assert rc == (1 if bad else 0)
    return bad


def test_a_subclass_is_checked_with_its_own_constructor_defaults(tmp_path: Path,
                                                                  conv_pad_bug) -> None:
    init = "def __init__(self, W, b, stride=2, pad=1): super().__init__(W, b, stride, pad)"
    bad = failing(tmp_path, conv_pad_bug("MyConv", init))
    assert "convs.MyConv" in bad  # its defaults pad=1 (the template's pad=0 hid the bug)


def test_a_subclass_is_also_checked_in_the_builtin_strided_and_padded_settings(
        tmp_path: Path, conv_pad_bug) -> None:
    bad = failing(tmp_path, conv_pad_bug("PlainConv"))
    assert bad == {"convs.PlainConv (stride 2, pad 1)", "convs.PlainConv (2x3 kernel, stride 2, pad 2)"}


def test_correct_subclasses_of_conv_pool_batchnorm_dropout_pass_in_every_setting(
        tmp_path: Path, capsys) -> None:
    body = """
        from scratch.convolution import Convolution, Pooling
        from scratch.normalization import BatchNormalization, Dropout
        class MyConv(Convolution):
            def __init__(self, W, b, stride=2, pad=1): super().__init__(W, b, stride, pad)
        class MyBN(BatchNormalization): pass
        class MyDrop(Dropout): pass
        class FixedPool(Pooling):
            def __init__(self): super().__init__(2, 2, stride=2)
    """
    assert failing(tmp_path, body) == set()
    out = capsys.readouterr().out
    doc = json.loads((tmp_path / "r.json").read_text())
    components = {lr["info"]["component"] for lr in doc["layers"]}
    assert {"convs.MyBN", "convs.MyBN (eval)", "convs.MyBN (4-D, per channel)",
            "convs.MyDrop (eval)", "convs.MyConv (stride 2, pad 1)",
            "convs.FixedPool (2x2/2 on 7x7)"} <= components
    assert "convs.FixedPool (3x3, stride 2, pad 1)" not in components
    notes = doc["summary"]["notes"]["convs.FixedPool"]
    assert any("Pooling (3x3, stride 2, pad 1)" in n and "pool_h=2" in n for n in notes), notes
    assert "note:" not in out  # -q: the notes are in the JSON, not on the terminal


def test_a_subclass_that_builds_its_own_weights_skips_settings_it_cannot_take(
        tmp_path: Path, capsys) -> None:
    body = """
        import numpy as np
        from scratch.convolution import Convolution
        class ShapeConv(Convolution):  # weights from shape arguments, not given
            def __init__(self, in_ch=3, out_ch=4, k=3, stride=1, pad=0):
                rng = np.random.default_rng(0)
                super().__init__(rng.standard_normal((out_ch, in_ch, k, k)) * 0.1,
                                 np.zeros(out_ch), stride, pad)
    """
    assert failing(tmp_path, body) == set()
    notes = json.loads((tmp_path / "r.json").read_text())["summary"]["notes"]["convs.ShapeConv"]
    assert any("builds W (4, 3, 3, 3)" in n and "needs W (5, 2, 3, 3)" in n for n in notes)


def test_settings_a_variant_does_not_change_are_the_subclass_own(tmp_path: Path) -> None:
    body = """
        from scratch.layers import SoftmaxWithLoss
        from scratch.normalization import Dropout
        class MyDropout(Dropout):  # its own ratio: the eval setting is about the mode
            def __init__(self, ratio=0.3):
                super().__init__(ratio)
        class ExactCE(SoftmaxWithLoss):  # eps 0: the logits setting is about the inputs
            def __init__(self):
                super().__init__(eps=0.0)
    """
    assert failing(tmp_path, body) == set()
    components = {lr["info"]["component"]
                  for lr in json.loads((tmp_path / "r.json").read_text())["layers"]}
    assert {"convs.MyDropout (eval)", "convs.ExactCE (logits in the hundreds)"} <= components


# ---------------------------------------------------------------------------------------
# A registration to fix does not stop the others; registrations kept in their own file

DENSE = """
    import numpy as np
    from torch import nn
    from reference import register, WeightSpec, transpose

    class Dense:
        def __init__(self, W, b):
            self.params = {"W": W, "b": b}
            self.grads = {}
        def forward(self, x):
            self.x = x
            return x @ self.params["W"] + self.params["b"]
        def backward(self, dout):
            self.grads = {"W": self.x.T @ dout, "b": dout.sum(axis=0)}
            return dout @ self.params["W"].T

    class DenseNoBiasGrad(Dense):
        def backward(self, dout):
            dx = super().backward(dout)
            self.grads["b"] = dout[0]
            return dx

    def make(cls):
        return lambda rng, dtype: Dense(rng.standard_normal((6, 4)).astype(dtype), np.zeros(4, dtype))

    for cls in (Dense, DenseNoBiasGrad):   # the same example copied for both: a Dense each time
        register(cls, lambda layer: nn.Linear(6, 4),
                 {"W": WeightSpec("weight", transpose, transpose), "b": "bias"},
                 input_shape=lambda layer, n: (n, 6), example=make(cls))
"""


def test_an_example_of_another_class_is_an_error_and_the_others_still_run(tmp_path, capsys):
    path = write(tmp_path, "copied.py", DENSE)
    out = tmp_path / "r.json"
    assert main(["check", "--module", str(path), *FAST, "--json", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert "copied.DenseNoBiasGrad: the registration's example(rng, dtype) built a Dense" in err
    js = json.loads(out.read_text())
    assert set(js["summary"]["setup_errors"]) == {"copied.DenseNoBiasGrad",
                                                  "copied.DenseNoBiasGrad (large inputs)"}
    assert {r["component"]: r["status"] for r in js["summary"]["rows"]}["copied.Dense"] == "PASS"


def test_layers_registered_in_a_file_of_their_own(tmp_path, capsys):
    (tmp_path / "pure.py").write_text(textwrap.dedent("""
        import numpy as np
        class Swish:
            def forward(self, x):
                self.x, self.s = x, 1 / (1 + np.exp(-x))
                return x * self.s
            def backward(self, dout):
                return dout * self.s * (1 + self.x * (1 - self.s))
    """))
    twins = write(tmp_path, "twins.py", """
        from torch import nn
        from reference import register
        from pure import Swish
        import scratch   # a built-in it imports is not checked as its own
        from scratch import Affine
        register(Swish, lambda layer: nn.SiLU(), input_shape=lambda layer, n: (n, 7))
    """)
    assert main(["check", "--module", str(twins), *FAST, "-q"]) == 0
    assert capsys.readouterr().out.startswith("PASS: 4 checks")  # and on large inputs
    assert main(["check", "--module", str(twins), "--module", str(tmp_path / "pure.py"),
                 "--list"]) == 0
    assert capsys.readouterr().out.splitlines() == ["user       twins.Swish",  # once, not twice
                                                    "user       twins.Swish (large inputs)"]


def test_no_layers_found_names_what_the_module_has(tmp_path, capsys):
    path = write(tmp_path, "nothing.py", """
        class Swish:
            def forward(self, x): return x
            def backward(self, dout): return dout
        class Net:
            def predict(self, x): ...
            def gradient(self, x, t): ...
    """)
    assert main(["check", "--module", str(path), *FAST]) == 2
    err = capsys.readouterr().err
    assert "Swish has forward/backward but no PyTorch twin" in err
    assert "Net is a net: check a net from Python with harness.check_net(net)" in err


def test_an_unregistered_layer_beside_checked_ones_is_a_note(tmp_path):
    path = write(tmp_path, "mixed.py", """
        import scratch
        class Relu(scratch.Relu): pass
        class Swish:
            def forward(self, x): return x
            def backward(self, dout): return dout
    """)
    out = tmp_path / "r.json"
    assert main(["check", "--module", str(path), *FAST, "-q", "--json", str(out)]) == 0
    notes = json.loads(out.read_text())["summary"]["notes"]
    assert "no PyTorch twin, so it was not checked" in notes["mixed.Swish"][0]


SOFTPLUS = """
    import numpy as np
    from torch import nn
    from reference import register

    class Softplus:
        def forward(self, x):
            self.x = x
            return {forward}
        def backward(self, dout):
            return dout / (1 + np.exp(-self.x))

    register(Softplus, lambda layer: nn.Softplus(), input_shape=lambda layer, n: (n, 7){extra})
"""


def test_registered_layers_also_get_large_inputs(tmp_path, capsys):
    naive = write(tmp_path, "naive.py", SOFTPLUS.format(forward="np.log(1 + np.exp(x))", extra=""))
    out = tmp_path / "r.json"
    assert main(["check", "--module", str(naive), *FAST, "-q", "--json", str(out)]) == 1
    status = {(r["component"], r["dtype"]): r["status"]
              for r in json.loads(out.read_text())["summary"]["rows"] if r["tensor"] == "out"}
    assert status == {("naive.Softplus", "float32"): "PASS", ("naive.Softplus", "float64"): "PASS",
                      ("naive.Softplus (large inputs)", "float32"): "FAIL",  # exp(320) = inf
                      ("naive.Softplus (large inputs)", "float64"): "PASS"}
    forget_user_modules()
    stable = write(tmp_path, "stable.py", SOFTPLUS.format(
        forward="np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))", extra=""))
    assert main(["check", "--module", str(stable), *FAST, "-q"]) == 0
    forget_user_modules()
    capsys.readouterr()
    chosen = write(tmp_path, "chosen.py", SOFTPLUS.format(
        forward="np.log(1 + np.exp(x))",
        extra=", make_input=lambda layer, shape, dtype, rng: rng.standard_normal(shape).astype(dtype)"))
    assert main(["check", "--module", str(chosen), "--list"]) == 0
    assert capsys.readouterr().out.splitlines() == ["user       chosen.Softplus"]  # no large case
