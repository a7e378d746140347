"""MNIST and Fashion-MNIST through torchvision, from a data root that may be read-only.

torchvision unpacks the .gz files beside themselves; when the root is read-only (as ../shared/data is)
the archives are linked into a writable cache first, so nothing is ever written into the data root.
"""
from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import torch

from ..errors import OTBenchError
from ..registry import register_dataset
from ..files import file_kind
from .base import OFFLINE_ENV, Dataset, cache_dir, own_data_root

_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
          "t10k-labels-idx1-ubyte")
COUNTS = {"train": 60_000, "t10k": 10_000}  # images (and labels) per file
MAGIC = {"images": 0x803, "labels": 0x801}  # idx: unsigned bytes, 3 dimensions (images) or 1 (labels)
# MD5 of the unpacked files (torchvision publishes those of the .gz archives, `cls.resources`; these are what the
# published archives unpack to), so a file that is there unpacked is checked as strictly as an archive
UNPACKED_MD5 = {
    "MNIST": {"train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
              "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
              "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
              "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637"},
    "FashionMNIST": {"train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
                     "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
                     "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
                     "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965"},
}


def _idx_problem(path: Path, filename: str) -> str | None:
    """What is wrong with an idx file's header for the file it must be (magic, count, image shape), or None.
    A train file holding the test set's count (or the reverse) is named as a swap."""
    split, kind = filename.split("-")[0], filename.split("-")[1]
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            head = f.read(16 if kind == "images" else 8)
    except (OSError, EOFError) as exc:
        return f"cannot be read ({exc})"
    if len(head) < (16 if kind == "images" else 8):
        return f"is truncated ({len(head)} bytes, shorter than an idx header)"
    magic, count = int.from_bytes(head[:4], "big"), int.from_bytes(head[4:8], "big")
    if magic != MAGIC[kind]:
        return f"is not an idx {kind} file (header {head[:4].hex()}, expected {MAGIC[kind]:08x})"
    if count != COUNTS[split]:
        other = next(s for s in COUNTS if s != split)
        swap = f": it looks like the {other} file; are the train and test files swapped?" \
            if count == COUNTS[other] else ""
        return f"holds {count} {kind}, the {split} file holds {COUNTS[split]}{swap}"
    if kind == "images":
        rows, cols = int.from_bytes(head[8:12], "big"), int.from_bytes(head[12:16], "big")
        if (rows, cols) != (28, 28):
            return f"holds {rows}x{cols} images, expected 28x28"
    if path.suffix != ".gz":
        size = (16 + count * 28 * 28) if kind == "images" else (8 + count)
        if path.stat().st_size != size:
            return f"is {path.stat().st_size} bytes, {size} expected for {count} {kind}: truncated or padded"
    return None


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify_files(cls, folder: str, raw: Path, name: str) -> None:
    """Every file torchvision will read, checked before it does: a regular file, an idx header of the right
    kind and count, and the published MD5. One line naming the file and what is wrong."""
    archives = dict(cls.resources)
    for filename in _FILES:
        for path, md5 in ((raw / filename, UNPACKED_MD5[folder][filename]),
                          (raw / f"{filename}.gz", archives[f"{filename}.gz"])):
            kind = file_kind(path)
            if kind is not None:
                raise OTBenchError(f"{name}: {path} is {kind}, not a data file; put the {folder} files there")
            if not path.exists():
                continue
            problem = _idx_problem(path, filename)
            if problem is None and _md5(path) != md5:
                problem = f"has an MD5 that is not the published file's ({md5}): damaged or another file"
            if problem is not None:
                raise OTBenchError(f"{name}: {path} {problem}; replace it with an intact copy")
            break  # the unpacked file is the one torchvision reads; its archive is not


