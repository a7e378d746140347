"""Vector datasets of OTAD's analyses: the synthetic Gaussian classes (Table XIV) and MERFISH (Table IV).

Both are vectors, stored as (N, 1, 1, D): the (N, C, H, W) layout the attack libraries assume (torchattacks'
PGDL2 reshapes its step to (B, 1, 1, 1)); the FC ResNet flattens it back, and L2 norms are the vectors' own.

**gaussian-sphere-STD** (STD in 0.1 ... 0.6; papers/otad.txt V-I, Table XIV). 50,000 training and 10,000
test points in R^128; class k is N(mu_k, STD^2 I) with mu_k uniform on the unit sphere (a normalised
standard Gaussian). The paper does not give the number of classes; we use `CLASSES` = 10. Compared over
2 ... 20, 30, 50, 100, 200 classes, the Bayes (nearest-true-mean) accuracy is closest to the paper's net test
accuracies over STD 0.3 ... 0.6 for 7 to 11 classes, all within 2 points of summed error of each other (8 is
nominally best); 10 is also the class count of the paper's other classification data. No count fits every
row: the paper's 99.0% at STD 0.3 is above the 10-class Bayes limit (about 94%), which a trained network
cannot beat, and its 51.7% at STD 0.6 is far below the 2-class one (about 88%). The paper calls STD
"the variance" in Table XIV's caption but samples N(mu_k, Sigma); we read STD as the standard deviation
per coordinate (Sigma = STD^2 I), as the column name says. Means, labels and noise come from a fixed
seed, so every process builds the same data; one STD's data is generated once per process.

The harness requires inputs in [0, 1]: the data are mapped by the fixed isotropic affine map
x -> 0.5 + x / SCALE (SCALE = 8; no coordinate of any STD <= 0.6 set leaves [0, 1]). Distances shrink by
SCALE, so an L2 budget eps in the paper's units is eps / SCALE here (Table XIV's eps 1 is 0.125), and
Lipschitz constants of maps from the inputs grow by SCALE; accuracies and relative errors are unchanged.

**merfish** (papers/otad.txt V-D2, Table IV): the MERFISH retina data of Chen et al., 500 gene
expressions per cell and 7 cell types, from a file the user gives (it cannot be downloaded here):
`$OTBENCH_MERFISH` (a file), else `<data root>/merfish/` holding one of `merfish.h5ad`, `merfish.npz`,
`merfish.csv` (or `train.*` + `test.*`). Formats:
  - NPZ: arrays `x` (N, genes) and `y` (N,) [+ optional `split`, 1/"test" = test], or `x_train`, `y_train`,
    `x_test`, `y_test`;
  - CSV: a header, one row per cell: gene columns and a label column named one of `LABEL_COLUMNS`
    (`cell_type`, `celltype`, `label`, `y`), optionally a `split` column (`train` / `test`);
  - AnnData .h5ad (read with `anndata`, imported only then): `X` (dense or sparse) and the label in
    `obs[cell_type | celltype | label | y]`, optionally `obs["split"]`.
Labels may be strings or integers: they are mapped to 0..C-1 in sorted order. Without a split the cells are
split 80/20 by a fixed seed (the paper: 65,697 training and 16,425 test cells, i.e. 80/20). The expression
values are taken as given (the paper preprocesses with Scanpy; do that before) and scaled per gene to
[0, 1] with the training split's minimum and maximum; test values outside are clipped, constant genes are 0.

**merfish-synthetic**: NOT the MERFISH data: a stand-in of its shape (500 non-negative log "expressions", 7
cell types of unequal size, each type raising 20 marker genes of its own over gamma-distributed background),
`MERFISH_LIKE_CELLS` cells split 80/20 as above, then scaled like `merfish`. It exists to run Table IV's
pipeline where the real file is absent; its accuracies say nothing about single-cell data.
"""
from __future__ import annotations

import csv
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ..errors import OTBenchError
from ..registry import register_dataset
from .base import Dataset

# -- synthetic Gaussian classes -----------------------------------------------------------------------------
STDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
DIM, CLASSES, N_TRAIN, N_TEST = 128, 10, 50_000, 10_000
SEED = 0
SCALE = 8.0  # x -> 0.5 + x / SCALE maps every set into [0, 1]; an eps of e in the paper's units is e / SCALE


def as_input_eps(eps: float) -> float:
    """An L2 budget in the paper's units of the synthetic data -> the same budget on the stored inputs."""
    return eps / SCALE


