"""The attacks on the shared ascent loop (fgsm, eot-pgd, dml-attack) and class-mean-shift."""
from __future__ import annotations

import json

import pytest
import torch
import torchattacks
from support import Bare, Regressor, accuracy, noise_like
from torch import nn

from otbench.errors import OTBenchError
from otbench.guard import check_threat_model
from otbench.registry import ATTACKS, DEFENSES

NEW = ("fgsm", "eot-pgd", "dml-attack", "regression-l2")


def expected_accuracy(defense, x, y, draws=10):
    """A randomized defense's accuracy, averaged over fresh noise as the harness would meet it."""
    torch.manual_seed(1234)
    return sum(accuracy(defense, x, y) for _ in range(draws)) / draws


class InputDropout(Bare):
    """The standard network behind inference-time dropout on the input pixels: a randomized defense."""

    randomized = True

    def __init__(self, net: nn.Module, p: float = 0.5) -> None:
        super().__init__()
        self.net, self.p, self.calls = net, p, 0

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.net(nn.functional.dropout(x, self.p, training=True))


def test_fgsm_linf_is_one_signed_gradient_step(standard, test_batch):
    x, y = test_batch
    out = ATTACKS.get("fgsm")(standard, 0.2, norm="Linf")(x, y)
    ref = torchattacks.FGSM(standard.module(), eps=0.2)(x, y)
    assert torch.allclose(out.adv, ref, atol=1e-6)
    assert (out.queries == 1).all()
    assert accuracy(standard, out.adv, y) < accuracy(standard, x, y) - 0.5


def test_fgsm_l2_spends_the_budget_along_the_gradient(standard, test_batch):
    x, y = test_batch
    out = ATTACKS.get("fgsm")(standard, 2.0, norm="L2")(x, y)
    norms = check_threat_model(x, out.adv, "L2", 2.0)
    assert norms.min() > 1.0  # clamping to [0, 1] trims some of the step, never most of it
    assert accuracy(standard, out.adv, y) < accuracy(standard, x, y) - 0.5
    assert accuracy(standard, (x + noise_like(out.adv - x)).clamp(0, 1), y) > accuracy(standard, x, y) - 0.2


def test_eot_pgd_beats_single_draw_pgd_on_a_randomized_defense(standard, test_batch):
    x, y = test_batch
    defense = InputDropout(standard.net)
    clean = expected_accuracy(defense, x, y)
    eot = ATTACKS.get("eot-pgd")(defense, 0.05, steps=10, eot_samples=10)(x, y, seed=0)
    pgd = ATTACKS.get("pgd")(defense, 0.05, steps=10)(x, y, seed=0)
    check_threat_model(x, eot.adv, "Linf", 0.05)
    # measured: clean 0.82, pgd 0.42, eot-pgd 0.31 (seeds 0 and 1)
    assert expected_accuracy(defense, eot.adv, y) < clean - 0.35
    assert expected_accuracy(defense, eot.adv, y) <= expected_accuracy(defense, pgd.adv, y) + 0.02


def test_eot_pgd_with_one_sample_in_l2(standard, test_batch):
    x, y = test_batch
    defense = InputDropout(standard.net)
    out = ATTACKS.get("eot-pgd")(defense, 2.0, norm="L2", steps=10, eot_samples=1)(x, y, seed=0)
    check_threat_model(x, out.adv, "L2", 2.0)
    assert expected_accuracy(defense, out.adv, y) < expected_accuracy(defense, x, y) - 0.3


def test_eot_pgd_averages_over_separate_calls_and_is_reproducible(standard, test_batch):
    x, y = test_batch[0][:8], test_batch[1][:8]
    defense = InputDropout(standard.net)
    attack = ATTACKS.get("eot-pgd")(defense, 0.1, steps=3, eot_samples=4)
    first = attack(x, y, seed=7)
    assert defense.calls == 3 * 4 and (first.queries == 12).all()
    assert torch.equal(attack(x, y, seed=7).adv, first.adv)
    assert ATTACKS.get("eot-pgd")(defense, 0.1).config["eot_samples"] == 20
    assert ATTACKS.get("eot-pgd")(defense, 0.1, eot_samples=1).config["eot_samples"] == 1
    with pytest.raises(OTBenchError, match="eot_samples"):
        ATTACKS.get("eot-pgd")(defense, 0.1, eot_samples=0)


