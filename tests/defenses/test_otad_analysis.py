"""OTAD's analysis quantities (local Lipschitz constants, RE) and its pipeline on MERFISH-shaped data."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from support import TINY_TRAIN, evaluate_cell

from otbench.data import eval_subset
from otbench.data import synthetic as syn
from otbench.defense import create_defense
from otbench.defenses.otad.analysis import local_lipschitz, relative_error
from otbench.registry import DATASETS
from otbench.store import ResultStore


# -- the local Lipschitz estimator ---------------------------------------------------------------------------
def _matrix(singular, d_out=40, d_in=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(d_out, d_out, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(d_in, d_in, generator=g, dtype=torch.float64))
    s = torch.zeros(d_out, dtype=torch.float64)
    s[:len(singular)] = torch.tensor(singular, dtype=torch.float64)
    return U @ torch.diag(s) @ V[:, :d_out].T, V[:, 0]


# -- MERFISH: the loader, and OTAD on data of its shape ------------------------------------------------------
GENES, TYPES, CELLS = 500, 7, 700


def _merfish_like(seed=0):
    """Non-negative 'expression' with 7 cell types that differ in 20 marker genes each (well separated)."""
    return syn.merfish_like(CELLS, seed, shift=6.0)


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


def test_otad_pipeline_on_merfish_shaped_data(tmp_path, monkeypatch):
    """Table IV's pipeline end to end on synthetic data of MERFISH's shape: 4-block FC ResNet, OTAD, BPDA+PGD
    at eps 1 through the run plan (evaluate_cell); and the RE analysis on the same defense."""
    x, y = _merfish_like(1)
    np.savez(tmp_path / "m.npz", x=x, y=y)
    monkeypatch.setenv(syn.MERFISH_ENV, str(tmp_path / "m.npz"))
    data = DATASETS.get("merfish")(None)
    train = {**TINY_TRAIN, "blocks": 4, "epochs": 3, "train_size": None}
    otad = create_defense("otad", data, "quick", {"train": train})
    assert len(otad.net.blocks) == 4 and otad.train_record["test_accuracy"] > 0.8
    store = ResultStore(tmp_path / "r.sqlite")
    subset = eval_subset(len(data.x_test), 20, 0)
    s = evaluate_cell(otad, "bpda-pgd", 1.0, subset, store, {"steps": 10}, progress=False)
    assert s.n == 20 and s.clean_accuracy > 0.6 and s.robust_accuracy <= s.clean_accuracy
    re = relative_error(otad, data.x_test[:10])
    assert re.squared.shape == (10,) and torch.allclose(re.squared, re.plain ** 2)
    store.close()
