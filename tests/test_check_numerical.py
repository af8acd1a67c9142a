"""``nn-parity check --numerical``: every layer's backprop and its twin's autograd are also
checked against central differences, which tells a forward that differs from PyTorch (backward
consistent with it) apart from a wrong backward."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from harness.cli import main
from harness.user_modules import forget_user_modules

ONE = ["--dtype", "float64", "--seeds", "1", "--batches", "3"]


@pytest.fixture(autouse=True)
def _forget():
    yield
    forget_user_modules()


def rows(path: Path) -> dict[str, str]:
    """tensor -> result of the JSON report's table rows."""
    return {r["tensor"]: r["status"] for r in json.loads(path.read_text())["summary"]["rows"]}


def check(tmp_path: Path, *argv: str, body: str | None = None) -> tuple[int, dict[str, str]]:
    args = ["check", "-q", "--numerical", *ONE, "--json", str(tmp_path / "r.json"), *argv]
    if body is not None:
        mod = tmp_path / "my_sigmoid.py"
        mod.write_text(textwrap.dedent(body))
        args += ["--module", str(mod)]
    rc = main(args)
    return rc, (rows(tmp_path / "r.json") if (tmp_path / "r.json").exists() else {})


STEEP = """
    import numpy as np
    from scratch import Sigmoid

    class SteepSigmoid(Sigmoid):  # forward 1/(1+exp(-2x)), backward consistent with it
        def forward(self, x):
            self.out = 1 / (1 + np.exp(-2 * x))
            return self.out
        def backward(self, dout):
            return dout * 2 * self.out * (1 - self.out)
"""

NO_FACTOR = """
    from scratch import Sigmoid

    class Sigmoid1(Sigmoid):  # the classic precedence bug: dout * (1 - out) only
        def backward(self, dout):
            return dout * (1 - self.out)
"""


def test_a_built_in_layer_gets_both_numerical_rows(tmp_path: Path) -> None:
    rc, r = check(tmp_path, "--only", "Sigmoid")
    assert rc == 0
    assert r["dx backprop vs numerical"] == r["dx torch vs numerical"] == r["dx"] == "PASS"
    summary = json.loads((tmp_path / "r.json").read_text())["summary"]
    assert summary["numerical"] == ["Sigmoid"]


def test_without_the_option_there_are_no_numerical_rows(tmp_path: Path) -> None:
    rc = main(["check", "-q", *ONE, "--only", "Sigmoid", "--json", str(tmp_path / "r.json")])
    assert rc == 0 and not any("numerical" in t for t in rows(tmp_path / "r.json"))


def test_a_forward_unlike_torch_with_a_consistent_backward(tmp_path: Path) -> None:
    rc, r = check(tmp_path, body=STEEP)
    assert rc == 1
    assert r["out"] == "FAIL" and r["dx backprop vs numerical"] == "PASS"
    layers = json.loads((tmp_path / "r.json").read_text())["layers"]
    torch_row = next(x for lr in layers for x in lr["results"]
                     if x["tensor"] == "dx torch vs numerical" and x["status"] == "FAIL")
    assert "The numerical gradient is of the scratch forward" in torch_row["message"]


def test_a_wrong_backward_fails_against_central_differences(tmp_path: Path) -> None:
    rc, r = check(tmp_path, body=NO_FACTOR)
    assert rc == 1
    assert r["out"] == "PASS" and r["dx"] == r["dx backprop vs numerical"] == "FAIL"
    assert r["dx torch vs numerical"] == "PASS"


def test_numerical_on_optimizers_only_is_a_usage_error(tmp_path: Path, capsys) -> None:
    assert main(["check", "--numerical", "--only", "SGD"]) == 2
    assert "--numerical applies to layers" in capsys.readouterr().err


def test_cases_central_differences_cannot_judge_are_not_differentiated() -> None:
    # a random forward, 56 s of forward passes, inputs on a kink or a tie (a step of h moves
    # them across it), a loss saturated by the classic 1e-7
    from harness.suite import all_cases

    skipped = {c.name for c in all_cases() if c.group == "layer" and not c.numerical}
    assert skipped == {"Dropout (inverted) vs nn.Dropout", "Convolution (30 filters 5x5, 28x28)",
                       "BatchNormalization (running stats, 4 steps)", "Relu (exact zeros)",
                       "SoftmaxWithLoss (logits in the hundreds)", "Pooling (3x3/2, pad 1, ties)",
                       "Pooling (2x2/2, ties)",
                       "Dropout (own mask: drop rate and scale)"}


def test_a_loss_with_the_classic_eps_written_inline_passes_numerical(tmp_path: Path) -> None:
    book = str(Path(__file__).resolve().parents[1] / "examples" / "book_layers.py")
    rc, r = check(tmp_path, "--module", book, "--only", "book_layers.SoftmaxWithLoss", "--seeds", "2",
                  "--batches", "1", "3", "8")
    assert rc == 0 and r["dx backprop vs numerical"] == "PASS"
    rc, r = check(tmp_path, body="""
        import numpy as np

        class SoftmaxWithLoss:  # -log(p + 1e-7) inline, and the gradient not divided by N
            def forward(self, x, t):
                z = np.exp(x - x.max(axis=1, keepdims=True))
                self.y, self.t = z / z.sum(axis=1, keepdims=True), t
                return -np.log(self.y[np.arange(len(t)), t] + 1e-7).mean()
            def backward(self, dout=1):
                dx = self.y.copy()
                dx[np.arange(len(self.t)), self.t] -= 1
                return dx
    """)
    assert rc == 1 and r["dx backprop vs numerical"] == "FAIL"
