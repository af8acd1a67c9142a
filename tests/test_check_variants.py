"""The settings ``nn-parity check`` runs a built-in layer in besides its registered example
(harness.suite.Variant), each aimed at a bug the example cannot see: exact zeros at a ReLU,
ties in a pooling window, inputs large enough to overflow a naive formula, non-square
kernels and windows. A user's subclass (``--module``) runs in them too: each bug below fails
exactly the setting made for it, and the correct built-ins pass them all."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from harness.cli import main
from harness.compare import PASS
from harness.user_modules import forget_user_modules

HEAD = """
    import numpy as np
    import scratch
    import scratch.layers as L
    from scratch.convolution import conv_output_size, im2col, windows
"""

BUGS = {
    "relu mask x < 0 (dout passes at exactly 0)": ("Relu (exact zeros)", """
        class Relu(scratch.Relu):
            def forward(self, x):
                self.mask = x < 0
                return np.maximum(x, 0)
    """),
    "softmax shifted by the batch's max, not each row's": (
        "SoftmaxWithLoss (logits in the hundreds)", """
        def softmax_global(x):
            e = np.exp(x - np.max(x))
            return e / np.sum(e, axis=-1, keepdims=True)
        class SoftmaxWithLoss(scratch.SoftmaxWithLoss):
            def forward(self, x, t):
                saved, L.softmax = L.softmax, softmax_global
                try:
                    return super().forward(x, t)
                finally:
                    L.softmax = saved
    """),
    "tanh as (e^x - e^-x) / (e^x + e^-x)": ("Tanh (large inputs)", """
        class Tanh(scratch.Tanh):
            def forward(self, x):
                a, b = np.exp(x), np.exp(-x)
                self.out = (a - b) / (a + b)
                return self.out
    """),
    "conv out_w sized with FH": ("Convolution (2x3 kernel, stride 1)", """
        class Convolution(scratch.Convolution):
            def forward(self, x):
                FN, C, FH, FW = self.W.shape
                N, _, H, W = x.shape
                out_h = conv_output_size(H, FH, self.stride, self.pad)
                out_w = conv_output_size(W, FH, self.stride, self.pad)
                self.x_shape = x.shape
                self.col = im2col(x, FH, FW, self.stride, self.pad)
                self.col_W = self.W.reshape(FN, -1).T
                out = self.col @ self.col_W + self.b
                return np.ascontiguousarray(out.reshape(N, out_h, out_w, FN).transpose(0, 3, 1, 2))
    """),
    "pool backward decodes the offset with pool_h": ("Pooling (2x3 window, stride 1)", """
        class Pooling(scratch.Pooling):
            def backward(self, dout):
                N, C, H, W = self.x_shape
                s, p = self.stride, self.pad
                oh, ow = self.arg_max.shape[2:]
                dx = np.zeros((N, C, H + 2 * p, W + 2 * p), dtype=dout.dtype)
                for k in range(self.pool_h * self.pool_w):
                    y, x = divmod(k, self.pool_h)
                    dx[:, :, y:y + s * oh:s, x:x + s * ow:s] += dout * (self.arg_max == k)
                return dx[:, :, p:H + p, p:W + p]
    """),
    "dropout keeps where rand < p (drops 1 - p)": ("Dropout (own mask: drop rate and scale)", """
        class Dropout(scratch.Dropout):
            def draw_mask(self, shape):
                return self.rng.random(shape) < self.dropout_ratio
    """),
    "pool backward sends dout to every tied maximum": (("Pooling (3x3/2, pad 1, ties)",
                                                         "Pooling (2x2/2, ties)"), """
        class Pooling(scratch.Pooling):
            def forward(self, x):
                self.x_in = x
                return super().forward(x)
            def backward(self, dout):
                N, C, H, W = self.x_shape
                s, p = self.stride, self.pad
                win = windows(self.x_in, self.pool_h, self.pool_w, s, p, pad_value=-np.inf)
                mx = win.max(axis=(4, 5))
                oh, ow = mx.shape[2:]
                dx = np.zeros((N, C, H + 2 * p, W + 2 * p), dtype=dout.dtype)
                for y in range(self.pool_h):
                    for x in range(self.pool_w):
                        dx[:, :, y:y + s * oh:s, x:x + s * ow:s] += dout * (win[..., y, x] == mx)
                return dx[:, :, p:H + p, p:W + p]
    """),
}


@pytest.fixture(autouse=True)
def _forget():
    yield
    forget_user_modules()


def failing_components(tmp_path: Path, body: str) -> set[str]:
    mod = tmp_path / "mine.py"
    mod.write_text(textwrap.dedent(HEAD) + textwrap.dedent(body))
    out = tmp_path / "r.json"
    rc = main(["check", "-q", "--module", str(mod), "--json", str(out)])
    bad = {lr["info"]["component"] for lr in json.loads(out.read_text())["layers"]
           if lr["status"] != PASS}
    assert rc == (1 if bad else 0)
    return bad


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the naive formulas overflow
@pytest.mark.parametrize("bug", list(BUGS))
def test_each_bug_fails_exactly_the_setting_made_for_it(tmp_path: Path, bug: str) -> None:
    setting, body = BUGS[bug]
    settings = (setting,) if isinstance(setting, str) else setting
    assert failing_components(tmp_path, body) == {f"mine.{s}" for s in settings}


def test_the_builtins_pass_every_setting(capsys) -> None:
    only = [s for setting, _ in BUGS.values()
            for s in ((setting,) if isinstance(setting, str) else setting)]
    patterns = [arg for s in only for arg in ("--only", s.replace("(", "[(]"))]
    assert main(["check", "-q", *patterns]) == 0
    assert capsys.readouterr().out.startswith(f"PASS: {len(only) * 12} checks")
