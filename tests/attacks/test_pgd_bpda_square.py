"""PGD, BPDA + PGD and Square on tiny real-MNIST defenses."""
from __future__ import annotations

import pytest
import torch
import torchattacks

from otbench.errors import OTBenchError
from otbench.guard import perturbation_norms
from otbench.registry import ATTACKS


def accuracy(defense, x, y):
    return (defense.predict(x) == y).float().mean().item()


@pytest.mark.parametrize("name,eps,cfg", [
    ("square", 3.0, {"norm": "L2", "n_queries": 150}),
    ("square", 0.3, {"norm": "Linf", "n_queries": 150}),
    ("pgd", 2.0, {"norm": "L2", "steps": 20}),
    ("pgd", 0.2, {"norm": "Linf", "steps": 20}),
    ("bpda-pgd", 2.0, {"norm": "L2", "steps": 20}),
])
def test_attack_lowers_accuracy_of_the_standard_model_within_eps(standard, test_batch, name, eps, cfg):
    x, y = test_batch
    atk = ATTACKS.get(name)(standard, eps, **cfg)
    out = atk(x, y, seed=0)
    assert perturbation_norms(x, out.adv, cfg["norm"]).max() <= eps * (1 + 1e-5) + 1e-6
    assert accuracy(standard, out.adv, y) < accuracy(standard, x, y) - 0.3


def test_bpda_forward_is_the_real_defense_and_backward_the_surrogate(knn, test_batch):
    from otbench.attacks.bpda_pgd import BPDAModule

    x = test_batch[0][:6].clone().requires_grad_(True)
    out = BPDAModule(knn)(x)
    assert torch.allclose(out, knn.logits(x.detach()))
    assert not torch.allclose(out, knn.net(x.detach()))  # the surrogate alone would give other scores
    (grad,) = torch.autograd.grad(out[:, 0].sum(), x)
    x2 = x.detach().clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(knn.net(x2)[:, 0].sum(), x2)
    assert torch.allclose(grad, ref)


def test_bpda_pgd_lowers_accuracy_of_a_non_differentiable_defense(knn, test_batch):
    x, y = test_batch
    out = ATTACKS.get("bpda-pgd")(knn, 3.0, steps=20)(x, y, seed=0)
    assert accuracy(knn, out.adv, y) < accuracy(knn, x, y)


def test_square_counts_queries(standard, test_batch):
    x, y = test_batch
    out = ATTACKS.get("square")(standard, 3.0, n_queries=50)(x, y, seed=0)
    correct = standard.predict(x) == y
    assert out.queries is not None and (out.queries[~correct] == 0).all()
    assert out.queries[correct].min() >= 1 and out.queries.max() <= 51


def test_gradient_attack_refuses_a_non_differentiable_defense(otad):
    with pytest.raises(OTBenchError, match="bpda-pgd"):
        ATTACKS.get("pgd")(otad, 2.0)


def test_bad_attack_settings_are_named(standard):
    with pytest.raises(OTBenchError, match="valid: L2, Linf"):
        ATTACKS.get("square")(standard, 2.0, norm="L1")
    with pytest.raises(OTBenchError, match="unknown square attack setting 'queries'"):
        ATTACKS.get("square")(standard, 2.0, queries=5)
    with pytest.raises(OTBenchError, match="eps must be 0"):
        ATTACKS.get("none")(standard, 2.0)


def test_eps_zero_returns_the_clean_inputs(standard, test_batch):
    x, y = test_batch
    for name in ("square", "pgd", "bpda-pgd"):
        assert torch.equal(ATTACKS.get(name)(standard, 0.0)(x, y).adv, x)


@pytest.mark.parametrize("defense_name", ["standard", "otad"])
def test_torchattacks_leaves_the_defense_unchanged(request, test_batch, defense_name):
    """torchattacks restores the module's train flag after attacking; BatchNorm must stay in eval."""
    defense = request.getfixturevalue(defense_name)
    x, y = test_batch
    before = defense.logits(x[:8]).detach().clone()
    module = defense.module().train()  # left in train mode, as a careless caller would
    torchattacks.Square(module, norm="L2", eps=2.0, n_queries=5, seed=0)(x[:8], y[:8])
    assert module.training  # torchattacks restored the flag...
    assert not defense.net.training  # ...but it never reached the network
    assert torch.equal(defense.logits(x[:8]).detach(), before)
