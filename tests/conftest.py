"""Shared test fixtures: the real data locations and a few random helpers."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
MNIST_DIR = Path(os.environ.get("NN_PARITY_MNIST_DIR", REPO.parent / "shared" / "data" / "mnist"))
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.fail(f"real MNIST not found at {MNIST_DIR} (set NN_PARITY_MNIST_DIR)")
    return MNIST_DIR


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="module")
def subset(mnist_dir: Path) -> SimpleNamespace:
    """The first 3,000 training and 500 test images of MNIST: short training runs."""
    from harness.data import load_dataset

    d = load_dataset("mnist", data_dir=mnist_dir)
    return SimpleNamespace(name="mnist-subset", source=d.source, x_train=d.x_train[:3000],
                           t_train=d.t_train[:3000], x_test=d.x_test[:500],
                           t_test=d.t_test[:500])


CONV_PAD_BUG = """
    import numpy as np
    from scratch.convolution import Convolution, col2im

    class {name}(Convolution):
        {init}
        def backward(self, dout):  # crops the padded gradient without the pad offset
            FN, C, FH, FW = self.W.shape
            self.grads["b"] = np.sum(dout, axis=(0, 2, 3))
            d2 = dout.transpose(0, 2, 3, 1).reshape(-1, FN)
            self.grads["W"] = (self.col.T @ d2).T.reshape(FN, C, FH, FW)
            N, C_, H, W = self.x_shape
            full = col2im(d2 @ self.col_W.T, (N, C_, H + 2 * self.pad, W + 2 * self.pad), FH, FW,
                          self.stride, 0)
            return full[:, :, :H, :W]  # should be [pad:H + pad, pad:W + pad]
"""


@pytest.fixture
def conv_pad_bug() -> Callable[..., str]:
    """The source of a user module with a Convolution subclass whose backward is right only
    at pad 0: ``conv_pad_bug(name="MyConv", init="pass")`` (``init``: a line of the class
    body, e.g. its own ``__init__``)."""
    return lambda name="MyConv", init="pass": textwrap.dedent(CONV_PAD_BUG).format(name=name,
                                                                                   init=init)
