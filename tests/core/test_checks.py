"""The soundness diagnostics (otbench/checks.py): each flag fires on a purpose-built case and stays quiet on a sound one."""
from __future__ import annotations

import pytest
import torch
from support import MetricNN
from torch import nn

from otbench import checks
from otbench.data import eval_subset
from otbench.defense import Defense
from otbench.plan import evaluate_defense
from otbench.store import ResultStore, SampleRow

FAST = {"steps": 10, "n_queries": 150}


class _Wrapped(Defense):
    """A defense around the tiny standard network, for purpose-built failure cases."""

    def __init__(self, standard):
        super().__init__(standard.data, {"preset": "test", "kind": self.name}, standard.device)
        self.net = standard.net

    def surrogate(self):
        return self.net


class Masked(_Wrapped):
    """Binarises its input with round(): accurate, but every input gradient is exactly zero."""

    name, differentiable = "masked-test", True

    def logits(self, x):
        return self.net(torch.round(x))


class Noisy(_Wrapped):
    """Adds Gaussian input noise on every call but does not declare itself randomized."""

    name, differentiable = "noisy-test", True

    def logits(self, x):
        return self.net((x + 0.05 * torch.randn_like(x)).clamp(0, 1))


def _subset(data, n=20):
    return eval_subset(len(data.x_test), n, seed=0)


def _codes(result, level=None):
    return {f.code for f in result.flags if level is None or f.level == level}


def _cell(store, cell_id, eps, rows, attack="pgd"):
    store.ensure_cell(cell_id, {"dataset": "mnist", "defense": "standard", "defense_config": {}, "attack": attack,
                                "attack_config": {"norm": "L2"}, "eps": eps, "seed": 0, "subset_seed": 0,
                                "preset": "quick"})
    store.add_chunk(cell_id, 0, rows, {"wall_seconds": 0, "versions": {}, "device": "cpu", "machine": "test"})


