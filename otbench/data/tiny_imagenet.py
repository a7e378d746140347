"""Tiny ImageNet (papers/ot-classifier.txt section 4) from a folder in its standard layout, given by the user.

The folder is `$OTBENCH_TINY_IMAGENET`, else `<data root>/tiny-imagenet-200` (the unpacked tiny-imagenet-200.zip):

    wnids.txt                      the 200 class ids, one a line (their order gives the labels 0..199)
    train/<wnid>/images/*.JPEG     500 training images per class, 64 x 64
    val/images/*.JPEG              10,000 validation images
    val/val_annotations.txt        <file name> TAB <wnid> TAB bounding box ...

The official test split has no labels, so the validation split is the test split here (as is usual for this data).
Images are read with PIL and converted to RGB (a few training images are greyscale). 100,000 training images take
about 4.9 GB as float32. Nothing is downloaded.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import OTBenchError
from ..registry import register_dataset
from .base import Dataset

FOLDER = "tiny-imagenet-200"
ENV = "OTBENCH_TINY_IMAGENET"
SIZE = 64
_LAYOUT = "wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG and val/val_annotations.txt"


def tiny_imagenet_folder(root: Path) -> Path:
    return Path(os.environ[ENV]).expanduser() if os.environ.get(ENV) else Path(root) / FOLDER


def _read(paths: list[Path]) -> torch.Tensor:
    from PIL import Image

    out = np.empty((len(paths), SIZE, SIZE, 3), dtype=np.uint8)
    for i, p in enumerate(paths):
        with Image.open(p) as im:
            im = im.convert("RGB")
            if im.size != (SIZE, SIZE):
                raise OTBenchError(f"tiny-imagenet: {p} is {im.size[0]} x {im.size[1]}, not {SIZE} x {SIZE}")
            out[i] = np.asarray(im)
    return torch.from_numpy(out).permute(0, 3, 1, 2).float() / 255.0


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpeg", ".jpg", ".png")) if folder.is_dir() else []


@register_dataset("tiny-imagenet", test_size=10_000, input_dim=3 * 64 * 64)
def tiny_imagenet(root: Path) -> Dataset:
    folder = tiny_imagenet_folder(root)
    needed = [folder / "wnids.txt", folder / "train", folder / "val" / "images", folder / "val" / "val_annotations.txt"]
    missing = [str(p.relative_to(folder)) for p in needed if not p.exists()]
    if missing:
        raise OTBenchError(f"tiny-imagenet: {', '.join(missing)} not found under {folder}. Unpack "
                           f"tiny-imagenet-200.zip there ({_LAYOUT}), or set ${ENV} to the folder holding them")
    wnids = [w.strip() for w in (folder / "wnids.txt").read_text().split() if w.strip()]
    label = {w: i for i, w in enumerate(wnids)}
    train_paths, train_labels = [], []
    for w in wnids:
        imgs = _images(folder / "train" / w / "images")
        if not imgs:
            raise OTBenchError(f"tiny-imagenet: class {w} of wnids.txt has no images under "
                               f"{folder / 'train' / w / 'images'}")
        train_paths += imgs
        train_labels += [label[w]] * len(imgs)
    val_paths, val_labels = [], []
    for line in (folder / "val" / "val_annotations.txt").read_text().splitlines():
        if not line.strip():
            continue
        name, wnid = line.split("\t")[:2]
        if wnid not in label:
            raise OTBenchError(f"tiny-imagenet: val_annotations.txt names class {wnid}, which is not in wnids.txt")
        val_paths.append(folder / "val" / "images" / name)
        val_labels.append(label[wnid])
    absent = [p.name for p in val_paths if not p.is_file()]
    if absent:
        raise OTBenchError(f"tiny-imagenet: {len(absent)} validation images of val_annotations.txt are missing "
                           f"under {folder / 'val' / 'images'} (first: {absent[0]})")
    return Dataset("tiny-imagenet", _read(train_paths), torch.tensor(train_labels), _read(val_paths),
                   torch.tensor(val_labels), len(wnids), str(folder))
