"""Shared fixtures: real MNIST from $OTBENCH_DATA, tiny FC-ResNet defenses trained once per session."""
from __future__ import annotations

import os

import pytest
import torch
from support import DATA, TINY_TRAIN, mnist_available, tiny_overrides


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Tests train their own models into a private cache, never reading or filling the user's."""
    old = os.environ.get("OTBENCH_CACHE")
    os.environ["OTBENCH_CACHE"] = str(tmp_path_factory.mktemp("otbench-cache"))
    torch.set_num_threads(1)  # tiny models: a second thread costs more than it gives, most of all on shared CPUs
    yield
    if old is None:
        os.environ.pop("OTBENCH_CACHE", None)
    else:
        os.environ["OTBENCH_CACHE"] = old


@pytest.fixture(scope="session")
def mnist():
    if not mnist_available():
        pytest.skip(f"real MNIST not found under {DATA}/MNIST/raw")
    from otbench.data import load_dataset

    return load_dataset("mnist", DATA)


@pytest.fixture(scope="session")
def standard(mnist):
    from otbench.defense import create_defense

    return create_defense("standard", mnist, "quick", {"train": dict(TINY_TRAIN)})


@pytest.fixture(scope="session")
def otad(mnist):
    from otbench.defense import create_defense

    return create_defense("otad", mnist, "quick", tiny_overrides())


@pytest.fixture(scope="session")
def knn(mnist):
    from otbench.defense import create_defense

    return create_defense("knn", mnist, "quick", tiny_overrides())


@pytest.fixture(scope="session")
def test_batch(mnist):
    """40 real test images the tiny standard model mostly gets right."""
    from otbench.data import eval_subset

    ids = torch.tensor(eval_subset(len(mnist.x_test), 40, seed=0).ids)
    return mnist.x_test[ids], mnist.y_test[ids]
