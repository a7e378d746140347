"""The UCI red wine data (OTAD Table V): split, scaling and domains."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from support import DATA, TINY_REG

from otbench.errors import OTBenchError
from otbench.guard import check_threat_model
from otbench.registry import ATTACKS

WINE = DATA / "winequality" / "winequality-red.csv"


# 2 blocks, 15 epochs on the 1279 training wines: about a second, test MSE near 0.45
def test_split_sizes_and_train_only_minmax_scaling(wine):
    assert (len(wine.x_train), len(wine.x_test)) == (1279, 320)  # papers/otad.txt V-D3
    assert wine.input_shape == (11,) and wine.num_classes == 0
    assert wine.y_train.dtype == torch.float32 and set(wine.y_test.unique().tolist()) <= set(range(3, 9))
    with open(WINE) as f:
        raw = np.array([[float(v) for v in r] for r in list(csv.reader(f, delimiter=";"))[1:]])
    order = np.random.default_rng(0).permutation(len(raw))
    test, train = raw[order[:320]], raw[order[320:]]
    low, span = train[:, :11].min(0), np.ptp(train[:, :11], 0)
    np.testing.assert_allclose(wine.x_train.numpy(), (train[:, :11] - low) / span, atol=1e-6)
    np.testing.assert_allclose(wine.x_test.numpy(), np.clip((test[:, :11] - low) / span, 0, 1), atol=1e-6)
    np.testing.assert_array_equal(wine.y_test.numpy(), test[:, 11])
    # train statistics only: every training feature spans exactly [0, 1], the test split does not
    assert (wine.x_train.min(0).values == 0).all() and (wine.x_train.max(0).values == 1).all()
    assert not ((wine.x_test.min(0).values == 0).all() and (wine.x_test.max(0).values == 1).all())


# -- z-scored wine: an unbounded input domain -------------------------------------------------------------
def test_z_scored_wine_is_standardised_by_train_and_unbounded_for_the_attacks():
    from otbench.data import load_dataset
    from otbench.defense import create_defense

    z = load_dataset("winequality-red-z", DATA)
    assert z.domain is None and z.num_classes == 0 and (len(z.x_train), len(z.x_test)) == (1279, 320)
    assert torch.allclose(z.x_train.double().mean(0), torch.zeros(11, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(z.x_train.double().std(0, unbiased=False), torch.ones(11, dtype=torch.float64), atol=1e-4)
    assert torch.equal(z.y_test, load_dataset("winequality-red", DATA).y_test)  # the same split
    assert z.take_train(100).domain is None

    reg = create_defense("regressor", z, "quick", {"train": {**TINY_REG, "epochs": 2}})
    x, y = z.x_test[:64], z.y_test[:64]
    adv = ATTACKS.get("regression-l2")(reg, 0.5, steps=5)(x, y).adv
    assert adv.min() < 0 or adv.max() > 1  # z-scores are not clamped into [0, 1] (they were not there to start)
    norms = check_threat_model(x, adv, "L2", 0.5, "regression-l2", domain=None)
    assert norms.max() <= 0.5 * (1 + 1e-5)
    noisy = ATTACKS.get("gaussian-noise")(reg, 0.2)(x, y).adv
    norms = check_threat_model(x, noisy, "L2", 0.2, "gaussian-noise", domain=None)
    assert torch.allclose(norms, torch.full_like(norms, 0.2), rtol=1e-5)  # exactly eps: nothing clipped

    from otbench.attacks import Attack

    class UnitOnly(Attack):  # an attack that assumes [0, 1] (does not declare any_domain)
        name, needs, tasks = "unit-only", "nothing", ("regression",)

    with pytest.raises(OTBenchError, match=r"assumes inputs in \[0, 1\].*unbounded.*gaussian-noise.*regression-l2"):
        UnitOnly(reg, 0.2)