def class_means(classes: int = CLASSES, dim: int = DIM, seed: int = SEED) -> np.ndarray:
    """(classes, dim) means, uniform on the unit sphere; the same for every STD."""
    g = np.random.default_rng(seed).standard_normal((classes, dim))
    return g / np.linalg.norm(g, axis=1, keepdims=True)


@lru_cache(maxsize=None)
def gaussian_classes(std: float, n_train: int = N_TRAIN, n_test: int = N_TEST, classes: int = CLASSES,
                     dim: int = DIM, seed: int = SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test) in the paper's units (not yet mapped into [0, 1]).

    Labels are balanced-in-expectation uniform draws; the noise of each STD is the same standard draw
    scaled by STD, so the sets differ only in their spread."""
    if std <= 0:
        raise OTBenchError(f"the Gaussian classes need std > 0, got {std}")
    mu = class_means(classes, dim, seed)
    rng = np.random.default_rng([seed, 1])
    y = rng.integers(0, classes, n_train + n_test)
    noise = rng.standard_normal((n_train + n_test, dim), dtype=np.float32)
    x = (mu[y] + std * noise).astype(np.float32)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def bayes_margins(x: np.ndarray, y: np.ndarray, means: np.ndarray) -> np.ndarray:
    """Per point (paper's units), the L2 distance to the nearest boundary of the nearest-mean (Bayes, for
    equal isotropic classes) classifier between its class y and any other: min_j (|x-mu_j|^2 - |x-mu_y|^2) /
    (2 |mu_j - mu_y|); negative when the point is on the wrong side. A perturbation of L2 norm above it can
    move the point to where another class is more likely, so the fraction with margin > eps bounds what
    robust accuracy at eps means on this data."""
    d2 = ((x[:, None, :] - means[None]) ** 2).sum(-1)
    own = d2[np.arange(len(y)), y]
    gap = np.linalg.norm(means[None] - means[y][:, None], axis=-1)
    margin = (d2 - own[:, None]) / (2 * np.where(gap > 0, gap, 1.0))
    margin[np.arange(len(y)), y] = np.inf
    return margin.min(1)


def _to_inputs(x: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(0.5 + x / SCALE).float()
    if t.min() < 0 or t.max() > 1:  # does not happen for std <= 0.6; a larger std would be clipped silently
        raise OTBenchError(f"a synthetic coordinate leaves [0, 1] after x -> 0.5 + x/{SCALE:g}; use std <= 0.6")
    return t.view(len(x), 1, 1, -1)


def _gaussian_dataset(std: float) -> Dataset:
    xtr, ytr, xte, yte = gaussian_classes(std)
    name = f"gaussian-sphere-{std:g}"
    return Dataset(name, _to_inputs(xtr), torch.from_numpy(ytr).long(), _to_inputs(xte),
                   torch.from_numpy(yte).long(), CLASSES,
                   f"synthetic: {CLASSES} classes N(mu_k, {std:g}^2 I) in R^{DIM}, mu_k on the unit sphere, "
                   f"seed {SEED}; inputs 0.5 + x/{SCALE:g}")


def _register_gaussian(std: float) -> None:
    @register_dataset(f"gaussian-sphere-{std:g}", test_size=N_TEST)
    def load(root: Path | None = None) -> Dataset:  # the root is not used: the data are generated
        return _gaussian_dataset(std)


for _std in STDS:
    _register_gaussian(_std)


def nearest_mean_accuracy(std: float, classes: int = CLASSES) -> float:
    """Test accuracy of the nearest-class-mean rule with the true means (the Bayes rule here)."""
    _, _, xte, yte = gaussian_classes(std, classes=classes)
    mu = class_means(classes)
    d = (xte ** 2).sum(1, keepdims=True) - 2 * xte @ mu.T + (mu ** 2).sum(1)
    return float((d.argmin(1) == yte).mean())


# -- MERFISH ------------------------------------------------------------------------------------------------
MERFISH_ENV = "OTBENCH_MERFISH"
LABEL_COLUMNS = ("cell_type", "celltype", "label", "y")
SPLIT_SEED, TEST_FRACTION = 0, 0.2
_SUFFIXES = (".h5ad", ".npz", ".csv")


def _find_merfish(root: Path | None) -> list[Path]:
    """The file(s) to read: $OTBENCH_MERFISH, else <root>/merfish/{merfish,train+test}.{h5ad,npz,csv}."""
    if os.environ.get(MERFISH_ENV):
        path = Path(os.environ[MERFISH_ENV]).expanduser()
        if not path.is_file():
            raise OTBenchError(f"merfish: ${MERFISH_ENV} points at {path}, which is not a file")
        return [path]
    folder = Path(root or ".") / "merfish"
    for suffix in _SUFFIXES:
        if (folder / f"merfish{suffix}").is_file():
            return [folder / f"merfish{suffix}"]
        if (folder / f"train{suffix}").is_file() and (folder / f"test{suffix}").is_file():
            return [folder / f"train{suffix}", folder / f"test{suffix}"]
    raise OTBenchError(
        f"merfish: no data file. The MERFISH retina data (500 genes, 7 cell types; Chen et al.) cannot be "
        f"downloaded by otbench: put merfish.h5ad, merfish.npz or merfish.csv (or train.* and test.*) under "
        f"{folder}, or point ${MERFISH_ENV} at the file (see otbench/data/synthetic.py for the formats)")


def _split_of(values) -> np.ndarray:
    """A split column -> bool 'is test' (accepts train/test strings, booleans and 0/1)."""
    arr = np.asarray(values)
    if arr.dtype.kind in "USO":
        low = np.char.lower(arr.astype(str))
        bad = set(np.unique(low)) - {"train", "test"}
        if bad:
            raise OTBenchError(f"merfish: split values must be 'train' or 'test', got {sorted(bad)[:3]}")
        return low == "test"
    return arr.astype(bool)


def _read_npz(path: Path):
    with np.load(path, allow_pickle=False) as f:
        keys = set(f.files)
        if {"x_train", "y_train", "x_test", "y_test"} <= keys:
            return (np.concatenate([f["x_train"], f["x_test"]]), np.concatenate([f["y_train"], f["y_test"]]),
                    np.r_[np.zeros(len(f["y_train"]), bool), np.ones(len(f["y_test"]), bool)])
        if not {"x", "y"} <= keys:
            raise OTBenchError(f"merfish: {path} must hold arrays x and y (or x_train, y_train, x_test, y_test); "
                               f"it holds {sorted(keys)}")
        return f["x"], f["y"], _split_of(f["split"]) if "split" in keys else None


def _read_csv(path: Path):
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header:
            raise OTBenchError(f"merfish: {path} is empty")
        rows = list(reader)
    lower = [h.strip().lower() for h in header]
    label = next((lower.index(c) for c in LABEL_COLUMNS if c in lower), None)
    if label is None:
        raise OTBenchError(f"merfish: {path} has no label column; name it one of {', '.join(LABEL_COLUMNS)}")
    split = lower.index("split") if "split" in lower else None
    genes = [i for i in range(len(header)) if i not in (label, split)]
    try:
        x = np.array([[float(r[i]) for i in genes] for r in rows], dtype=np.float32)
    except (ValueError, IndexError) as exc:
        raise OTBenchError(f"merfish: {path}: a gene value is not a number ({exc})") from None
    y = np.array([r[label] for r in rows])
    return x, y, _split_of([r[split] for r in rows]) if split is not None else None


def _read_h5ad(path: Path):
    try:
        import anndata  # optional: only .h5ad files need it
    except ImportError:
        raise OTBenchError(f"merfish: reading {path} needs the 'anndata' package (pip install anndata), or "
                           f"give the data as .npz or .csv (see otbench/data/synthetic.py)") from None
    ad = anndata.read_h5ad(path)
    x = ad.X.toarray() if hasattr(ad.X, "toarray") else np.asarray(ad.X)
    key = next((c for c in ad.obs.columns if c.lower() in LABEL_COLUMNS), None)
    if key is None:
        raise OTBenchError(f"merfish: {path} has no obs column {' / '.join(LABEL_COLUMNS)} with the cell types")
    split = _split_of(ad.obs["split"].to_numpy()) if "split" in ad.obs.columns else None
    return x.astype(np.float32), ad.obs[key].to_numpy(), split


_READERS = {".npz": _read_npz, ".csv": _read_csv, ".h5ad": _read_h5ad}


def _read(path: Path):
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise OTBenchError(f"merfish: {path} is not .h5ad, .npz or .csv")
    x, y, split = reader(path)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or len(x) != len(y):
        raise OTBenchError(f"merfish: {path}: expected x of shape (cells, genes) and one label per cell, got "
                           f"{x.shape} and {len(y)} labels")
    return x, np.asarray(y), split


def load_merfish_arrays(root: Path | None = None):
    """(x_train, y_train, x_test, y_test, class names, source) before scaling."""
    paths = _find_merfish(root)
    if len(paths) == 2:
        (xa, ya, _), (xb, yb, _) = _read(paths[0]), _read(paths[1])
        if xa.shape[1] != xb.shape[1]:
            raise OTBenchError(f"merfish: {paths[0]} has {xa.shape[1]} genes, {paths[1]} {xb.shape[1]}")
        x, y, test = np.concatenate([xa, xb]), np.concatenate([ya, yb]), np.r_[np.zeros(len(ya), bool),
                                                                                 np.ones(len(yb), bool)]
    else:
        x, y, test = _read(paths[0])
        if test is None:
            order = np.random.default_rng(SPLIT_SEED).permutation(len(y))
            test = np.zeros(len(y), bool)
            test[order[:int(round(TEST_FRACTION * len(y)))]] = True
    if not np.isfinite(x).all():
        raise OTBenchError("merfish: the expression values contain NaN or infinity")
    names, codes = np.unique(y.astype(str) if y.dtype.kind in "USO" else y, return_inverse=True)
    if len(names) < 2 or test.all() or not test.any():
        raise OTBenchError(f"merfish: need at least 2 cell types and non-empty train and test splits; got "
                           f"{len(names)} types, {int((~test).sum())} train and {int(test.sum())} test cells")
    return x[~test], codes[~test], x[test], codes[test], [str(n) for n in names], ", ".join(map(str, paths))


def minmax_scale(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per feature to [0, 1] by the training minimum and maximum; test clipped; constant features -> 0."""
    lo, hi = x_train.min(0), x_train.max(0)
    span = np.where(hi > lo, hi - lo, 1.0)
    scale = lambda a: np.clip((a - lo) / span, 0.0, 1.0) * (hi > lo)  # noqa: E731
    return scale(x_train).astype(np.float32), scale(x_test).astype(np.float32)


