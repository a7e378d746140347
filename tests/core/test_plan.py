"""Run plans: built once, validated whole before any data is loaded or any model trained, printed by --dry-run."""
from __future__ import annotations

import math

import pytest

from otbench.cli import main
from otbench.errors import OTBenchError
from otbench.plan import RunPlan

NO_OVERRIDES = {"train": {}, "defense": {}, "attack": {}}


def plan(**kw):
    options = {"defenses": ["otad"], "attacks": ["square"], "eps": None, "preset": "quick",
               "overrides": NO_OVERRIDES, "n": 10}
    options.update(kw)
    return RunPlan.grid("mnist" if "dataset" not in kw else options.pop("dataset"), options.pop("defenses"),
                        options.pop("attacks"), options.pop("eps"), options.pop("preset"), options.pop("overrides"),
                        **options)


def test_budgets_default_to_each_attacks_own():
    p = plan(attacks=["square", "bpda-pgd"])
    assert [(a.name, a.eps) for a in p.jobs[0].attacks] == [("square", (2.0, 3.0)), ("bpda-pgd", (2.0, 2.5, 3.0))]


def test_attack_settings_reach_only_the_attacks_that_have_them():
    p = plan(attacks=["square", "bpda-pgd"], overrides={**NO_OVERRIDES, "attack": {"n_queries": 50, "bpda-pgd.steps": 7}})
    configs = {a.name: a.config for a in p.jobs[0].attacks}
    assert configs == {"square": {"n_queries": 50}, "bpda-pgd": {"steps": 7}}


@pytest.mark.parametrize("kw,message", [
    ({"eps": [math.nan]}, "eps must be a finite number"),
    ({"eps": [math.inf]}, "eps must be a finite number"),
    ({"eps": [-1.0]}, "eps must be a finite number >= 0"),
    ({"n": 0}, "--n must be an integer of at least 1"),
    ({"chunk": 0}, "--chunk must be an integer of at least 1"),
    ({"subset_seed": -1}, "--subset-seed must be an integer >= 0"),
    ({"attacks": ["pgd"]}, "needs gradients, but defense 'otad' is not differentiable"),
    ({"dataset": "winequality-red-z"}, "is a classification defense and dataset 'winequality-red-z' is a regression"),
    ({"dataset": "winequality-red-z", "defenses": ["regressor"], "attacks": ["pgd"]},
     "applies to classification defenses"),
    ({"dataset": "winequality-red-z", "defenses": ["regressor"], "attacks": ["fgsm"]}, "applies to classification"),
    ({"preset": "huge"}, "unknown preset 'huge'"),
    ({"overrides": {**NO_OVERRIDES, "defense": {"K": "ten"}}}, "must be an integer"),
    ({"overrides": {**NO_OVERRIDES, "attack": {"n_queries": 1.5}}}, "n_queries' must be an integer"),
    ({"device": "tpu"}, "unknown device 'tpu'"),
])
def test_the_whole_plan_is_checked_before_any_data_is_loaded(kw, message, monkeypatch):
    import otbench.plan

    def no_data(*args, **kwargs):
        raise AssertionError("data were loaded before the plan was checked")

    monkeypatch.setattr(otbench.plan, "load_dataset", no_data)
    with pytest.raises(OTBenchError, match=message):
        plan(**kw).validate()


def test_a_valid_plan_passes():
    plan(defenses=["otad", "standard", "knn"], attacks=["square", "bpda-pgd"], eps=[2.0]).validate()


def test_dry_run_prints_the_plan_and_computes_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OTBENCH_CACHE", str(tmp_path / "cache"))
    assert main(["run", "--defense", "otad,standard", "--attack", "square", "--eps", "2", "--n", "50",
                 "--set", "attack.n_queries=300", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "defense otad [preset quick]" in out and "defense standard [preset quick]" in out
    assert "square at eps 2: norm=L2, n_queries=300" in out and "2 cells, 100 attacked samples" in out
    assert not (tmp_path / "otbench-results.sqlite").exists()
    assert not (tmp_path / "cache" / "models").exists()  # no model trained or loaded
