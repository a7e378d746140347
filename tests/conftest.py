"""Shared fixtures: real MNIST and red wine from $OTBENCH_DATA, tiny defenses trained once per session."""
from __future__ import annotations

import os

import pytest
import torch
from support import (
    DATA,
    TINY_OTC,
    TINY_REG,
    TINY_STL,
    TINY_TRAIN,
    MetricNN,
    mnist_available,
    red_wine,
    tiny_overrides,
)
from hypothesis import HealthCheck, settings
from torch import nn

# Hypothesis (tests/core/test_generated_mistakes.py): a bounded run in CI, a longer one locally with
# HYPOTHESIS_PROFILE=long. No deadline: the first example pays for imports and registry loading.
_FIXTURES_OK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
settings.register_profile("ci", max_examples=50, deadline=None, suppress_health_check=_FIXTURES_OK)
settings.register_profile("long", max_examples=2000, deadline=None, suppress_health_check=_FIXTURES_OK)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


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


@pytest.fixture(scope="session")
def eval_batch(mnist):
    """The first 100 real test images."""
    return mnist.x_test[:100], mnist.y_test[:100]


@pytest.fixture(scope="session")
def metric_nn(standard, mnist):
    return MetricNN(standard.net, mnist.x_train[:500], mnist.y_train[:500])


@pytest.fixture(scope="session")
def median(mnist, standard):
    from otbench.defense import create_defense

    return create_defense("median-filter", mnist, "quick", {"train": dict(TINY_TRAIN), "defense": {"window": 3}})


@pytest.fixture(scope="session")
def stl(mnist, standard):
    from otbench.defense import create_defense

    return create_defense("stl", mnist, "quick", {"train": {**TINY_TRAIN, **TINY_STL}, "defense": {"iterations": 30}})


@pytest.fixture(scope="session")
def ot_cla(mnist):
    from otbench.defense import create_defense

    return create_defense("ot-cla", mnist, "quick", {"train": dict(TINY_OTC)})


@pytest.fixture(scope="session")
def e_cla(mnist):
    from otbench.defense import create_defense

    return create_defense("e-cla", mnist, "quick", {"train": dict(TINY_OTC)})


# -- red wine (OTAD Table V) ----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def wine():
    """The registered winequality-red dataset: the paper's split, scaled on the training part."""
    from otbench.data import load_dataset

    return load_dataset("winequality-red", DATA)


@pytest.fixture(scope="session")
def regressor(wine):
    from otbench.defense import create_defense

    return create_defense("regressor", wine, "quick", {"train": dict(TINY_REG)})


@pytest.fixture(scope="session")
def wine_mlp():
    """A small MLP fit to the raw red wine rows: (net, 100 held-out features, their quality)."""
    x, y = red_wine()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(11, 32), nn.ReLU(), nn.Linear(32, 1))
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(300):  # full batch on the first 1200 rows: about a second
        opt.zero_grad()
        nn.functional.mse_loss(net(x[:1200]).squeeze(1), y[:1200]).backward()
        opt.step()
    return net.eval(), x[1200:1300], y[1200:1300]
