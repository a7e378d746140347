"""OTAD's regression half (Table V) on the real UCI red wine file: the dataset, the exact CIP step of
`otad-regression` against the cvxpy reference, the attack against random noise, the metrics, and
regression cells through the runner, the store (resume) and the report. Tiny models, seconds each."""
from __future__ import annotations

import csv
import warnings

import numpy as np
import pytest
import torch
from support import DATA

from otbench.data import eval_subset
from otbench.errors import OTBenchError
from otbench.guard import check_threat_model
from otbench.metrics import e_metric, mse, regression_metrics, smape
from otbench.registry import ATTACKS, DEFENSES, TABLES

WINE = DATA / "winequality" / "winequality-red.csv"
pytestmark = pytest.mark.skipif(not WINE.exists(), reason=f"wine quality data not found at {WINE}")

# 2 blocks, 15 epochs on the 1279 training wines: about a second, test MSE near 0.45
TINY_REG = {"blocks": 2, "residual": True, "epochs": 15, "batch_size": 64, "lr": 0.01, "momentum": 0.9,
            "weight_decay": 5e-4, "train_size": None, "seed": 0}


@pytest.fixture(scope="module")
def wine():
    from otbench.data import load_dataset

    return load_dataset("winequality-red", DATA)


@pytest.fixture(scope="module")
def regressor(wine):
    from otbench.defense import create_defense

    return create_defense("regressor", wine, "quick", {"train": dict(TINY_REG)})


@pytest.fixture(scope="module")
def otad_reg(wine, regressor):
    from otbench.defense import create_defense

    return create_defense("otad-regression", wine, "quick", {"train": dict(TINY_REG)})  # same cached regressor


def _batch_mse(defense, x, y) -> float:
    with torch.no_grad():
        return mse(defense.logits(x).reshape(-1).numpy(), y.numpy())


# -- the dataset ----------------------------------------------------------------------------------------
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


# -- the regression CIP path against the cvxpy reference -------------------------------------------------
def test_otad_regression_features_match_the_cvxpy_reference(otad_reg, wine):
    """The CIP features of a few real test wines at the regressor's feature dimension (d = 11): the first
    feasible relaxation step and eq. 16's solution, as tests/cip_reference.py poses them per point."""
    ref = pytest.importorskip("cip_reference", reason="needs cvxpy and clarabel")
    cfg = otad_reg.config["defense"]
    x = wine.x_test[:3]
    res = otad_reg.cip_features(x)
    idx = otad_reg.knn.search(x, cfg["K"])
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


# -- the metrics ------------------------------------------------------------------------------------------
def test_metrics_on_hand_computed_arrays():
    y, clean, adv = [5.0, 6.0, 7.0], [5.5, 6.0, 6.0], [6.0, 5.0, 7.5]
    assert mse(adv, y) == pytest.approx((1 + 1 + 0.25) / 3)
    assert e_metric(adv, clean) == pytest.approx((0.5 + 1 + 1.5) / 3)
    # residuals r = (0.5, 0, -1), r~ = (1, -1, 0.5): 2|r~ - r| / (|r~| + |r|) = 1/1.5, 2/1, 3/1.5
    assert smape(adv, clean, y) == pytest.approx((2 / 3 + 2 + 2) / 3)
    assert smape([5.0], [5.0], [5.0]) == 0.0  # 0/0 counts 0
    assert regression_metrics(y, clean, adv)["clean_mse"] == pytest.approx((0.25 + 0 + 1) / 3)
    with pytest.raises(ValueError, match="differ in size"):
        mse([1.0, 2.0], [1.0])


# -- regression cells through runner, store and report -------------------------------------------------
def test_regression_cell_stores_outputs_resumes_and_reports_mse(regressor, wine, tmp_path):
    from otbench.report.render import render_table
    from otbench.report.spec import Column, Row, TableSpec
    from otbench.runner import run_cell, run_suite
    from otbench.store import ResultStore

    store = ResultStore(tmp_path / "r.sqlite")
    first = run_cell(regressor, "gaussian-noise", 0.2, eval_subset(320, 20, seed=1), store, chunk_size=10,
                     progress=False)
    subset = eval_subset(320, 30, seed=1)  # 20 is a prefix of 30: two chunks are reused
    s = run_cell(regressor, "gaussian-noise", 0.2, subset, store, chunk_size=10, progress=False)
    assert (first.computed, s.computed, s.n) == (20, 10, 30) and s.clean_accuracy is None
    outs = store.outputs(s.cell_id)
    assert [o.sample_id for o in outs] == sorted(subset.ids)
    ids = torch.tensor([o.sample_id for o in outs])
    with torch.no_grad():
        clean = regressor.logits(wine.x_test[ids]).reshape(-1)
    np.testing.assert_allclose([o.clean_out for o in outs], clean.numpy(), rtol=1e-6)
    np.testing.assert_array_equal([o.target for o in outs], wine.y_test[ids].numpy())
    assert s.adv_mse == pytest.approx(mse([o.adv_out for o in outs], [o.target for o in outs]))
    assert s.clean_mse == pytest.approx(mse(clean.numpy(), wine.y_test[ids].numpy()), rel=1e-5)
    assert run_cell(regressor, "gaussian-noise", 0.2, subset, store, chunk_size=10, progress=False).computed == 0

    # the soundness checks skip what assumes labels; the runner keeps the regression cells intact
    suite = run_suite(regressor, {"gaussian-noise": [0.0, 0.2], "regression-l2": [0.2]}, subset, store,
                      {"regression-l2.steps": 5}, chunk_size=10, progress=False)
    assert not [f for f in suite.flags if f.level != "info"] and suite.worst_case == []

    spec = TableSpec("t5", "wine", "otad", "V", "winequality-red",
                     (Row("Random noise", "regressor", "Random noise", {"train": dict(TINY_REG)},
                          attack="gaussian-noise"),),
                     (Column("MSE0.2", "regression-l2", 0.2, "mse", "l2=0.2", paper_metric="MSE"),
                      Column("E0.2", "regression-l2", 0.2, "e", "l2=0.2", paper_metric="E")))
    render_table(spec, store, tmp_path / "rep", "quick")
    md = (tmp_path / "rep" / "t5.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| Random noise"))
    assert f"{s.adv_mse:.3f} / 0.404" in row and f"{s.e:.3f} / 0.043" in row  # measured beside the paper
    assert "test MSE" in md and "MSE, E and SMAPE" in md
    store.close()


def test_table_5_finds_every_published_value(tmp_path):
    from otbench.report.render import collect
    from otbench.store import ResultStore

    spec = TABLES.get("otad-table-5")()
    assert [r.attack for r in spec.rows] == ["regression-l2", "gaussian-noise", "regression-l2", "regression-l2"]
    store = ResultStore(tmp_path / "empty.sqlite")
    cells = collect(spec, store, "paper")
    assert len(cells) == 36 and all(c.paper is not None and c.status == "not run" for c in cells)
    otad_e05 = next(c for c in cells if c.row.label == "OTAD" and c.column.label == "E0.5")
    assert otad_e05.paper == 0.119


def test_table_5_is_on_z_scores_and_the_minmax_variant_has_the_same_rows():
    z, m = TABLES.get("otad-table-5")(), TABLES.get("otad-table-5-minmax")()
    assert (z.dataset, m.dataset) == ("winequality-red-z", "winequality-red")
    assert z.rows == m.rows and z.columns == m.columns and "z-scores" in z.note and "min-max" in m.note


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
