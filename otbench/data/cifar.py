"""CIFAR-10 from the python pickle batches under `<data root>/cifar-10-batches-py`.

torchvision's CIFAR10 md5-checks every batch against the official release, and with download=True a
failed check means a download. So the files are read with torchvision when they are the official ones;
any other copy in the same format (a subset, a re-export, the small folders the tests write) is read from
the same pickles the way torchvision reads them, with a warning that it is not the official release.
Nothing is written into the data root: a missing dataset is downloaded into a writable cache mirror when
the root is read-only, and not at all when $OTBENCH_OFFLINE is set.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import torch
from ..errors import OTBenchError
from ..registry import register_dataset
from .base import OFFLINE_ENV, Dataset, cache_dir, own_data_root, uint8_images

# torchvision's CIFAR10 layout (its base_folder, train_list, test_list and meta; a test checks they agree), written
# out so that listing datasets does not load torchvision
FOLDER = "cifar-10-batches-py"
_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
_TEST = ["test_batch"]
_META = "batches.meta"
_FILES = (*_TRAIN, *_TEST, _META)


def is_official(root: Path) -> bool:
    """Whether `root/cifar-10-batches-py` holds the official files (torchvision's md5 list)."""
    from torchvision import datasets
    from torchvision.datasets.utils import check_integrity

    cls = datasets.CIFAR10
    listed = [*cls.train_list, *cls.test_list, [cls.meta["filename"], cls.meta["md5"]]]
    return all(check_integrity(str(root / FOLDER / f), md5) for f, md5 in listed)


def _has_files(root: Path) -> bool:
    return all((root / FOLDER / f).is_file() for f in _FILES)


def _mirror(root: Path) -> Path:
    return cache_dir() / "data-mirror" / hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]


def _missing_message(root: Path, why: str) -> str:
    return (f"cifar10: the files are not under {root / FOLDER} and {why}. Put the CIFAR-10 python batches "
            f"({', '.join(_FILES)}, from cifar-10-python.tar.gz) there, or point --data-root / $OTBENCH_DATA "
            f"at a folder holding {FOLDER}/")


def _download(root: Path) -> Path:
    from torchvision import datasets

    """Download with torchvision into a cache mirror (into the root only when it is otbench's own, in the cache)."""
    if os.environ.get(OFFLINE_ENV):
        raise OTBenchError(_missing_message(root, f"${OFFLINE_ENV} forbids downloading"))
    target = root if own_data_root(root) else _mirror(root)  # never into a data root the user named
    try:
        datasets.CIFAR10(str(target), train=False, download=True)
    except (OSError, RuntimeError) as exc:  # offline: urllib raises URLError (an OSError)
        why = " ".join(str(exc).split())
        raise OTBenchError(_missing_message(root, f"could not be downloaded ({why})")) from None
    return target


def read_batches(folder: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The images (N, 3, 32, 32) uint8 and labels of pickle batches, read exactly as torchvision does."""
    data, labels = [], []
    for name in names:
        with open(folder / name, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        data.append(entry["data"])
        labels.extend(entry["labels"] if "labels" in entry else entry["fine_labels"])
    return np.vstack(data).reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


@register_dataset("cifar10", test_size=10_000, input_dim=3 * 32 * 32)
def cifar10(root: Path) -> Dataset:
    from torchvision import datasets

    source = root
    if not _has_files(root):
        source = _mirror(root) if _has_files(_mirror(root)) else _download(root)
    folder = source / FOLDER
    if is_official(source):
        train = datasets.CIFAR10(str(source), train=True, download=False)
        test = datasets.CIFAR10(str(source), train=False, download=False)
        x_tr, y_tr = train.data.transpose(0, 3, 1, 2), np.asarray(train.targets)  # torchvision holds HWC
        x_te, y_te = test.data.transpose(0, 3, 1, 2), np.asarray(test.targets)
        where = str(folder)
    else:
        warnings.warn(f"cifar10: {folder} is not the official CIFAR-10 release (md5 differs); read its "
                      "pickle batches directly, as torchvision would without the check", stacklevel=2)
        x_tr, y_tr = read_batches(folder, _TRAIN)
        x_te, y_te = read_batches(folder, _TEST)
        where = f"{folder} (not the official files: md5 differs)"
    return Dataset("cifar10", uint8_images(x_tr), torch.as_tensor(y_tr).long(), uint8_images(x_te),
                   torch.as_tensor(y_te).long(), 10, where)