def test_masked_gradients_are_flagged(standard, tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    result = evaluate_defense(Masked(standard), {"pgd": [3.0], "square": [3.0]}, _subset(standard.data), store,
                       {"norm": "L2", **FAST}, progress=False)
    by = {c.attack: c for c in result.cells}
    assert by["square"].robust_accuracy < by["pgd"].robust_accuracy  # the premise: PGD is blind here
    assert {"zero-gradients", "gradient-free-beats-gradient"} <= _codes(result, "warning")
    assert {f["code"] for f in store.flags([by["pgd"].cell_id])} >= {"gradient-free-beats-gradient"}
    # the message names the cells' non-default settings, so two Square cells of one budget stay apart
    message = next(f.message for f in result.flags if f.code == "gradient-free-beats-gradient")
    assert "square L2 eps=3 (n_queries=150)" in message and "pgd (steps=10)" in message

    # the same Square again on a smaller subset in other chunks: one verdict per pair of labels, from the
    # pair of cells with the most samples in common
    evaluate_defense(Masked(standard), {"square": [3.0]}, _subset(standard.data, 10), store, {"norm": "L2", "n_queries": 150},
              chunk=5, progress=False, checks=False)
    again = [f for f in checks.cell_flags(store, store.cells()) if f.code == "gradient-free-beats-gradient"]
    assert len(again) == 1 and again[0].message == message


def test_standard_model_raises_no_warning(standard, tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    result = evaluate_defense(standard, {"pgd": [1.0, 2.0], "square": [2.0]}, _subset(standard.data), store,
                       {"norm": "L2", **FAST}, progress=False)
    assert not _codes(result, "warning") and not _codes(result, "error"), [f.message for f in result.flags]
    assert result.worst_case and result.worst_case[0]["n"] == 20


def test_undeclared_randomness_is_flagged_and_gets_eot(standard, tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    result = evaluate_defense(Noisy(standard), {"pgd": [2.0]}, _subset(standard.data, 8), store,
                       {"norm": "L2", "steps": 2}, progress=False)
    assert "randomized" in _codes(result, "warning")
    (cell,) = [c for c in store.cells(defense="noisy-test")]
    assert cell["attack_config"]["eot_samples"] == checks.DEFAULT_EOT


def test_a_weak_attack_is_flagged_by_the_undefended_check(standard, tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    weak = {"norm": "L2", "steps": 1, "step_ratio": 0.001, "random_start": False}
    result = evaluate_defense(standard, {"pgd": [2.0]}, _subset(standard.data), store, weak, progress=False)
    assert "undefended-not-broken" in _codes(result, "warning")


def test_stored_cell_checks(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    ok = [SampleRow(i, 1, 1, 1, 0.0, None) for i in range(30)]
    _cell(store, "e0", 0.0, ok[:10] + [SampleRow(10, 1, 1, 2, 0.0, None)])  # eps 0 changed a prediction
    _cell(store, "e1", 1.0, [SampleRow(i, 1, 1, 2, 1.0, None) for i in range(30)])  # all broken at eps 1
    _cell(store, "e2", 2.0, ok)  # none broken at eps 2: not monotone
    flags = checks.cell_flags(store, store.cells())
    codes = {f.code: f for f in flags}
    assert codes["eps0-not-clean"].level == "error" and codes["eps0-not-clean"].cells == ["e0"]
    assert set(codes["eps-not-monotone"].cells) == {"e1", "e2"}
    assert len([f for f in flags if f.code == "eps-not-monotone"]) == 1  # e0 -> e2 is within noise


@pytest.mark.parametrize("b,c,expected", [(10, 0, True), (5, 5, False), (1, 0, False), (30, 12, True), (20, 12, False)])
def test_significance_rule(b, c, expected):
    assert checks.significantly_more(b, c) is expected


def test_undefended_check_skips_attacks_the_undefended_network_cannot_take(metric_nn, tmp_path):
    """dml-attack needs a metric network, which the undefended view has not: no check, and no crash."""
    from otbench.data import EvalSubset
    from otbench.runner import open_undefended
    from otbench.store import ResultStore

    class WithSurrogate(MetricNN):
        surrogate_description = "the embedding's network"

        def surrogate(self) -> nn.Module:
            return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))

    d = WithSurrogate.__new__(WithSurrogate)
    d.__dict__.update(metric_nn.__dict__)
    store = ResultStore(tmp_path / "r.sqlite")
    assert open_undefended(d, "dml-attack", {}, EvalSubset(0, (0, 1, 2)), store, 0) is None
    store.close()


class ChangesItsMind(_Wrapped):
    """Answers right on its first call and with the next class on every later one: not randomized, just broken."""

    name, differentiable = "changes-its-mind-test", True

    def __init__(self, standard):
        super().__init__(standard)
        self.calls = 0

    def logits(self, x):
        self.calls += 1
        out = self.net(x)
        return out if self.calls == 1 else out.roll(1, dims=1)


def test_eps0_flag_fires_when_an_attack_at_eps_0_changes_predictions(standard, tmp_path):
    """The attack really runs at eps 0 (no shortcut), its output is held to the clean input by the guard, and
    the check sees the defense give another answer for it."""
    store = ResultStore(tmp_path / "r.sqlite")
    evaluate_defense(ChangesItsMind(standard), {"pgd": [0.0]}, _subset(standard.data, 10), store, {"steps": 3},
              progress=False, checks=False)
    flags = checks.cell_flags(store, store.cells())
    assert [(f.code, f.level) for f in flags] == [("eps0-not-clean", "error")]
    assert "10 predictions changed at eps = 0" in flags[0].message
    evaluate_defense(standard, {"pgd": [0.0]}, _subset(standard.data, 10), store, {"steps": 3}, progress=False, checks=False)
    sound = [c for c in store.cells() if c["defense"] == "standard"]
    assert checks.cell_flags(store, sound) == []


def test_clean_accuracy_near_chance_is_flagged_once_per_defense(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    labels = [i % 3 for i in range(30)]  # the most frequent label's share: 10 / 30
    near = [SampleRow(i, labels[i], labels[i] if i < 12 else (labels[i] + 1) % 3, 0, 0.0, None) for i in range(30)]
    _cell(store, "a1", 1.0, near)  # 40% clean: within 10 points of 33.3%
    _cell(store, "a2", 2.0, near[:25])
    flags = [f for f in checks.cell_flags(store, store.cells()) if f.code == "clean-near-chance"]
    assert len(flags) == 1 and flags[0].cells == ["a1", "a2"] and flags[0].level == "warning"
    assert "40.0% on 30 samples" in flags[0].message and "33.3%" in flags[0].message

    good = ResultStore(tmp_path / "g.sqlite")  # 14 of 30 clean-correct: 46.7%, above 33.3 + 10
    _cell(good, "b1", 1.0, [SampleRow(i, labels[i], labels[i] if i < 14 else (labels[i] + 1) % 3, 0, 0.0, None)
                            for i in range(30)])
    assert not [f for f in checks.cell_flags(good, good.cells()) if f.code == "clean-near-chance"]
    few = ResultStore(tmp_path / "f.sqlite")  # too few samples to say
    _cell(few, "c1", 1.0, [SampleRow(i, labels[i], (labels[i] + 1) % 3, 0, 0.0, None)  # 0% clean, but 19 samples
                           for i in range(checks.CHANCE_MIN_N - 1)])
    assert not [f for f in checks.cell_flags(few, few.cells()) if f.code == "clean-near-chance"]
