"""Fixtures of the leaderboard tests: a results store filled through the real runner on real MNIST (site_support.py
says what it holds) and the test's minimum-norm attack, registered while a test runs."""
from __future__ import annotations

import pytest
from site_support import FIXED_EPS, MIN_NORM_EPS, N, min_norm_attack


@pytest.fixture
def min_norm_registered():
    with min_norm_attack() as name:
        yield name


@pytest.fixture(scope="session")
def leaderboard_store(tmp_path_factory, standard, knn):
    """The path of a results database with cells of two defenses (site_support.py)."""
    from otbench.data import eval_subset
    from support import evaluate_cell
    from otbench.store import ResultStore

    path = tmp_path_factory.mktemp("leaderboard") / "results.sqlite"
    store = ResultStore(path)
    subset = eval_subset(len(standard.data.x_test), N, seed=0)
    square = {"n_queries": 20, "norm": "L2"}
    with min_norm_attack() as mn:
        for defense in (standard, knn):
            for eps in FIXED_EPS:
                evaluate_cell(defense, "square", eps, subset, store, square, chunk_size=N, progress=False)
            evaluate_cell(defense, mn, MIN_NORM_EPS, subset, store, {}, chunk_size=N, progress=False)
        for eps in FIXED_EPS:
            evaluate_cell(standard, "pgd", eps, subset, store, {"norm": "L2", "steps": 5}, chunk_size=N, progress=False)
    store.close()
    return path
