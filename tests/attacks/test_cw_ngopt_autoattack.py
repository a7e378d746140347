"""ngopt-cw, cw-l2 and autoattack on tiny real-MNIST defenses."""
from __future__ import annotations

import pytest
import torch

from otbench.cli import main
from otbench.errors import OTBenchError
from otbench.guard import check_threat_model, perturbation_norms
from otbench.registry import ATTACKS


def accuracy(defense, x, y):
    return (defense.predict(x) == y).float().mean().item()


CW_FAST = {"c": 1.0, "steps": 100, "binary_search_steps": 1}


@pytest.fixture(scope="module")
def cw_generous(standard, test_batch):
    x, y = test_batch[0][:20], test_batch[1][:20]
    return x, y, ATTACKS.get("cw-l2")(standard, 5.0, **CW_FAST)(x, y, seed=0).adv


def test_ngopt_cw_lowers_accuracy_with_one_batched_call_per_step(standard, test_batch, monkeypatch):
    x, y = test_batch[0][:10], test_batch[1][:10]
    calls = []
    logits = standard.logits
    monkeypatch.setattr(standard, "logits", lambda z: calls.append(len(z)) or logits(z))
    atk = ATTACKS.get("ngopt-cw")(standard, 0.2, budget=100)
    out = atk(x, y, seed=0)
    monkeypatch.undo()
    assert calls == [10] * 100  # one forward pass on all samples per step
    assert out.queries.tolist() == [100] * 10
    check_threat_model(x, out.adv, atk.norm, atk.eps, atk.name, atk.bounded)  # inside [0, 1]
    assert accuracy(standard, out.adv, y) < accuracy(standard, x, y) - 0.3
    # a success is the smallest-L2 misclassified candidate found, so its norm is well below one mutation's
    won = standard.predict(out.adv) != y
    assert perturbation_norms(x[won], out.adv[won], "L2").max() < 0.2 * 28


def test_ngopt_cw_is_deterministic_given_the_seed(standard, test_batch):
    x, y = test_batch[0][:4], test_batch[1][:4]
    atk = ATTACKS.get("ngopt-cw")(standard, 0.2, budget=15)
    first = atk(x, y, seed=3).adv
    assert torch.equal(first, atk(x, y, seed=3).adv)
    assert not torch.equal(first, atk(x, y, seed=4).adv)


def test_ngopt_cw_refuses_an_unknown_optimizer(standard):
    with pytest.raises(OTBenchError, match="unknown nevergrad optimizer"):
        ATTACKS.get("ngopt-cw")(standard, 0.2, optimizer="NoSuchOpt")


def test_cw_l2_lowers_accuracy_at_a_generous_threshold(standard, cw_generous):
    x, y, adv = cw_generous
    assert perturbation_norms(x, adv, "L2").max() <= 5.0
    assert accuracy(standard, adv, y) < accuracy(standard, x, y) - 0.3


def test_cw_l2_replaces_examples_over_the_rms_threshold_by_the_clean_input(standard, cw_generous):
    x, y, generous = cw_generous
    won = standard.predict(generous) != y
    rms = perturbation_norms(x, generous, "RMS")
    ranked = rms[won].sort().values
    k = len(ranked) // 2
    assert ranked[k - 1] < ranked[k]
    eps = (ranked[k - 1] + ranked[k]).item() / 2  # between two successes: one passes, one does not
    out = ATTACKS.get("cw-l2")(standard, eps, norm="RMS", **CW_FAST)(x, y, seed=0).adv
    assert perturbation_norms(x, out, "RMS").max() <= eps
    kept = won & (rms <= eps)
    assert kept.any() and (won & (rms > eps)).any()
    assert torch.equal(out[kept], generous[kept]) and torch.equal(out[~kept], x[~kept])
    # the same threshold in L2 is sqrt(784) times larger and selects the same examples
    same = ATTACKS.get("cw-l2")(standard, eps * 784 ** 0.5, norm="L2", **CW_FAST)(x, y, seed=0).adv
    assert torch.equal(same, out)


def test_autoattack_lowers_accuracy_at_linf_0_3(standard, test_batch):
    x, y = test_batch[0][:8], test_batch[1][:8]
    atk = ATTACKS.get("autoattack")(standard, 0.3)
    out = atk(x, y, seed=0)
    check_threat_model(x, out.adv, "Linf", 0.3, "autoattack")
    assert out.queries is None
    assert accuracy(standard, out.adv, y) < accuracy(standard, x, y) - 0.3


def test_autoattack_refuses_an_unknown_version(standard):
    with pytest.raises(OTBenchError, match="valid: standard, rand, plus"):
        ATTACKS.get("autoattack")(standard, 0.3, version="fast")


def test_new_attacks_are_listed_with_their_threat_model(capsys):
    import json

    assert main(["list", "attacks", "--json"]) == 0
    attacks = json.loads(capsys.readouterr().out)["attacks"]
    assert "unbounded" in attacks["ngopt-cw"]["threat_model"] and "sigma" in attacks["ngopt-cw"]["threat_model"]
    assert "needs scores" in attacks["ngopt-cw"]["threat_model"]
    assert "norm L2/RMS;" in attacks["cw-l2"]["threat_model"] and "needs gradients" in attacks["cw-l2"]["threat_model"]
    assert "norm L2/Linf;" in attacks["autoattack"]["threat_model"]
    assert attacks["autoattack"]["defaults"]["version"] == "standard"
