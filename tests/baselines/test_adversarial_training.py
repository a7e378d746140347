"""PGD and FGSM adversarial training (pgd-at, fgsm-at) on the shared hook."""
from __future__ import annotations

import pytest
import torch
from support import TINY_TRAIN, evaluate_cell

from otbench.attacks.fgsm import FGSM
from otbench.data import eval_subset
from otbench.defense import build_config, create_defense
from otbench.errors import OTBenchError
from otbench.registry import ATTACKS, DEFENSES
from otbench.store import ResultStore

NAMES = ("pgd-at", "fgsm-at", "median-filter", "stl", "ape-gan")


def robust_accuracy(defense, attack: str, eps: float, x, y, **cfg) -> float:
    adv = ATTACKS.get(attack)(defense, eps, **cfg)(x, y, seed=0).adv
    return float(((defense.predict(adv) == y) & (defense.predict(x) == y)).float().mean())


@pytest.fixture(scope="session")
def pgd_at(mnist):
    # the same config as tests/test_analyses.py's pgd-at: one checkpoint per session
    return create_defense("pgd-at", mnist, "quick", {"train": {**TINY_TRAIN, "adv_steps": 5}})


@pytest.fixture(scope="session")
def fgsm_at(mnist):
    return create_defense("fgsm-at", mnist, "quick", {"train": dict(TINY_TRAIN)})


def test_registered_with_presets_and_declared_capabilities(capsys):
    from otbench.cli import main

    for name in NAMES:
        cls = DEFENSES.get(name)
        assert {"paper", "quick"} <= set(cls.presets) and cls.surrogate_description
        assert not cls.randomized
    assert DEFENSES.get("ape-gan").differentiable and DEFENSES.get("fgsm-at").differentiable
    assert not DEFENSES.get("median-filter").differentiable and not DEFENSES.get("stl").differentiable
    assert main(["list", "defenses"]) == 0
    listed = capsys.readouterr().out
    assert all(f"  {name} " in listed for name in NAMES)
    # the paper presets are the papers' settings, not the quick ones
    assert build_config(DEFENSES.get("fgsm-at"), "paper", None)["train"]["adv_eps"] == 0.1  # OTAD V-C
    assert build_config(DEFENSES.get("ape-gan"), "paper", None)["train"]["train_size"] is None


def test_madry_override_selects_the_ot_classifier_setting():
    from otbench.baselines.pgd_at import MADRY_MNIST
    from otbench.config import config_hash

    paper = build_config(DEFENSES.get("pgd-at"), "paper", None)["train"]
    madry = build_config(DEFENSES.get("pgd-at"), "paper", MADRY_MNIST)["train"]
    assert paper["adv_eps"] == 0.1 and madry["adv_eps"] == 0.3
    # Madry et al. on MNIST: 40 steps of 0.01
    assert madry["adv_steps"] == 40
    assert madry["adv_step_ratio"] * madry["adv_eps"] / madry["adv_steps"] == pytest.approx(0.01)
    assert config_hash(paper) != config_hash(madry)  # its own checkpoint


def test_pgd_at_is_more_robust_to_pgd_than_the_standard_net(pgd_at, standard, eval_batch):
    x, y = eval_batch
    cfg = {"norm": "Linf", "steps": 10}
    assert pgd_at.train_record["test_accuracy"] > 0.8
    std, adv_trained = (robust_accuracy(d, "pgd", 0.1, x, y, **cfg) for d in (standard, pgd_at))
    assert adv_trained > std + 0.15, (adv_trained, std)


def test_fgsm_training_examples_are_fgsm_and_keep_the_clean_share(standard, eval_batch):
    """The goodfellow hook against the harness's own FGSM attack: same examples, first half left clean."""
    from otbench.baselines.fgsm_at import FGSM_ADV, fgsm_perturbation

    x, y = eval_batch[0][:40], eval_batch[1][:40]
    net = standard.net
    out = fgsm_perturbation({**FGSM_ADV, "adv_eps": 0.2})(net, x, y)
    assert net.training  # the hook leaves the network in train mode (for the training step)
    net.eval()
    reference = FGSM(standard, 0.2)(x[20:], y[20:], seed=0).adv
    assert torch.equal(out[:20], x[:20])
    assert torch.allclose(out[20:], reference, atol=1e-6)
    wong = fgsm_perturbation({**FGSM_ADV, "fgsm_variant": "wong", "adv_clean_fraction": 0.0})(net, x, y)
    net.eval()
    assert (wong - x).abs().max() <= 0.1 + 1e-6 and not torch.equal(wong, out)


def test_fgsm_at_is_more_robust_to_fgsm_than_the_standard_net(fgsm_at, standard, eval_batch):
    x, y = eval_batch
    std, adv_trained = (robust_accuracy(d, "fgsm", 0.1, x, y) for d in (standard, fgsm_at))
    assert adv_trained > std + 0.1, (adv_trained, std)


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
    rob_at = evaluate_cell(at, "pgd", 0.1, subset, store, cfg, progress=False)
    rob_std = evaluate_cell(standard, "pgd", 0.1, subset, store, cfg, progress=False)
    assert rob_at.clean_accuracy > 0.6
    assert rob_at.robust_accuracy >= rob_std.robust_accuracy + 0.2, (rob_at, rob_std)
    store.close()