def _expression_dataset(name: str, xtr, ytr, xte, yte, names, source: str) -> Dataset:
    xtr, xte = minmax_scale(xtr, xte)
    as_t = lambda a: torch.from_numpy(a).view(len(a), 1, 1, -1)  # noqa: E731
    return Dataset(name, as_t(xtr), torch.from_numpy(ytr).long(), as_t(xte), torch.from_numpy(yte).long(),
                   len(names), f"{source} ({xtr.shape[1]} genes; cell types {', '.join(names)})")


@register_dataset("merfish")
def merfish(root: Path | None = None) -> Dataset:
    return _expression_dataset("merfish", *load_merfish_arrays(root))


MERFISH_LIKE_CELLS, MERFISH_GENES, MERFISH_TYPES, MARKERS = 5_000, 500, 7, 20


def merfish_like(cells: int = MERFISH_LIKE_CELLS, seed: int = SEED, shift: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """(cells, 500) float32 log1p 'expressions' and (cells,) labels of 7 unequal cell types; type k adds `shift`
    to the gamma(2, 1) background of its own 20 marker genes (genes 20k ... 20k + 19)."""
    rng = np.random.default_rng([seed, 7])
    weights = np.linspace(2.0, 0.5, MERFISH_TYPES)  # unequal type sizes, as in any tissue
    y = rng.choice(MERFISH_TYPES, size=cells, p=weights / weights.sum())
    x = rng.gamma(2.0, 1.0, (cells, MERFISH_GENES))
    for k in range(MERFISH_TYPES):
        x[y == k, k * MARKERS:(k + 1) * MARKERS] += shift
    return np.log1p(x).astype(np.float32), y


@register_dataset("merfish-synthetic")
def merfish_synthetic(root: Path | None = None) -> Dataset:
    x, y = merfish_like()
    test = np.zeros(len(y), bool)  # the same 80/20 rule as a MERFISH file without a split
    test[np.random.default_rng(SPLIT_SEED).permutation(len(y))[:int(round(TEST_FRACTION * len(y)))]] = True
    tr, te = ~test, test
    names = [f"type{k}" for k in range(MERFISH_TYPES)]
    return _expression_dataset("merfish-synthetic", x[tr], y[tr], x[te], y[te], names,
                               f"SYNTHETIC stand-in of MERFISH's shape, seed {SEED} (not single-cell data)")
