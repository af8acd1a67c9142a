"""Shared test fixtures: the real data locations and a few random helpers."""

from __future__ import annotations

import os
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
