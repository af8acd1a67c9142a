"""Shared test fixtures: the real data locations and a few random helpers."""

from __future__ import annotations

import os
from pathlib import Path

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
