"""The label-only (decision-based) attacks run through ART: hopskipjump, sign-opt, geoda.

On tiny real-MNIST models, through the guard: each must lower accuracy within eps (a do-nothing attack
fails), return only inputs the defense misclassifies where it changes anything, count its queries within
the budget, never hand the defense a gradient, and serve every eps from one search."""
import pytest
import torch

from otbench.attacks._label_only import MEMO
from otbench.defense import Defense
from otbench.errors import OTBenchError
from otbench.guard import check_threat_model, perturbation_norms
from otbench.interfaces.art import DefenseBlackBox, to_art
from otbench.registry import ATTACKS

CASES = [  # name, eps, settings
    ("hopskipjump", 3.0, {"max_queries": 300}),
    ("hopskipjump", 0.3, {"norm": "Linf", "max_queries": 300}),
    ("hopskipjump", 3.0, {"max_queries": 300, "init": "noise"}),
    ("sign-opt", 3.0, {"max_queries": 200, "num_trial": 20, "k": 50}),
    ("geoda", 3.0, {"max_queries": 500}),
    ("geoda", 0.3, {"norm": "Linf", "max_queries": 500}),
]


class Spy(Defense):
    """Another defense's outputs, recording every call: its rows and whether autograd could reach it."""

    name = "spy"

    def __init__(self, inner: Defense) -> None:
        super().__init__(inner.data, inner.config, inner.device)
        self.inner, self.rows, self.grad_calls = inner, 0, 0

    def logits(self, x):
        self.rows += len(x)
        self.grad_calls += int(torch.is_grad_enabled() or x.requires_grad)
        with torch.no_grad():
            return self.inner.logits(x)


def accuracy(defense, x, y):
    return (defense.predict(x) == y).float().mean().item()


@pytest.mark.parametrize("name,eps,cfg", CASES)
def test_label_only_attack_lowers_accuracy_within_eps(standard, test_batch, name, eps, cfg):
    x, y = test_batch[0][:12], test_batch[1][:12]
    attack = ATTACKS.get(name)(standard, eps, **cfg)
    out = attack(x, y, seed=0)
    check_threat_model(x, out.adv, attack.norm, eps, name)
    assert accuracy(standard, out.adv, y) < accuracy(standard, x, y) - 0.25
    changed = (out.adv != x).flatten(1).any(1)
    assert changed.any() and (standard.predict(out.adv[changed]) != y[changed]).all()
    correct = standard.predict(x) == y
    assert out.queries[correct].min() > 1 and out.queries.max() <= cfg["max_queries"]


def test_hopskipjump_lowers_the_accuracy_of_otad(otad, test_batch):
    x, y = test_batch[0][:8], test_batch[1][:8]
    out = ATTACKS.get("hopskipjump")(otad, 3.0, max_queries=300)(x, y, seed=0)
    check_threat_model(x, out.adv, "L2", 3.0, "hopskipjump")
    assert accuracy(otad, out.adv, y) < accuracy(otad, x, y)


@pytest.mark.parametrize("name,cfg", [("sign-opt", {"max_queries": 60, "num_trial": 5, "k": 10}),
                                      ("geoda", {"max_queries": 500})])
def test_other_label_only_attacks_run_on_otad_within_eps(otad, test_batch, name, cfg):
    x, y = test_batch[0][:2], test_batch[1][:2]
    out = ATTACKS.get(name)(otad, 3.0, **cfg)(x, y, seed=0)
    check_threat_model(x, out.adv, "L2", 3.0, name)
    assert out.queries.max() <= cfg["max_queries"]


def test_label_only_attacks_never_get_gradients_even_from_a_differentiable_defense(standard, test_batch):
    spy = Spy(standard)
    assert isinstance(to_art(standard, black_box=True), DefenseBlackBox)
    with pytest.raises(OTBenchError, match="gradient-free"):
        to_art(standard, black_box=True).loss_gradient(test_batch[0][:1].numpy(), test_batch[1][:1].numpy())
    MEMO.clear()
    ATTACKS.get("hopskipjump")(spy, 3.0, max_queries=200)(test_batch[0][:3], test_batch[1][:3], seed=0)
    assert spy.rows > 0 and spy.grad_calls == 0


def test_queries_are_the_rows_the_defense_was_asked_and_the_budget_is_a_hard_cap(standard, test_batch):
    """At a tiny eps nothing succeeds, so each sample reports every query it made."""
    x, y = test_batch[0][:4], test_batch[1][:4]
    spy = Spy(standard)
    MEMO.clear()
    out = ATTACKS.get("hopskipjump")(spy, 1e-3, max_queries=150)(x, y, seed=0)
    correct = standard.predict(x) == y
    assert (out.queries[correct] == 150).all() and (out.queries[~correct] == 1).all()
    assert int(out.queries.sum()) == spy.rows


def test_one_search_serves_every_eps_exactly(standard, test_batch):
    x, y = test_batch[0][:6], test_batch[1][:6]
    spy = Spy(standard)
    MEMO.clear()
    small = ATTACKS.get("hopskipjump")(spy, 1.0, max_queries=200)(x, y, seed=1)
    rows = spy.rows
    large = ATTACKS.get("hopskipjump")(spy, 3.0, max_queries=200)(x, y, seed=1)
    assert spy.rows == rows  # the second eps asked the defense nothing
    MEMO.clear()
    fresh = ATTACKS.get("hopskipjump")(spy, 3.0, max_queries=200)(x, y, seed=1)
    assert torch.equal(fresh.adv, large.adv) and torch.equal(fresh.queries, large.queries)
    assert (large.queries <= small.queries).all()  # success within 3 comes no later than within 1
    fooled_small = (small.adv != x).flatten(1).any(1)
    assert torch.equal(large.adv[fooled_small], small.adv[fooled_small])  # the same smallest input found
    assert (perturbation_norms(x, large.adv, "L2") <= 3.0 + 1e-5).all()


def test_a_different_seed_is_a_different_search(standard, test_batch):
    x, y = test_batch[0][:4], test_batch[1][:4]
    a = ATTACKS.get("hopskipjump")(standard, 3.0, max_queries=200, init="noise")(x, y, seed=0)
    b = ATTACKS.get("hopskipjump")(standard, 3.0, max_queries=200, init="noise")(x, y, seed=1)
    assert not torch.equal(a.adv, b.adv)


@pytest.mark.parametrize("name,cfg,match", [
    ("hopskipjump", {"norm": "L1"}, "valid: L2, Linf"),
    ("sign-opt", {"norm": "Linf"}, "valid: L2"),
    ("hopskipjump", {"max_queries": -5}, "max_queries must be an integer >= 1"),
    ("sign-opt", {"max_queries": 0}, "max_queries must be an integer >= 1"),
    ("geoda", {"max_queries": 100}, "max_queries must be an integer >= 500"),
    ("hopskipjump", {"init": "zeros"}, "valid: train, noise"),
    ("hopskipjump", {"init_eval": 200, "max_eval": 100}, "init_eval"),
    ("sign-opt", {"k": -1}, "k must be an integer >= 1"),
    ("geoda", {"sigma": -0.1}, "sigma must be > 0"),
])
def test_bad_settings_are_refused_in_one_line(standard, name, cfg, match):
    with pytest.raises(OTBenchError, match=match) as err:
        ATTACKS.get(name)(standard, 2.0, **cfg)
    assert "\n" not in str(err.value)