@pytest.mark.parametrize("norm,eps", [("L2", 2.0), ("Linf", 0.1)])
def test_dml_attack_moves_embeddings_far_more_than_noise(metric_nn, test_batch, norm, eps):
    x, y = test_batch
    out = ATTACKS.get("dml-attack")(metric_nn, eps, norm=norm, steps=10)(x, y, seed=0)
    check_threat_model(x, out.adv, norm, eps)
    if norm == "L2":  # Gaussian noise of the attack's own norms
        noisy = x + noise_like(out.adv - x)
    else:  # uniform in the Linf box and clamped, i.e. what the attack's random start alone would give
        noisy = (x + (torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1) * eps).clamp(0, 1)
    with torch.no_grad():
        f = metric_nn.embed
        moved, by_noise = (f(out.adv) - f(x)).norm(dim=1), (f(noisy) - f(x)).norm(dim=1)
    assert (moved > 2 * by_noise).all()  # measured: at least 3.5 (L2) and 2.9 (Linf) times, every sample
    if norm == "L2":
        assert accuracy(metric_nn, out.adv, y) < accuracy(metric_nn, x, y) - 0.3  # measured 0.90 -> 0.33


def test_dml_attack_refuses_a_defense_without_a_metric_network(standard):
    with pytest.raises(OTBenchError, match="'standard' has no metric network"):
        ATTACKS.get("dml-attack")(standard, 2.0)

    class Broken(Bare):  # says it has one, but metric_network() is Defense's default None
        differentiable = False
        has_metric_network = True

    with pytest.raises(OTBenchError, match="returned None"):
        ATTACKS.get("dml-attack")(Broken(), 2.0)


def test_eps_zero_returns_the_clean_inputs(standard, metric_nn, wine_mlp, test_batch):
    x, y = test_batch
    net, wx, wy = wine_mlp
    for name, defense, inputs, labels in [("fgsm", standard, x, y), ("eot-pgd", standard, x, y),
                                          ("dml-attack", metric_nn, x, y),
                                          ("regression-l2", Regressor(net), wx, wy)]:
        assert torch.equal(ATTACKS.get(name)(defense, 0.0)(inputs, labels).adv, inputs)


def test_gradient_attacks_refuse_a_non_differentiable_defense():
    for name in ("fgsm", "eot-pgd"):  # checked on the class, before any model is built
        with pytest.raises(OTBenchError, match="'otad' is not differentiable"):
            ATTACKS.get(name).check_capabilities(DEFENSES.get("otad"))


def test_new_attacks_are_listed_with_their_threat_model(capsys):
    from otbench.cli import main

    assert main(["list", "attacks", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["attacks"]
    needs = {"fgsm": "gradients", "eot-pgd": "gradients", "dml-attack": "surrogate-gradients",
             "regression-l2": "surrogate-gradients"}
    for name in NEW:
        assert f"norm L2/Linf; needs {needs[name]};" in listed[name]["threat_model"]
    assert listed["eot-pgd"]["defaults"]["eot_samples"] == 20 and listed["dml-attack"]["defaults"]["norm"] == "L2"


def test_class_mean_shift_steps_along_class_mean_differences(standard, test_batch):
    """Each move is eps along mu_j - mu_y for one of the `candidates` nearest other classes (clipping aside)."""
    from otbench.attacks.class_mean_shift import class_means

    data = standard.data
    means = class_means(data.x_train, data.y_train, data.num_classes)
    y0 = data.y_train == 0
    assert torch.allclose(means[0], data.x_train[y0].flatten(1).double().mean(0))
    x, y = test_batch[0][:10], test_batch[1][:10]
    out = ATTACKS.get("class-mean-shift")(standard, 1.0, candidates=2)(x, y)
    assert out.queries.min() >= 1 and out.queries.max() <= 2
    flat = x.flatten(1).double()
    dist = torch.cdist(flat, means)
    for i in range(len(x)):
        dist[i, y[i]] = float("inf")
        moves = []
        for j in dist[i].argsort()[:2].tolist():  # the two nearest other classes' means
            d = means[j] - means[y[i]]
            moves.append((flat[i] + d / d.norm()).clamp(0, 1).float())
        assert any(torch.allclose(out.adv[i].flatten(), m, atol=1e-6) for m in moves), i
