"""STL-10 (papers/ot-classifier.txt section 4) from torchvision's binary files under `<data root>/stl10_binary`.

The format is torchvision's STL10: `train_X.bin` / `test_X.bin` hold uint8 images stored column-major per channel
(read as (N, 3, 96, 96) and transposed to (N, 3, H, W) rows first, as torchvision does), `train_y.bin` /
`test_y.bin` one uint8 label in 1..10 per image (0..9 here). torchvision checks the official md5 sums before it
reads anything; the files are read directly here, the same way, so a copy or a subset in the same format loads too.
5,000 training and 8,000 test images; the unlabeled split is not used. Nothing is downloaded (the archive is 2.6 GB):
a missing folder is an error naming what to put where.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import OTBenchError
from ..registry import register_dataset
from .base import Dataset, uint8_images

FOLDER = "stl10_binary"  # torchvision's STL10.base_folder
_FILES = ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin")
SIZE = 96


def _read_images(path: Path) -> np.ndarray:
    raw = np.fromfile(path, dtype=np.uint8)
    per = 3 * SIZE * SIZE
    if raw.size % per:
        raise OTBenchError(f"stl10: {path} holds {raw.size} bytes, not a multiple of 3 x 96 x 96")
    return np.transpose(raw.reshape(-1, 3, SIZE, SIZE), (0, 1, 3, 2))  # column-major images, as torchvision


def _read_labels(path: Path, n: int) -> np.ndarray:
    labels = np.fromfile(path, dtype=np.uint8).astype(np.int64) - 1
    if len(labels) != n or (labels < 0).any() or (labels > 9).any():
        raise OTBenchError(f"stl10: {path} must hold {n} labels in 1..10, found {len(labels)} "
                           f"in {labels.min() + 1 if len(labels) else '-'}..{labels.max() + 1 if len(labels) else '-'}")
    return labels


@register_dataset("stl10", test_size=8_000, input_dim=3 * 96 * 96)
def stl10(root: Path) -> Dataset:
    folder = Path(root) / FOLDER
    missing = [f for f in _FILES if not (folder / f).is_file()]
    if missing:
        raise OTBenchError(f"stl10: {', '.join(missing)} not found under {folder}. Unpack stl10_binary.tar.gz "
                           f"(torchvision's STL10 files {', '.join(_FILES)}) there, or point --data-root / "
                           f"$OTBENCH_DATA at a folder holding {FOLDER}/")
    x_tr, x_te = _read_images(folder / "train_X.bin"), _read_images(folder / "test_X.bin")
    y_tr, y_te = _read_labels(folder / "train_y.bin", len(x_tr)), _read_labels(folder / "test_y.bin", len(x_te))
    return Dataset("stl10", uint8_images(x_tr), torch.from_numpy(y_tr), uint8_images(x_te), torch.from_numpy(y_te), 10,
                   str(folder))
