"""MNIST and Fashion-MNIST through torchvision, from a data root that may be read-only.

torchvision unpacks the .gz files beside themselves; when the root is read-only (as ../shared/data is)
the archives are linked into a writable cache first, so nothing is ever written into the data root.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from ..errors import OTBenchError
from ..registry import register_dataset
from .base import OFFLINE_ENV, Dataset, cache_dir

_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
          "t10k-labels-idx1-ubyte")


def _writable(path: Path) -> bool:
    # root passes os.access on a folder without write bits, so the bits are checked too
    return os.access(path, os.W_OK) and bool(path.stat().st_mode & 0o222)


def _writable_root(root: Path, folder: str) -> Path:
    """A root torchvision may write into, holding (links to) the files found under `root`."""
    raw = root / folder / "raw"
    unpacked = all((raw / f).exists() for f in _FILES)
    if not root.exists() or unpacked:
        return root
    if _writable(root) and (not raw.exists() or _writable(raw)):
        return root
    mirror = cache_dir() / "data-mirror" / hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]
    (mirror / folder / "raw").mkdir(parents=True, exist_ok=True)
    for f in _FILES:
        src, dst = raw / f"{f}.gz", mirror / folder / "raw" / f"{f}.gz"
        if src.exists() and not dst.exists():
            dst.symlink_to(src.resolve())
    return mirror


def _check_archives(cls, raw: Path, name: str) -> None:
    """An archive that is there but damaged is named as corrupt (torchvision would try to download it again
    and, offline, report it missing)."""
    for filename, md5 in cls.resources:
        gz = raw / filename
        if gz.exists() and not (raw / filename.removesuffix(".gz")).exists():
            if hashlib.md5(gz.read_bytes()).hexdigest() != md5:
                raise OTBenchError(f"{name}: {gz} is corrupt (truncated or damaged: its md5 is not torchvision's "
                                   f"{md5}); replace it with an intact copy")


def _missing_message(name: str, folder: str, root: Path, why: str) -> str:
    return (f"{name}: the files are not under {root / folder / 'raw'} and {why}. Put "
            f"{', '.join(f + '.gz' for f in _FILES)} there, or point --data-root / $OTBENCH_DATA at a folder "
            f"holding {folder}/raw/")


def _load_torchvision(cls, folder: str, name: str, root: Path) -> Dataset:
    raw = root / folder / "raw"
    present = all((raw / f).exists() or (raw / f"{f}.gz").exists() for f in _FILES)
    if not present and os.environ.get(OFFLINE_ENV):
        raise OTBenchError(_missing_message(name, folder, root, f"${OFFLINE_ENV} forbids downloading"))
    _check_archives(cls, raw, name)
    work_root = _writable_root(root, folder)
    try:
        train = cls(str(work_root), train=True, download=True)
        test = cls(str(work_root), train=False, download=True)
    except (OSError, RuntimeError, ValueError) as exc:  # offline and missing: urllib raises URLError (an OSError)
        why = " ".join(str(exc).split())  # urllib's message spans lines; the CLI prints one
        if present:
            raise OTBenchError(f"{name}: the files under {raw} could not be read ({why}): one is corrupt or "
                               f"truncated; replace it with an intact copy") from None
        raise OTBenchError(_missing_message(name, folder, root, f"could not be downloaded ({why})")) from None

    def as_float(t: torch.Tensor) -> torch.Tensor:
        return (t.float() / 255.0).unsqueeze(1)

    return Dataset(name, as_float(train.data), train.targets.long(), as_float(test.data),
                   test.targets.long(), 10, str(root / folder / "raw"))


@register_dataset("mnist", test_size=10_000)
def mnist(root: Path) -> Dataset:
    from torchvision import datasets  # here, not at import: torchvision costs a second that `otbench list` need not pay

    return _load_torchvision(datasets.MNIST, "MNIST", "mnist", root)


@register_dataset("fashion-mnist", test_size=10_000)
def fashion_mnist(root: Path) -> Dataset:
    from torchvision import datasets

    return _load_torchvision(datasets.FashionMNIST, "FashionMNIST", "fashion-mnist", root)
