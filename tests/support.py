"""Constants and markers the tests share (conftest.py holds the fixtures)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = Path(os.environ.get("OTBENCH_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
# A small, fast stand-in for the quick preset: 2 blocks, 1 epoch, 3000 real MNIST training points.
TINY_TRAIN = {"blocks": 2, "residual": True, "epochs": 1, "batch_size": 64, "lr": 0.05, "momentum": 0.9,
              "weight_decay": 5e-4, "alpha": 0.0, "train_size": 3000, "seed": 0}


def mnist_available() -> bool:
    return (DATA / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").exists()


needs_mnist = pytest.mark.skipif(not mnist_available(), reason=f"real MNIST not found under {DATA}/MNIST/raw")


def tiny_overrides(**defense) -> dict:
    return {"train": dict(TINY_TRAIN), "defense": dict(defense)}
