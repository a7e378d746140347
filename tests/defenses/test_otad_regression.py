"""The red wine regressors of Table V: OTAD for regression against the cvxpy reference, regression-l2 and gaussian-noise on them, and task mismatches refused clearly."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from support import DATA, TINY_REG

from otbench.errors import OTBenchError
from otbench.guard import check_threat_model
from otbench.metrics import mse
from otbench.registry import ATTACKS, DEFENSES


# 2 blocks, 15 epochs on the 1279 training wines: about a second, test MSE near 0.45
@pytest.fixture(scope="module")
def otad_reg(wine, regressor):
    from otbench.defense import create_defense

    return create_defense("otad-regression", wine, "quick", {"train": dict(TINY_REG)})  # same cached regressor


def _batch_mse(defense, x, y) -> float:
    with torch.no_grad():
        return mse(defense.logits(x).reshape(-1).numpy(), y.numpy())


# -- the regression CIP path against the cvxpy reference -------------------------------------------------
def test_otad_regression_features_match_the_cvxpy_reference(otad_reg, wine):
    """The CIP features of a few real test wines at the regressor's feature dimension (d = 11): the first
    feasible relaxation step and eq. 16's solution, as otbench/defenses/otad/reference.py poses them per point."""
    ref = pytest.importorskip("otbench.defenses.otad.reference", reason="needs cvxpy and clarabel")
    cfg = otad_reg.config["defense"]
    x = wine.x_test[:3]
    res = otad_reg.cip_features(x)
    idx = otad_reg.knn.search(x, cfg["K"]).sort(1).values  # the CIP's order: potentials follow it
    X, Z = otad_reg.train_flat[idx].double().numpy(), otad_reg.bank[idx].double().numpy()
    assert X.shape == (3, 10, 11) and (res.steps > 0).any()  # real neighbourhoods need relaxation

    def relaxed(k: int) -> tuple[float, float]:  # (L, l) after k relaxation steps of Algorithm 2
        return cfg["L"] + k * cfg["delta1"], cfg["l"] - k * cfg["delta2"]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for b in range(3):
            s = int(res.steps[b])
            assert ref.potentials_lp(X[b], Z[b], *relaxed(s))[0]  # feasible at s ...
            assert s == 0 or not ref.potentials_lp(X[b], Z[b], *relaxed(s - 1))[0]  # ... and not before
            w = ref.eq15_weights(X[b], Z[b], *relaxed(s))
            U = res.potentials[b].numpy()
            assert (U[:, None] - U[None, :] - w)[~np.eye(10, dtype=bool)].min() >= -1e-9 * np.abs(w).max()
            g_ref, _ = ref.features_qcp(x[b].double().numpy(), X[b], Z[b], U, cfg["L"], cfg["l"], cfg["formulation"])
            g = res.features[b].numpy()
            assert np.linalg.norm(g - g_ref) <= 1e-5 * np.linalg.norm(g_ref), b
    with torch.no_grad():  # and the prediction is the regression head on that feature
        head = otad_reg.net.head(torch.tensor(np.stack([res.features[b].numpy() for b in range(3)])).float())
        torch.testing.assert_close(otad_reg.logits(x), head)


# -- refusals -------------------------------------------------------------------------------------------
def test_classification_attacks_and_defenses_refuse_regression_clearly(regressor, capsys):
    from otbench.cli import main

    with pytest.raises(OTBenchError, match="'square' applies to classification defenses, but 'regressor' is a "
                                           "regression defense"):
        ATTACKS.get("square")(regressor, 0.2)
    assert main(["run", "--defense", "regressor", "--attack", "square", "--dataset", "winequality-red",
                 "--data-root", str(DATA), "--eps", "0.2"]) == 2
    assert "applies to classification defenses" in capsys.readouterr().err
    assert main(["run", "--defense", "standard", "--attack", "none", "--dataset", "winequality-red",
                 "--data-root", str(DATA)]) == 2
    assert "'standard' is a classification defense and dataset 'winequality-red' is a regression" in \
        capsys.readouterr().err
    for name in ("regressor", "otad-regression", "regressor-at"):
        assert DEFENSES.get(name).task == "regression"


# -- the attack against random noise --------------------------------------------------------------------
def test_regression_l2_raises_the_mse_more_than_noise_of_the_same_norm(regressor, wine):
    x, y = wine.x_test[:100], wine.y_test[:100]
    eps = 0.2
    adv = ATTACKS.get("regression-l2")(regressor, eps, steps=20)(x, y, seed=0).adv
    noisy = ATTACKS.get("gaussian-noise")(regressor, eps)(x, y, seed=0).adv
    adv_norms = check_threat_model(x, adv, "L2", eps)
    noise_norms = check_threat_model(x, noisy, "L2", eps)
    assert adv_norms.max() > 0.9 * eps and noise_norms.max() > 0.99 * eps  # clipping only shrinks noise
    clean, attacked, random = (_batch_mse(regressor, t, y) for t in (x, adv, noisy))
    assert clean < 0.85 * y.var().item()  # the tiny regressor beats the mean
    assert attacked > 1.5 * random and random < 1.5 * clean


def test_gaussian_noise_is_seeded_and_exactly_eps_before_clipping(regressor, wine):
    x = torch.full((8, 11), 0.5)  # far from the box: no clipping
    attack = ATTACKS.get("gaussian-noise")(regressor, 0.3)
    a, b = attack(x, torch.zeros(8), seed=3).adv, attack(x, torch.zeros(8), seed=3).adv
    assert torch.equal(a, b) and not torch.equal(a, attack(x, torch.zeros(8), seed=4).adv)
    torch.testing.assert_close((a - x).norm(dim=1), torch.full((8,), 0.3), rtol=1e-5, atol=1e-6)
