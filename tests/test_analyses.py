"""OTAD's analyses: the local Lipschitz estimator, the synthetic Gaussian classes, the MERFISH loader with
an OTAD pipeline on data of its shape, PGD adversarial training, and the analysis tables."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from otbench.defenses.otad.analysis import local_lipschitz, relative_error
from otbench.data import eval_subset
from otbench.data import synthetic as syn
from otbench.defense import create_defense
from otbench.errors import OTBenchError
from otbench.registry import DATASETS, TABLES
from otbench.runner import run_cell
from otbench.store import ResultStore

from support import DATA, TINY_TRAIN


# -- the local Lipschitz estimator ---------------------------------------------------------------------------
def _matrix(singular, d_out=40, d_in=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(d_out, d_out, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(d_in, d_in, generator=g, dtype=torch.float64))
    s = torch.zeros(d_out, dtype=torch.float64)
    s[:len(singular)] = torch.tensor(singular, dtype=torch.float64)
    return U @ torch.diag(s) @ V[:, :d_out].T, V[:, 0]


def test_lipschitz_of_a_linear_map_is_its_spectral_norm():
    """For T(x) = A x the ratio is ||A d|| / ||d||: its maximum is ||A||_2 = 3, reached at the top right
    singular vector. The ascent is then the power method, so it must find 3 to within a few percent; random
    directions alone see a typical singular value (a lower bound, far below 3 in 64 dimensions)."""
    A, v1 = _matrix([3.0, 2.0, 1.5, 1.0, 0.5])
    x = torch.rand(16, 1, 1, 64, dtype=torch.float64)
    T = lambda z: z.flatten(1) @ A.T  # noqa: E731
    est = local_lipschitz(T, x, radius=0.3, n_directions=8, ascent_steps=15)
    assert torch.allclose(est.ascent, torch.full((16,), 3.0, dtype=torch.float64), rtol=0.02)
    assert (est.ascent <= 3.0 * (1 + 1e-9)).all()  # a lower estimate: never above the true constant
    assert (est.random <= est.ascent).all() and est.random.mean() < 0.8 * 3.0
    # with the top singular vector among the directions tried, no ascent is needed
    exact = local_lipschitz(T, x, radius=0.3, n_directions=1, ascent_steps=0, init_directions=v1.view(1, 1, 1, -1))
    assert torch.allclose(exact.ascent, torch.full((16,), 3.0, dtype=torch.float64), rtol=1e-9)


def test_lipschitz_radius_matters_for_a_nonlinear_map():
    """T = ReLU(x - 1/2) * 2 has local constant 2 on the active side, 0 where every coordinate is off: the
    estimate sees the kink only when the radius reaches it."""
    T = lambda z: 2 * torch.relu(z.flatten(1) - 0.5)  # noqa: E731
    off = torch.full((4, 8), 0.2, dtype=torch.float64)
    assert local_lipschitz(T, off, radius=0.1, ascent_steps=5).ascent.max() == 0
    assert local_lipschitz(T, torch.full((4, 8), 0.9, dtype=torch.float64), radius=0.1,
                           ascent_steps=5).ascent.min() == pytest.approx(2.0, rel=1e-6)


# -- the synthetic Gaussian classes ---------------------------------------------------------------------------
def test_gaussian_class_means_lie_on_the_unit_sphere():
    mu = syn.class_means()
    assert mu.shape == (syn.CLASSES, 128)
    np.testing.assert_allclose(np.linalg.norm(mu, axis=1), 1.0, rtol=1e-12)
    # and the data are built from them: training class averages, mapped back, are near the means
    d = DATASETS.get("gaussian-sphere-0.1")(None)
    x = (d.x_train.flatten(1).double().numpy() - 0.5) * syn.SCALE
    est = np.stack([x[d.y_train.numpy() == k].mean(0) for k in range(syn.CLASSES)])
    np.testing.assert_allclose(np.linalg.norm(est, axis=1), 1.0, atol=0.02)
    assert np.abs(est - mu).max() < 0.02


def test_bayes_margin_is_the_distance_to_the_nearest_mean_boundary():
    """The margin equals, found by bisection, the shortest move along some mu_j - mu_y that leaves class y's
    nearest-mean region (a convex polytope: its boundary is nearest along a facet normal)."""
    means = syn.class_means(classes=5, dim=16)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 30)
    x = means[y] + 0.1 * rng.standard_normal((30, 16))
    m = syn.bayes_margins(x, y, means)
    nearest = lambda p: int(((means - p) ** 2).sum(1).argmin())  # noqa: E731
    for i in range(30):
        exits = []
        for j in set(range(5)) - {int(y[i])}:
            u = (means[j] - means[y[i]]) / np.linalg.norm(means[j] - means[y[i]])
            lo, hi = 0.0, 4.0
            for _ in range(60):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if nearest(x[i] + mid * u) == y[i] else (lo, mid)
            exits.append(hi)
        assert m[i] > 0 and abs(min(exits) - m[i]) < 1e-9, (i, m[i], min(exits))


def test_gaussian_datasets_are_deterministic_in_range_and_harder_as_std_grows():
    names = [f"gaussian-sphere-{s:g}" for s in syn.STDS]
    assert set(names) <= set(DATASETS.names())
    accs = []
    for name in names:
        d = DATASETS.get(name)(None)
        assert d.x_train.shape == (50_000, 1, 1, 128) and d.x_test.shape == (10_000, 1, 1, 128)
        assert d.num_classes == syn.CLASSES and 0 <= d.x_train.min() and d.x_train.max() <= 1
        # nearest class mean, the means estimated on the training split (a simple classifier, fitted)
        xtr, xte = d.x_train.flatten(1).double(), d.x_test.flatten(1).double()
        means = torch.stack([xtr[d.y_train == k].mean(0) for k in range(d.num_classes)])
        accs.append((torch.cdist(xte, means).argmin(1) == d.y_test).double().mean().item())
    assert torch.equal(DATASETS.get(names[0])(None).x_test, DATASETS.get(names[0])(None).x_test)
    assert accs[0] > 0.99 and accs[-1] < 0.7
    assert all(a > b for a, b in zip(accs, accs[1:])), accs  # falls strictly from std 0.1 to 0.6


# -- MERFISH: the loader, and OTAD on data of its shape ------------------------------------------------------
GENES, TYPES, CELLS = 500, 7, 700


def _merfish_like(seed=0):
    """Non-negative 'expression' with 7 cell types that differ in 20 marker genes each (well separated)."""
    return syn.merfish_like(CELLS, seed, shift=6.0)


def test_merfish_synthetic_has_merfish_shape_and_learnable_types():
    data = DATASETS.get("merfish-synthetic")(None)
    assert data.input_dim == GENES and data.num_classes == TYPES
    assert (len(data.x_train), len(data.x_test)) == (4000, 1000)
    assert data.x_train.min() >= 0 and data.x_train.max() <= 1
    # marker genes carry the type: the mean of type k's own markers is the largest among the types
    x, y = data.x_train.flatten(1), data.y_train
    for k in range(TYPES):
        own = x[:, k * 20:(k + 1) * 20].mean(1)
        assert own[y == k].mean() > max(own[y == j].mean() for j in range(TYPES) if j != k) + 0.05


def _write_csv(path, x, y, names):
    header = ",".join([f"gene{i}" for i in range(GENES)] + ["cell_type"])
    lines = [header] + [",".join([f"{v:.5f}" for v in row] + [names[k]]) for row, k in zip(x, y)]
    path.write_text("\n".join(lines) + "\n")


def test_merfish_loader_reads_csv_and_npz(tmp_path, monkeypatch):
    x, y = _merfish_like()
    names = ["amacrine", "bipolar", "cone", "ganglion", "horizontal", "muller", "rod"]
    (tmp_path / "merfish").mkdir()
    _write_csv(tmp_path / "merfish" / "merfish.csv", x, y, names)
    monkeypatch.delenv(syn.MERFISH_ENV, raising=False)
    from_csv = DATASETS.get("merfish")(tmp_path)  # <root>/merfish/merfish.csv
    npz = tmp_path / "cells.npz"
    np.savez(npz, x=x, y=y)
    monkeypatch.setenv(syn.MERFISH_ENV, str(npz))
    from_npz = DATASETS.get("merfish")(tmp_path / "elsewhere")  # the variable wins over the root
    for d in (from_csv, from_npz):
        assert d.num_classes == TYPES and d.input_dim == GENES and d.input_shape == (1, 1, GENES)
        assert len(d.x_train) == 560 and len(d.x_test) == 140  # 80/20 by the fixed split seed
        assert d.x_train.min() == 0 and d.x_train.max() == 1 and 0 <= d.x_test.min() and d.x_test.max() <= 1
        assert d.x_train.amax(0).min() == 1  # every gene scaled by its own training range
    # string labels sort as the integers did; same split, same values up to the CSV's 5 decimals
    assert torch.equal(from_csv.y_train, from_npz.y_train)
    assert torch.allclose(from_csv.x_train, from_npz.x_train, atol=1e-3)
    assert "rod" in from_csv.source
    # an explicit split is honoured; a missing file and an .h5ad without anndata are clear errors
    np.savez(npz, x_train=x[:600], y_train=y[:600], x_test=x[600:], y_test=y[600:])
    assert len(DATASETS.get("merfish")(None).x_test) == 100
    monkeypatch.delenv(syn.MERFISH_ENV)
    with pytest.raises(OTBenchError, match="merfish"):
        DATASETS.get("merfish")(tmp_path / "nothing")
    (tmp_path / "merfish" / "merfish.csv").unlink()
    (tmp_path / "merfish" / "merfish.h5ad").write_bytes(b"")
    try:
        import anndata  # noqa: F401
    except ImportError:
        with pytest.raises(OTBenchError, match="anndata"):
            DATASETS.get("merfish")(tmp_path)


def test_otad_pipeline_on_merfish_shaped_data(tmp_path, monkeypatch):
    """Table IV's pipeline end to end on synthetic data of MERFISH's shape: 4-block FC ResNet, OTAD, BPDA+PGD
    at eps 1 through run_cell; and the RE analysis on the same defense."""
    x, y = _merfish_like(1)
    np.savez(tmp_path / "m.npz", x=x, y=y)
    monkeypatch.setenv(syn.MERFISH_ENV, str(tmp_path / "m.npz"))
    data = DATASETS.get("merfish")(None)
    train = {**TINY_TRAIN, "blocks": 4, "epochs": 3, "train_size": None}
    otad = create_defense("otad", data, "quick", {"train": train})
    assert len(otad.net.blocks) == 4 and otad.train_record["test_accuracy"] > 0.8
    store = ResultStore(tmp_path / "r.sqlite")
    subset = eval_subset(len(data.x_test), 20, 0)
    s = run_cell(otad, "bpda-pgd", 1.0, subset, store, {"steps": 10}, progress=False)
    assert s.n == 20 and s.clean_accuracy > 0.6 and s.robust_accuracy <= s.clean_accuracy
    re = relative_error(otad, data.x_test[:10])
    assert re.squared.shape == (10,) and torch.allclose(re.squared, re.plain ** 2)
    store.close()


# -- PGD adversarial training ------------------------------------------------------------------------------
def test_pgd_at_trains_on_adversarial_inputs(mnist, standard):
    from otbench.common.adversarial import pgd_perturbation

    cfg = {"adv_norm": "Linf", "adv_eps": 0.1, "adv_steps": 5, "adv_step_ratio": 2.5, "adv_random_start": True}
    net = standard.net
    x, y = mnist.x_test[:64], mnist.y_test[:64]
    net.train()
    try:
        adv = pgd_perturbation(cfg)(net, x, y)
        assert net.training  # the hook leaves the network in train mode
    finally:
        net.eval()
    delta = (adv - x).abs()
    assert delta.max() <= 0.1 + 1e-6 and delta.max() > 0.05 and 0 <= adv.min() and adv.max() <= 1
    ce = torch.nn.functional.cross_entropy
    with torch.no_grad():
        assert ce(net(adv), y) > ce(net(x), y) + 0.5  # they are adversarial
    try:
        l2 = pgd_perturbation({**cfg, "adv_norm": "L2", "adv_eps": 1.0})(net, x, y)
    finally:
        net.eval()
    assert (l2 - x).flatten(1).norm(dim=1).max() <= 1.0 + 1e-5
    with pytest.raises(OTBenchError, match="adv_norm"):
        pgd_perturbation({**cfg, "adv_norm": "L1"})


def test_pgd_at_is_more_robust_than_standard_on_the_same_budget(mnist, standard, tmp_path):
    adv_train = {**TINY_TRAIN, "adv_norm": "Linf", "adv_eps": 0.1, "adv_steps": 5, "adv_step_ratio": 2.5,
                 "adv_random_start": True}
    at = create_defense("pgd-at", mnist, "quick", {"train": adv_train})
    store = ResultStore(tmp_path / "r.sqlite")
    subset = eval_subset(len(mnist.x_test), 100, 0)
    cfg = {"norm": "Linf", "steps": 10}
    rob_at = run_cell(at, "pgd", 0.1, subset, store, cfg, progress=False)
    rob_std = run_cell(standard, "pgd", 0.1, subset, store, cfg, progress=False)
    assert rob_at.clean_accuracy > 0.6
    assert rob_at.robust_accuracy >= rob_std.robust_accuracy + 0.2, (rob_at, rob_std)
    store.close()


# -- the tables ---------------------------------------------------------------------------------------------
def test_analysis_tables_are_registered_with_the_papers_values(tmp_path):
    from otbench.papers.otad.analyses import collect_analysis, render_analysis

    assert {"otad-table-4", "otad-table-13", "otad-table-14", "otad-figure-2"} <= set(TABLES.names())
    store = ResultStore(tmp_path / "r.sqlite")
    t14 = collect_analysis(TABLES.get("otad-table-14")(), store, "paper")
    papers = {(v.section.label, v.metric.kind): v.paper for v in t14 if v.row.defense == "otad" and not v.metric.attack}
    shift = [v for v in t14 if v.metric.attack == "class-mean-shift"]
    assert len(shift) == 12 and all(v.paper is None for v in shift)  # one per row; not in the paper
    assert papers[("std=0.3", "net_test_accuracy")] == 99.0 and papers[("std=0.6", "re")] == 0.5876
    assert papers[("std=0.2", "robust")] == 75.78 and all(v.status == "not run" for v in t14 if v.paper is not None)
    t13 = collect_analysis(TABLES.get("otad-table-13")(), store, "paper")
    papers = {(v.section.label, v.row.label, v.metric.kind): v.paper for v in t13}
    assert papers[("Fashion-MNIST", "Plain net", "robust")] == 47.6
    assert papers[("MNIST", "ResNet", "net_test_accuracy")] == 98.16
    fig = TABLES.get("otad-figure-2")()
    paths = render_analysis(fig, store, tmp_path / "out", "paper")
    assert "5.6" in paths[1].read_text()  # the ResNet's Lipschitz constant from the text
    t4 = TABLES.get("otad-table-4")()
    from otbench.report.render import collect

    assert sorted(c.paper for c in collect(t4, store, "paper")) == [67.9, 73.9, 81.6, 86.6]
    store.close()


def test_analysis_table_fills_and_renders_from_the_store(mnist, tmp_path):
    """A one-row figure on the tiny OTAD: fill runs the attack cell and both analyses, render shows them and
    draws the figure; a second fill computes nothing."""
    from otbench.report.spec import Row
    from otbench.papers.otad.analyses import AnalysisTable, Metric, Section, collect_analysis

    tiny = {"train": dict(TINY_TRAIN)}
    table = AnalysisTable(
        name="tiny-figure", title="tiny", paper="otad", paper_table="2", dataset="mnist", rows=(), columns=(),
        figure=True, sections=(Section("MNIST", "mnist", "bpda-pgd", 3.0,
                                       (Row("OTAD L-l=2", "otad", None, {**tiny, "defense": {"L": 2.0}}),
                                        Row("ResNet", "standard", None, tiny)), {"steps": 5}),),
        metrics=(Metric("Standard Acc", "clean"), Metric("Robust Acc", "robust"), Metric("Lip", "lipschitz"),
                 Metric("RE", "re", digits=4), Metric("net", "net_test_accuracy")),
        lipschitz={"radius": 0.3, "n_directions": 2, "ascent_steps": 2, "seed": 0}, figure_x={"OTAD L-l=2": 2.0})
    store = ResultStore(tmp_path / "r.sqlite")
    args = argparse.Namespace(preset="quick", n=8, subset_seed=0, seed=0, chunk=8, device="cpu", data_root=str(DATA),
                              quiet=True)
    table.fill(store, args)
    values = {(v.row.label, v.metric.kind): v for v in collect_analysis(table, store, "quick")}
    assert values[("OTAD L-l=2", "re")].status == "measured" and values[("OTAD L-l=2", "re")].n == 8
    assert values[("ResNet", "re")].status == "n/a"
    assert values[("ResNet", "lipschitz")].measured > 0 and values[("OTAD L-l=2", "lipschitz")].n == 8
    assert values[("OTAD L-l=2", "net_test_accuracy")].measured > 50
    paths = table.render(store, tmp_path / "out", "quick")
    assert [p.suffix for p in paths] == [".csv", ".md", ".png"]
    assert "| MNIST | ResNet |" in paths[1].read_text()
    n_rows = store.db.execute("SELECT COUNT(*) FROM analyses").fetchone()[0]
    table.fill(store, args)  # nothing missing: nothing recomputed
    assert store.db.execute("SELECT COUNT(*) FROM analyses").fetchone()[0] == n_rows == 3
    store.close()


def test_exact_knn_is_exact_where_the_float32_certificate_fails():
    """Near-equidistant high-dimensional Gaussian points defeat ExactKNN's float32 certificate for almost
    every query; the band re-ranking that replaces the full float64 search must still give the exact answer."""
    from otbench.common.neighbours import ExactKNN

    d = DATASETS.get("gaussian-sphere-0.1")(None)
    train, x = d.x_train.flatten(1)[:20000], d.x_test.flatten(1)[:64]
    knn = ExactKNN(train)
    got = knn.search(x, 10)
    assert knn.fallbacks > 32
    dist = torch.cdist(x.double(), train.double()).pow(2)
    assert torch.equal(got, torch.argsort(dist, dim=1, stable=True)[:, :10])
