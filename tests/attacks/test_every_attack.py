"""After foolbox 3's tests: every registered attack, on tiny real-MNIST models, through the harness's guard.

A new attack must add its fast settings below (the first test fails until it does). Each classification
attack must lower accuracy within its threat model; a do-nothing attack fails."""
from __future__ import annotations

import pytest
import torch

from otbench.guard import check_threat_model
from otbench.registry import ATTACKS

# name -> (defense fixture, eps, fast settings); None: covered by its own tests (needs a special defense)
FAST = {
    "none": ("standard", 0.0, {}),
    "square": ("standard", 3.0, {"n_queries": 100}),
    "pgd": ("standard", 2.0, {"norm": "L2", "steps": 10}),
    "fgsm": ("standard", 0.3, {}),
    "eot-pgd": ("standard", 2.0, {"norm": "L2", "steps": 5, "eot_samples": 2}),
    "bpda-pgd": ("knn", 3.0, {"steps": 10}),
    "otad-exact-grad": ("otad", 3.0, {"steps": 10}),
    "ngopt-cw": ("standard", 0.2, {"budget": 60}),
    "cw-l2": ("standard", 0.2, {"steps": 50, "binary_search_steps": 2, "c": 1.0}),
    "bpda-cw-l2": ("knn", 0.2, {"steps": 50, "binary_search_steps": 2, "c": 1.0, "lr": 0.1}),
    "autoattack": ("standard", 0.3, {}),
    "class-mean-shift": ("standard", 6.0, {"candidates": 3}),
    "hopskipjump": ("standard", 3.0, {"max_queries": 300}),
    "sign-opt": ("standard", 3.0, {"max_queries": 200, "num_trial": 20, "k": 50}),
    "geoda": ("standard", 3.0, {"max_queries": 500}),
    "neighbour-shift": ("otad", 3.0, {"refine_queries": 50}),
    "neighbour-shift-labels": ("knn", 3.0, {}),
    "transfer-pgd": ("standard", 2.0, {"steps": 10}),
    "fab": ("standard", 3.0, {"steps": 20}),
    "deepfool": ("standard", 3.0, {"steps": 20}),
    "dml-attack": None,      # needs a metric network: tests/test_attacks_extra.py
    "regression-l2": None,   # needs a regression defense: tests/test_attacks_extra.py
    "gaussian-noise": None,  # random noise, not meant to lower accuracy: tests/test_regression.py
}


def test_every_registered_attack_has_fast_settings_here():
    assert set(ATTACKS.names()) == set(FAST), "add the new attack's fast settings to FAST"


@pytest.mark.parametrize("name", [n for n, v in FAST.items() if v is not None])
def test_attack_stays_in_its_threat_model_and_lowers_accuracy(request, test_batch, name):
    fixture, eps, cfg = FAST[name]
    defense = request.getfixturevalue(fixture)
    x, y = test_batch[0][:12], test_batch[1][:12]
    if name == "autoattack":
        x, y = x[:6], y[:6]
    attack = ATTACKS.get(name)(defense, eps, **cfg)
    out = attack(x, y, seed=0)
    check_threat_model(x, out.adv, attack.norm, attack.eps, name, attack.bounded)  # raises on a violation
    clean, adv = defense.predict(x) == y, defense.predict(out.adv) == y
    if name == "none":
        assert torch.equal(out.adv, x)
    else:
        assert adv.float().mean() < clean.float().mean(), f"{name} did not lower accuracy"
    assert torch.equal(ATTACKS.get(name)(defense, 0.0, **cfg)(x, y).adv, x) if attack.bounded else True


def test_otad_exact_gradient_matches_finite_differences(otad, test_batch):
    """The a.e. gradient of OTAD's output through the exact CIP solution (neighbour set held fixed)."""
    x, y = test_batch[0][:4].double(), test_batch[1][:4]
    model = otad.exact_module()
    xg = x.clone().float().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(model(xg), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, xg)
    assert grad.abs().sum() > 0
    v = torch.randn_like(xg)
    v /= v.norm()
    h = 1e-3
    with torch.no_grad():
        up = torch.nn.functional.cross_entropy(model((x + h * v).float()), y, reduction="sum")
        down = torch.nn.functional.cross_entropy(model((x - h * v).float()), y, reduction="sum")
    fd = (up - down) / (2 * h)
    assert torch.isclose(fd, (grad * v).sum(), rtol=0.05, atol=1e-3), (fd, (grad * v).sum())


def test_otad_exact_gradient_outputs_are_the_real_defense(otad, test_batch):
    x = test_batch[0][:6]
    with torch.no_grad():
        assert torch.allclose(otad.exact_module()(x), otad.logits(x))


def test_exact_gradient_attack_refuses_a_defense_without_one(knn):
    from otbench.errors import OTBenchError

    with pytest.raises(OTBenchError, match="bpda-pgd"):
        ATTACKS.get("otad-exact-grad")(knn, 2.0)
