"""Dataset container, data-root resolution and the deterministic evaluation subset."""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..errors import OTBenchError
from ..files import file_kind
from ..registry import DATASETS

DATA_ENV = "OTBENCH_DATA"
CACHE_ENV = "OTBENCH_CACHE"
OFFLINE_ENV = "OTBENCH_OFFLINE"  # set: never try to download, fail at once with where to put the files


@dataclass
class Dataset:
    name: str
    x_train: torch.Tensor  # (N, C, H, W) float32 in `domain`
    y_train: torch.Tensor  # (N,) int64
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    source: str  # where the files came from, for the record
    # the input domain every input (clean or adversarial) must stay in, as (low, high); None = unbounded
    # (e.g. standardised tabular features). The guard checks it and attacks clamp to it.
    domain: tuple[float, float] | None = (0.0, 1.0)

    @property
    def task(self) -> str:
        """Regression datasets carry float targets and no classes."""
        return "regression" if self.num_classes == 0 else "classification"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def input_dim(self) -> int:
        return int(np.prod(self.input_shape))

    def take_train(self, n: int | None) -> "Dataset":
        """The first n training points (the training order is the files' own, so this is deterministic)."""
        if n is None or n >= len(self.x_train):
            return self
        return replace(self, x_train=self.x_train[:n], y_train=self.y_train[:n])


@dataclass(frozen=True)
class DatasetMeta:
    """What a registered dataset declares about itself (register_dataset's keywords), readable without loading
    it, so a run plan is checked before any data is loaded: its task, input domain and test-set size."""

    task: str = "classification"  # or "regression" (num_classes 0, float targets)
    domain: tuple[float, float] | None = (0.0, 1.0)
    test_size: int | None = None  # None: known only once loaded (a user's own file)
    input_dim: int | None = None  # numbers per input (784 for MNIST), for the plan's budget check; None: unknown


def dataset_meta(name: str) -> DatasetMeta:
    return DatasetMeta(**DATASETS.meta(name))


@dataclass(frozen=True)
class EvalSubset:
    """The test samples a run evaluates: ids into the test split, drawn by a recorded seed."""

    seed: int
    ids: tuple[int, ...]


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "otbench")


def cache_dir() -> Path:
    root = cache_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OTBenchError(f"cache folder {root} cannot be created ({exc.strerror}); set ${CACHE_ENV} to a writable "
                           f"folder") from None
    return root


def check_cache_writable() -> Path:
    """The cache must take trained models: checked before any training, without creating anything (root ignores
    the mode bits, so they are checked too), so an hour of training is never lost to a read-only cache."""
    models = cache_root() / "models"
    existing = models
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    kind = file_kind(existing)
    if kind != "a directory":  # a file, a FIFO, a device (/dev/null): refused by what it is
        raise OTBenchError(f"cache folder {models} cannot be made: {existing} is {kind or 'a file'}, not a folder; "
                           f"set ${CACHE_ENV} to a writable folder")
    if not (os.access(existing, os.W_OK) and existing.stat().st_mode & 0o200):
        raise OTBenchError(f"cache folder {models} is not writable ({existing} is read-only or not a folder): trained "
                           f"models could not be kept; set ${CACHE_ENV} to a writable folder")
    return models


def resolve_data_root(data_root: str | os.PathLike | None = None) -> Path:
    """--data-root, else $OTBENCH_DATA, else the user cache. A root the user named must exist: a mistyped one
    is an error, never a folder created (and filled by a download) somewhere unexpected."""
    for given, what in ((data_root, "--data-root"), (os.environ.get(DATA_ENV), f"${DATA_ENV}")):
        if given:
            root = Path(given).expanduser()
            if not root.is_dir():
                raise OTBenchError(f"data root {root} ({what}) {'is not a folder' if root.exists() else 'does not exist'}"
                                   f"; give the folder holding MNIST/raw, FashionMNIST/raw, winequality/ ...")
            return root
    return cache_dir() / "data"


def own_data_root(root: Path) -> bool:
    """The default data root, otbench's folder in its cache: the one place a download may go. Nothing is ever
    created inside a data root the user named (a loader mirrors its files into the cache instead)."""
    return root.resolve() == (cache_root() / "data").resolve()


def eval_subset(n_test: int, n: int, seed: int = 0) -> EvalSubset:
    """The paper draws n random test samples; a fixed permutation makes smaller n a prefix of larger n."""
    order = np.random.default_rng(seed).permutation(n_test)
    return EvalSubset(seed=seed, ids=tuple(int(i) for i in order[: min(n, n_test)]))


_LOADED: dict[tuple[str, str], Dataset] = {}


def load_dataset(name: str, data_root: str | os.PathLike | None = None) -> Dataset:
    """Load a registered dataset once per process."""
    root = resolve_data_root(data_root)
    key = (name, str(root))
    if key not in _LOADED:
        _LOADED[key] = DATASETS.get(name)(root)
    return _LOADED[key]


def uint8_images(images: np.ndarray) -> torch.Tensor:
    """(N, C, H, W) uint8 pixels as floats in [0, 1], what torchvision's ToTensor gives."""
    return torch.from_numpy(np.ascontiguousarray(images)).float() / 255.0
