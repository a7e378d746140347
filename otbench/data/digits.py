"""scikit-learn's bundled 8x8 digits: a real dataset that needs no download at all."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..registry import register_dataset
from .base import Dataset

_SPLIT_SEED = 0  # fixed so the train/test split is the same everywhere
_N_TEST = 450


@register_dataset("digits", test_size=_N_TEST, input_dim=8 * 8)
def digits(root: Path | None = None) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(bunch.target, dtype=torch.long)
    order = torch.as_tensor(np.random.default_rng(_SPLIT_SEED).permutation(len(y)))
    test, train = order[:_N_TEST], order[_N_TEST:]
    return Dataset("digits", x[train], y[train], x[test], y[test], 10, "sklearn.datasets.load_digits")
