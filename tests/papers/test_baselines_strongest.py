"""`baselines-strongest` (issue 20): one battery per defense, derived from its declared capabilities, the same
for every compared defense; the fill plan validates and each worst-case row spans exactly its defense's rows."""
from __future__ import annotations

import json

from support import DATA, needs_mnist

from otbench.registry import DEFENSES, TABLES
from otbench.report.table import ReportContext
from otbench.store import ResultStore


def key(attack: str, cfg: dict) -> tuple[str, str]:
    return attack, json.dumps(cfg, sort_keys=True)


@needs_mnist
def test_baselines_strongest_plans_each_battery_once_and_takes_the_worst_case_over_exactly_it(tmp_path):
    from otbench.papers.otad.strongest import BASELINE_ROWS, STRONGEST_EPS, battery
    from otbench.report.cells import fill_plan

    spec = TABLES.get("baselines-strongest")()
    plan = fill_plan(spec, ResultStore(tmp_path / "r.sqlite"), ReportContext(preset="paper", n=500,
                                                                            data_root=str(DATA)))
    planned = [(job.name, *key(a.name, a.config)) for job in plan.jobs for a in job.attacks]
    assert len(planned) == len(set(planned))  # the worst-case rows add no second job
    assert all(a.eps == STRONGEST_EPS for job in plan.jobs for a in job.attacks)
    defenses = [d for _, d in BASELINE_ROWS]
    assert {r.defense for r in spec.rows} == set(defenses) and len(defenses) == 10
    for defense in defenses:
        rows = [r for r in spec.rows if r.defense == defense]
        (worst,) = [r for r in rows if r.worst_of]
        attacks = sorted(key(r.attack, r.attack_config) for r in rows if not r.worst_of)
        assert sorted(key(a, c) for a, c in worst.worst_of) == attacks
        assert attacks == sorted(key(a, c) for _, a, c in battery(DEFENSES.get(defense)))
        assert attacks == sorted((a, c) for d, a, c in planned if d == defense)
        assert f"over the {len(attacks)} attacks above" in worst.label
    # planned attacks share the attack settings of the plan (defaults filled): compare names per defense
    names = {d: {a for e, a, _ in planned if e == d} for d in defenses}
    assert names["pgd-at"] == names["soc-plus"] == names["linf-dist-net"] == names["standard"] == {
        "pgd", "autoattack", "bpda-pgd", "transfer-pgd", "square", "hopskipjump"}
    assert names["median-filter"] == names["stl"] == names["knn"] == {"bpda-pgd", "transfer-pgd", "square",
                                                                        "hopskipjump"}
    assert names["otad"] == {"otad-exact-grad", "bpda-pgd", "transfer-pgd", "square", "hopskipjump"}


def test_the_battery_follows_the_declared_capabilities_alone():
    from otbench.defense import Defense
    from otbench.papers.otad.strongest import battery

    def declared(**caps) -> type[Defense]:
        return type("Declared", (Defense,), {"surrogate_description": "itself", **caps})

    attacks = lambda **caps: [(a, c) for _, a, c in battery(declared(**caps))]  # noqa: E731
    plain = attacks(differentiable=True)
    assert ("pgd", {"norm": "L2"}) in plain and ("autoattack", {"norm": "L2"}) in plain
    assert ("square", {}) in plain and ("square", {"schedule": "fixed"}) in plain
    randomized = attacks(differentiable=True, randomized=True)
    assert ("eot-pgd", {"norm": "L2", "eot_samples": 20}) in randomized
    assert ("bpda-pgd", {"eot_samples": 20}) in randomized
    assert not {"pgd", "autoattack"} & {a for a, _ in randomized}  # one-call gradients, AutoAttack: a fixed net
    purifier = attacks(differentiable=False)
    assert {a for a, _ in purifier} == {"bpda-pgd", "transfer-pgd", "square", "hopskipjump"}
    no_surrogate = attacks(differentiable=False, surrogate_description=None)
    assert {a for a, _ in no_surrogate} == {"square", "hopskipjump"}
    assert ("otad-exact-grad", {}) in attacks(differentiable=False, piecewise_differentiable=True)
