import shutil
import stat

import pytest

from otbench.data import eval_subset, load_dataset
from otbench.data.base import _LOADED
from otbench.errors import OTBenchError

from support import DATA, needs_mnist


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


def _tree(path):
    return sorted((str(p.relative_to(path)), p.stat().st_size) for p in path.rglob("*"))


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
