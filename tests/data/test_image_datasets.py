"""Image datasets: MNIST from a read-only root, digits, deterministic subsets, and the CIFAR-10, STL-10 and Tiny ImageNet loaders on files the tests write."""
from __future__ import annotations

import shutil
import stat

import numpy as np
import pytest
import torch
from support import DATA, needs_mnist, write_cifar10
from torchvision import datasets

from otbench.data import eval_subset, load_dataset
from otbench.data.base import _LOADED
from otbench.errors import OTBenchError
from otbench.registry import DATASETS


def _tree(path):
    return sorted((str(p.relative_to(path)), p.stat().st_size) for p in path.rglob("*"))


@pytest.fixture
def no_downloads(monkeypatch):
    """Any attempt by torchvision to fetch CIFAR-10 fails the test instead of going to the network."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"download attempted: {args}")

    monkeypatch.setattr(datasets.cifar, "download_and_extract_archive", refuse)


# -- loaders ------------------------------------------------------------------------------------------------------
def _write_stl10(root, n_train=4, n_test=3):
    rng = np.random.default_rng(0)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    for split, n in (("train", n_train), ("test", n_test)):
        rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8).tofile(folder / f"{split}_X.bin")
        np.asarray(rng.integers(1, 11, n), dtype=np.uint8).tofile(folder / f"{split}_y.bin")
    return folder


def _write_tiny_imagenet(folder, wnids=("n01443537", "n01629819"), per_class=2):
    from PIL import Image

    rng = np.random.default_rng(0)
    (folder / "wnids.txt").parent.mkdir(parents=True, exist_ok=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for w in wnids:
        (folder / "train" / w / "images").mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
                folder / "train" / w / "images" / f"{w}_{i}.JPEG")
    (folder / "val" / "images").mkdir(parents=True)
    lines = []
    for i, w in enumerate([wnids[1], wnids[0], wnids[1]]):
        mode = "L" if i == 2 else "RGB"  # a greyscale image, as the real data has
        arr = rng.integers(0, 256, (64, 64) if mode == "L" else (64, 64, 3), dtype=np.uint8)
        Image.fromarray(arr, mode).save(folder / "val" / "images" / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")


def test_digits_needs_no_download():
    d = load_dataset("digits")
    assert d.x_train.shape[1:] == (1, 8, 8) and len(d.x_train) + len(d.x_test) == 1797
    assert 0.0 <= d.x_train.min() and d.x_train.max() <= 1.0
    assert set(d.y_test.tolist()) == set(range(10))


def test_eval_subset_is_deterministic_and_nested():
    a, b = eval_subset(10000, 1000, seed=3), eval_subset(10000, 1000, seed=3)
    assert a == b and len(set(a.ids)) == 1000
    assert eval_subset(10000, 100, seed=3).ids == a.ids[:100]
    assert eval_subset(10000, 100, seed=4).ids != a.ids[:100]


@needs_mnist
def test_mnist_from_a_read_only_root_writes_nothing_there(tmp_path, monkeypatch):
    root = tmp_path / "ro"
    shutil.copytree(DATA / "MNIST", root / "MNIST")
    for p in [root, *root.rglob("*")]:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    before = _tree(root)
    monkeypatch.setenv("OTBENCH_CACHE", str(tmp_path / "cache"))
    d = load_dataset("mnist", root)
    _LOADED.clear()
    assert _tree(root) == before
    assert d.x_train.shape == (60000, 1, 28, 28) and d.x_test.shape == (10000, 1, 28, 28)
    assert d.y_train[:5].tolist() == [5, 0, 4, 1, 9]  # the well-known first MNIST labels


def test_missing_data_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("OTBENCH_OFFLINE", "1")
    with pytest.raises(OTBenchError) as err:
        load_dataset("fashion-mnist", tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "FashionMNIST" / "raw") in msg and "train-images-idx3-ubyte.gz" in msg


# -- the cifar10 loader ------------------------------------------------------------------------------
def test_cifar10_reads_a_folder_in_cifar10s_format_with_a_warning(tmp_path, no_downloads):
    made = write_cifar10(tmp_path, per_batch=3, n_test=5)
    tmp_path.chmod(0o555)  # a read-only root is only read
    try:
        with pytest.warns(UserWarning, match="md5 differs"):
            d = DATASETS.get("cifar10")(tmp_path)
    finally:
        tmp_path.chmod(0o755)
    assert d.x_train.shape == (15, 3, 32, 32) and d.x_test.shape == (5, 3, 32, 32)
    train = np.concatenate([made[f"data_batch_{i}"][0] for i in range(1, 6)]).reshape(-1, 3, 32, 32)
    assert torch.equal(d.x_train, torch.from_numpy(train).float() / 255)
    assert d.y_test.tolist() == made["test_batch"][1].tolist() and "not the official" in d.source
    assert [p.name for p in tmp_path.iterdir()] == ["cifar-10-batches-py"]  # nothing written
    assert sorted(p.name for p in (tmp_path / "cifar-10-batches-py").iterdir()) == sorted([*made, "batches.meta"])


def test_cifar10_missing_offline_names_where_the_files_go(tmp_path, monkeypatch):
    monkeypatch.setenv("OTBENCH_OFFLINE", "1")
    with pytest.raises(OTBenchError, match=r"cifar-10-batches-py and \$OTBENCH_OFFLINE forbids .*data_batch_1"):
        DATASETS.get("cifar10")(tmp_path)


def test_stl10_reads_torchvisions_binary_format(tmp_path):
    from torchvision import datasets

    from otbench.data import load_dataset

    _write_stl10(tmp_path)
    d = load_dataset("stl10", tmp_path)
    ref = datasets.STL10.__new__(datasets.STL10)  # torchvision's own reader, without its md5 check
    ref.root, ref.base_folder = str(tmp_path), "stl10_binary"
    for split, x, y in (("train", d.x_train, d.y_train), ("test", d.x_test, d.y_test)):
        images, labels = ref._STL10__loadfile(f"{split}_X.bin", f"{split}_y.bin")
        assert torch.equal(x, torch.from_numpy(images).float() / 255.0)
        assert y.tolist() == labels.tolist() and 0 <= y.min() and y.max() <= 9
    assert d.x_train.shape == (4, 3, 96, 96) and d.num_classes == 10


def test_stl10_missing_or_broken_files_are_clear_errors(tmp_path):
    from otbench.data import load_dataset

    (tmp_path / "no-stl").mkdir()
    with pytest.raises(OTBenchError, match="stl10_binary"):
        load_dataset("stl10", tmp_path / "no-stl")
    with pytest.raises(OTBenchError, match="does not exist"):  # a mistyped root: named, and not created
        load_dataset("stl10", tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()
    folder = _write_stl10(tmp_path)
    np.zeros(5, dtype=np.uint8).tofile(folder / "test_y.bin")  # 5 labels for 3 images
    with pytest.raises(OTBenchError, match="3 labels"):
        load_dataset("stl10", tmp_path)


def test_tiny_imagenet_reads_the_standard_layout(tmp_path):
    from PIL import Image

    from otbench.data import load_dataset

    folder = tmp_path / "tiny-imagenet-200"
    _write_tiny_imagenet(folder)
    d = load_dataset("tiny-imagenet", tmp_path)
    assert d.x_train.shape == (4, 3, 64, 64) and d.x_test.shape == (3, 3, 64, 64) and d.num_classes == 2
    assert d.y_train.tolist() == [0, 0, 1, 1] and d.y_test.tolist() == [1, 0, 1]  # wnids.txt order; val annotations
    with Image.open(folder / "val" / "images" / "val_2.JPEG") as im:
        ref = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).float() / 255
    assert torch.equal(d.x_test[2], ref)  # greyscale converted to RGB, values as PIL reads them


def test_tiny_imagenet_from_the_environment_and_its_errors(tmp_path, monkeypatch):
    from otbench.data import load_dataset

    (tmp_path / "empty").mkdir()
    with pytest.raises(OTBenchError, match="wnids.txt"):
        load_dataset("tiny-imagenet", tmp_path / "empty")
    folder = tmp_path / "elsewhere"
    _write_tiny_imagenet(folder)
    monkeypatch.setenv("OTBENCH_TINY_IMAGENET", str(folder))
    assert load_dataset("tiny-imagenet", tmp_path / "empty").num_classes == 2
    with open(folder / "val" / "val_annotations.txt", "a") as f:
        f.write("val_9.JPEG\tn99999999\t0\t0\t1\t1\n")
    (tmp_path / "empty-2").mkdir()
    with pytest.raises(OTBenchError, match="n99999999"):
        load_dataset("tiny-imagenet", tmp_path / "empty-2")


def test_cifar10_layout_is_torchvisions():
    """The loader writes torchvision's CIFAR10 file names out (so listing datasets never loads torchvision)."""
    from torchvision import datasets

    from otbench.data import cifar

    assert cifar.FOLDER == datasets.CIFAR10.base_folder
    assert cifar._TRAIN == [f for f, _ in datasets.CIFAR10.train_list]
    assert cifar._TEST == [f for f, _ in datasets.CIFAR10.test_list] and cifar._META == datasets.CIFAR10.meta["filename"]
