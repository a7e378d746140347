"""Synthetic Gaussian classes (OTAD Table XIV) and the MERFISH loaders (Table IV)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from otbench.data import synthetic as syn
from otbench.errors import OTBenchError
from otbench.registry import DATASETS

# -- MERFISH: the loader, and OTAD on data of its shape ------------------------------------------------------
GENES, TYPES, CELLS = 500, 7, 700


def _merfish_like(seed=0):
    """Non-negative 'expression' with 7 cell types that differ in 20 marker genes each (well separated)."""
    return syn.merfish_like(CELLS, seed, shift=6.0)


def _write_csv(path, x, y, names):
    header = ",".join([f"gene{i}" for i in range(GENES)] + ["cell_type"])
    lines = [header] + [",".join([f"{v:.5f}" for v in row] + [names[k]]) for row, k in zip(x, y)]
    path.write_text("\n".join(lines) + "\n")


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