def _check_loaded(name: str, raw: Path, x: torch.Tensor, y: torch.Tensor, split: str) -> None:
    """What torchvision read: counts, shapes and labels in 0-9 (a label file's content, not only its header)."""
    n = COUNTS["train" if split == "train" else "t10k"]
    if tuple(x.shape) != (n, 28, 28) or tuple(y.shape) != (n,):
        raise OTBenchError(f"{name}: the {split} files under {raw} hold {tuple(x.shape)} images and {tuple(y.shape)} "
                           f"labels, expected ({n}, 28, 28) and ({n},); replace them with intact copies")
    if len(y) and (int(y.min()) < 0 or int(y.max()) > 9):
        raise OTBenchError(f"{name}: the {split} labels under {raw} range over {int(y.min())}..{int(y.max())}, "
                           f"expected 0..9; replace the label file with an intact copy")


def _writable_root(root: Path, folder: str) -> Path:
    """A root torchvision may read (and, where files must be unpacked or fetched, write) in. Nothing is ever
    written into a data root the user named: the archives found there are linked into a mirror in the cache,
    and torchvision unpacks (or downloads) there. Only otbench's own data folder in the cache is written."""
    raw = root / folder / "raw"
    if all((raw / f).exists() for f in _FILES) or own_data_root(root):
        return root
    mirror = cache_dir() / "data-mirror" / hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]
    (mirror / folder / "raw").mkdir(parents=True, exist_ok=True)
    for f in _FILES:
        for name in (f, f"{f}.gz"):
            src, dst = raw / name, mirror / folder / "raw" / name
            if src.exists() and not dst.exists() and not dst.is_symlink():
                dst.symlink_to(src.resolve())
    return mirror


def _missing_message(name: str, folder: str, root: Path, why: str) -> str:
    return (f"{name}: the files are not under {root / folder / 'raw'} and {why}. Put "
            f"{', '.join(f + '.gz' for f in _FILES)} there, or point --data-root / $OTBENCH_DATA at a folder "
            f"holding {folder}/raw/")


def _load_torchvision(cls, folder: str, name: str, root: Path) -> Dataset:
    raw = root / folder / "raw"
    present = all((raw / f).exists() or (raw / f"{f}.gz").exists() for f in _FILES)
    if not present and os.environ.get(OFFLINE_ENV):
        raise OTBenchError(_missing_message(name, folder, root, f"${OFFLINE_ENV} forbids downloading"))
    _verify_files(cls, folder, raw, name)
    work_root = _writable_root(root, folder)
    try:
        train = cls(str(work_root), train=True, download=True)
        test = cls(str(work_root), train=False, download=True)
    except (OSError, RuntimeError, ValueError, AssertionError) as exc:  # offline and missing: urllib raises URLError (an OSError)
        why = " ".join(str(exc).split())  # urllib's message spans lines; the CLI prints one
        if present:
            raise OTBenchError(f"{name}: the files under {raw} could not be read ({why}): one is corrupt or "
                               f"truncated; replace it with an intact copy") from None
        raise OTBenchError(_missing_message(name, folder, root, f"could not be downloaded ({why})")) from None

    _check_loaded(name, raw, train.data, train.targets, "train")
    _check_loaded(name, raw, test.data, test.targets, "test")

    def as_float(t: torch.Tensor) -> torch.Tensor:
        return (t.float() / 255.0).unsqueeze(1)

    return Dataset(name, as_float(train.data), train.targets.long(), as_float(test.data),
                   test.targets.long(), 10, str(root / folder / "raw"))


@register_dataset("mnist", test_size=10_000, input_dim=28 * 28)
def mnist(root: Path) -> Dataset:
    from torchvision import datasets  # here, not at import: torchvision costs a second that `otbench list` need not pay

    return _load_torchvision(datasets.MNIST, "MNIST", "mnist", root)


@register_dataset("fashion-mnist", test_size=10_000, input_dim=28 * 28)
def fashion_mnist(root: Path) -> Dataset:
    from torchvision import datasets

    return _load_torchvision(datasets.FashionMNIST, "FashionMNIST", "fashion-mnist", root)
