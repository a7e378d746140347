"""The threat-model guard: every perturbation within eps and inside the input domain, enforced by the harness."""
from __future__ import annotations

import pytest
import torch
from support import Overstep, evaluate_cell

from otbench.data import eval_subset
from otbench.errors import ThreatModelViolation
from otbench.guard import check_threat_model
from otbench.store import ResultStore


def test_guard_accepts_within_eps_and_rejects_outside():
    x = torch.full((4, 1, 4, 4), 0.5)
    d = torch.zeros_like(x)
    d[:, 0, 0, 0] = 0.2
    assert torch.allclose(check_threat_model(x, x + d, "L2", 0.2), torch.full((4,), 0.2, dtype=torch.float64))
    with pytest.raises(ThreatModelViolation, match="overstepped"):
        check_threat_model(x, x + d, "L2", 0.1)
    with pytest.raises(ThreatModelViolation, match="overstepped"):
        check_threat_model(x, x + d, "Linf", 0.19)
    with pytest.raises(ThreatModelViolation, match=r"\[0, 1\]"):
        check_threat_model(x, x + 0.6, "Linf", 1.0)


def test_guard_checks_the_datasets_domain_and_skips_it_when_unbounded():
    x = torch.zeros(3, 11)
    d = torch.zeros_like(x)
    d[:, 0] = -0.3
    with pytest.raises(ThreatModelViolation, match=r"\[0, 1\]"):
        check_threat_model(x, x + d, "L2", 0.5)
    with pytest.raises(ThreatModelViolation, match=r"input domain \[-1, 0\.5\]"):
        check_threat_model(x + 5, x + 5 + d, "L2", 0.5, domain=(-1.0, 0.5))
    far = x + 7.0  # z-scores: far outside [0, 1] and accepted when the domain is unbounded
    norms = check_threat_model(far, far + d, "L2", 0.5, domain=None)
    assert torch.allclose(norms, torch.full((3,), 0.3, dtype=torch.float64))
    with pytest.raises(ThreatModelViolation, match="overstepped"):  # eps still enforced
        check_threat_model(far, far + d, "L2", 0.2, domain=None)


def test_runner_refuses_to_store_an_overstepping_attack(standard, tmp_path):
    from otbench.registry import ATTACKS

    store = ResultStore(tmp_path / "r.sqlite")
    subset = eval_subset(len(standard.data.x_test), 6, seed=0)
    with ATTACKS.temporary("overstep", Overstep), pytest.raises(ThreatModelViolation):
        evaluate_cell(standard, "overstep", 1.0, subset, store, progress=False)
    assert sum(len(store.rows(c["cell_id"])) for c in store.cells()) == 0
