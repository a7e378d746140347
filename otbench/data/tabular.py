"""Tabular regression data: the UCI red wine quality file of OTAD's Table V (papers/otad.txt V-D3).

`winequality-red`: 1599 wines, 11 physicochemical features, target `quality` (integers 3..8, kept as float).
- Split: the paper gives only the sizes (1279 train / 320 test); a fixed permutation (seed 0) of the file's
  rows puts its first 320 rows in the test split, the rest in training, so the split is the same everywhere.
- Scaling: each feature is min-max scaled to [0, 1] with the TRAINING split's minimum and maximum only (no
  test statistics leak into the model). A test value outside the training range is clipped to [0, 1], since
  every attack and the harness's guard work in [0, 1]; the loader records how many values that touched.
- Regression is marked by `num_classes = 0`; targets are float32 of shape (N,).

`winequality-red-z`: the same file and split, each feature standardised to z-scores with the TRAINING
split's mean and standard deviation (no clipping); its input domain is unbounded (`domain=None`), so the
guard checks only the norm and the regression attacks do not clamp. Why: the paper's perturbation norms
(l2 = 0.1, 0.2, 0.5) fit standardised features, not [0, 1]-scaled ones. Under min-max scaling an l2 step of
0.1 is ~7.6x larger relative to the features' spread than under z-scores, and Table V measured on
`winequality-red` came out 3-8x the paper's E and SMAPE; on z-scores random noise gives E 0.036 / 0.071 /
0.161 against the paper's 0.022 / 0.043 / 0.109 (l2 = 0.1 / 0.2 / 0.5).
"""
from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..errors import OTBenchError
from ..registry import register_dataset
from .base import Dataset

WINE_FILE = Path("winequality") / "winequality-red.csv"
_SPLIT_SEED = 0
_N_TEST = 320  # papers/otad.txt V-D3: "1279 for training and 320 for testing"
_TARGET = "quality"


def read_wine(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Features (N, 11), target (N,) and the feature names of the UCI ';'-separated file."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter=";"))
    header, body = rows[0], [r for r in rows[1:] if r]
    if _TARGET not in header:
        raise OTBenchError(f"{path}: no '{_TARGET}' column in the header {header}")
    t = header.index(_TARGET)
    values = np.asarray(body, dtype=np.float64)
    x = np.delete(values, t, axis=1)
    return x, values[:, t], [h for i, h in enumerate(header) if i != t]


def minmax_from_train(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """Scale both splits by the training minimum and range; clip the test split into [0, 1].
    Returns (train, test, a note for the record naming how many test values were clipped)."""
    low, span = x_train.min(0), x_train.max(0) - x_train.min(0)
    span = np.where(span > 0, span, 1.0)  # a constant feature maps to 0
    train, test = (x_train - low) / span, (x_test - low) / span
    clipped = int(((test < 0) | (test > 1)).sum())
    return train, np.clip(test, 0.0, 1.0), f"min-max from train; {clipped} test values clipped to [0, 1]"


def zscore_from_train(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """Standardise both splits by the training mean and (population) standard deviation; nothing clipped."""
    mean, std = x_train.mean(0), x_train.std(0)
    std = np.where(std > 0, std, 1.0)  # a constant feature maps to 0
    return (x_train - mean) / std, (x_test - mean) / std, "z-scores from train mean and std"


Scaler = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, str]]


def load_wine(root: Path, name: str, scale: Scaler, domain: tuple[float, float] | None) -> Dataset:
    """The red wine file, split (seed 0, 320 test rows) and scaled by `scale` fitted on the training split."""
    path = Path(root) / WINE_FILE
    if not path.exists():
        raise OTBenchError(f"{name}: {path} not found; put the UCI winequality-red.csv under "
                           f"<data root>/{WINE_FILE.parent}/ (--data-root or $OTBENCH_DATA)")
    x, y, _ = read_wine(path)
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(y))
    test, train = order[:_N_TEST], order[_N_TEST:]
    x_train, x_test, how = scale(x[train], x[test])

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.tensor(a, dtype=torch.float32)

    source = f"{path} (split seed {_SPLIT_SEED}: {len(train)} train / {len(test)} test; {how})"
    return Dataset(name, t(x_train), t(y[train]), t(x_test), t(y[test]), 0, source, domain)


@register_dataset("winequality-red", task="regression", test_size=_N_TEST, input_dim=11)
def winequality_red(root: Path) -> Dataset:
    return load_wine(root, "winequality-red", minmax_from_train, (0.0, 1.0))


@register_dataset("winequality-red-z", task="regression", domain=None, test_size=_N_TEST)
def winequality_red_z(root: Path) -> Dataset:
    return load_wine(root, "winequality-red-z", zscore_from_train, None)
