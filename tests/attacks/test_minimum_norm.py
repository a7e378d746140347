"""Minimum-norm attacks (Attack.minimum_norm) and the robust accuracy curves built on them (otbench.curves), on a
tiny real-MNIST network through otbench.evaluate: each cell keeps the contract (a stored pert_norm > 0 is an
adversarial input's distance, within the cell's budget; 0 is the clean input), one cell at the largest budget
gives the robust accuracy of the cells at smaller budgets exactly (the searches never read eps), the curves fall
with eps, and the worst case takes per sample the smallest distance over the attacks. A do-nothing attack fails."""
from __future__ import annotations

import sqlite3

import pytest
import torch
from torch import nn

import otbench
from otbench.attacks import Attack, AttackOutput
from otbench.curves import area, distances, robust_accuracy, worst_distances
from otbench.registry import ATTACKS
from otbench.store import SampleRow

EPS = [0.75, 1.5, 2.5]
N = 16
SETTINGS = {"attack": {"fab.steps": 30, "hopskipjump.max_queries": 300}}


@pytest.fixture(scope="module")
def net(mnist):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for i in range(0, 3000, 50):
        opt.zero_grad()
        nn.functional.cross_entropy(model(mnist.x_train[i:i + 50]), mnist.y_train[i:i + 50]).backward()
        opt.step()
    return model.eval()


def stored_rows(db, cell_id):
    with sqlite3.connect(db) as con:
        return [SampleRow(*r) for r in con.execute(
            "SELECT sample_id, label, clean_pred, adv_pred, pert_norm, queries FROM samples WHERE cell_id = ?",
            (cell_id,))]


def assert_minimum_norm_cells(result, db):
    """What every minimum-norm evaluation must satisfy (a do-nothing attack fails the last assertions)."""
    table = result.table
    attacks = [a for a in result.distances if a != "worst-case"]
    assert attacks
    for attack in attacks:
        bound = result.bounds[attack]
        own = table[table.attack == attack].set_index("eps")
        assert bound == own.index.max()
        rows = stored_rows(db, own.loc[bound, "cell_id"])
        assert len(rows) == N
        for r in rows:  # the contract, per stored row
            if r.pert_norm > 0:
                assert r.adv_pred != r.label and r.pert_norm <= bound * (1 + 1e-5), (attack, r)
            else:
                assert r.adv_pred == r.clean_pred, (attack, r)
        assert distances(rows) == result.distances[attack]
        curve = result.curves[result.curves.attack == attack]
        assert list(curve.robust) == sorted(curve.robust, reverse=True)  # non-increasing in eps
        assert curve.robust.iloc[0] == own.clean.iloc[0]  # at eps 0: the clean accuracy
        for eps, row in own.iterrows():  # the cell at each smaller budget, read off the largest one's distances
            assert result.robust_at(eps, attack) == row.robust, (attack, eps)
        # the attack found adversarial inputs, at distances spread over the budget (not all at the bound)
        found = [d for d in result.distances[attack].values() if 0 < d < float("inf")]
        assert found and result.robust_at(bound, attack) < own.clean.iloc[0], attack
        assert 0 < area(result.distances[attack], bound) < own.clean.iloc[0]
    if len(attacks) > 1:
        worst = result.distances["worst-case"]
        assert worst == worst_distances([result.distances[a] for a in attacks])
        for eps, row in table[table.attack == attacks[0]].set_index("eps").iterrows():
            # the per-sample worst case over the run's cells at eps, from the cells; the curve's, from distances
            assert robust_accuracy(worst, eps) == row.worst_case, eps
            assert robust_accuracy(worst, eps) <= min(result.robust_at(eps, a) for a in attacks)


@pytest.mark.slow
def test_minimum_norm_curves_agree_with_the_fixed_budget_cells(tmp_path, net):
    db = tmp_path / "r.sqlite"
    result = otbench.evaluate(net, attacks=["fab", "deepfool", "hopskipjump"], eps=EPS, n=N, results=db,
                              device="cpu", settings=SETTINGS)
    assert_minimum_norm_cells(result, db)
    grid = result.curves[result.curves.attack == "worst-case"]
    assert grid.eps.max() == max(EPS) and set(EPS) <= set(grid.eps)


def test_curves_from_one_cell(tmp_path, net):
    """The fast one: FAB alone, two budgets."""
    db = tmp_path / "r.sqlite"
    result = otbench.evaluate(net, attacks=["fab"], eps=[1.0, 2.5], n=N, results=db, device="cpu",
                              settings={"attack": {"steps": 30}})
    assert_minimum_norm_cells(result, db)


class DoNothing(Attack):
    description = "claims to be minimum-norm and returns the clean inputs"
    needs = "labels"
    norms = ("L2",)
    defaults = {"norm": "L2"}
    minimum_norm = True

    def run(self, images, labels, seed):
        return AttackOutput(images.clone(), None)


def test_a_do_nothing_minimum_norm_attack_fails_the_checks(tmp_path, net):
    db = tmp_path / "r.sqlite"
    with ATTACKS.temporary("do-nothing-min-norm", DoNothing):
        result = otbench.evaluate(net, attacks=["do-nothing-min-norm"], eps=[1.0, 2.5], n=N, results=db,
                                  device="cpu")
    with pytest.raises(AssertionError):
        assert_minimum_norm_cells(result, db)
