"""OTAD's report tables: registered with the paper's values, filled and rendered from the store."""
from __future__ import annotations

import json

from support import DATA, TINY_TRAIN, needs_mnist

from otbench.registry import TABLES
from otbench.report.analysis import Analysis, AnalysisTable, Metric, Section
from otbench.report.spec import Row
from otbench.report.table import ReportContext
from otbench.store import ResultStore


# -- the tables ---------------------------------------------------------------------------------------------
def test_analysis_tables_are_registered_with_the_papers_values(tmp_path):
    assert {"otad-table-4", "otad-table-13", "otad-table-14", "otad-figure-2"} <= set(TABLES.names())
    store, ctx = ResultStore(tmp_path / "r.sqlite"), ReportContext(preset="paper")
    t14 = TABLES.get("otad-table-14")().collect(store, ctx)
    papers = {(v.section.label, v.metric.label): v.paper for v in t14 if v.row.defense == "otad" and not v.metric.attack}
    shift = [v for v in t14 if v.metric.attack == "class-mean-shift"]
    assert len(shift) == 12 and all(v.paper is None for v in shift)  # one per row; not in the paper
    assert papers[("std=0.3", "Net test Acc")] == 99.0 and papers[("std=0.6", "Relative Error")] == 0.5876
    assert papers[("std=0.2", "Robust Acc")] == 75.78 and all(v.status == "not run" for v in t14 if v.paper is not None)
    t13 = TABLES.get("otad-table-13")().collect(store, ctx)
    papers = {(v.section.label, v.row.label, v.metric.label): v.paper for v in t13}
    assert papers[("Fashion-MNIST", "Plain net", "Robust Acc")] == 47.6
    assert papers[("MNIST", "ResNet", "Net test Acc")] == 98.16
    paths = TABLES.get("otad-figure-2")().render(store, tmp_path / "out", ctx)
    assert "5.6" in paths[1].read_text()  # the ResNet's Lipschitz constant from the text
    t4 = TABLES.get("otad-table-4")()
    assert sorted(c.paper for c in t4.collect(store, ctx)) == [67.9, 73.9, 81.6, 86.6]
    store.close()


def test_analysis_table_fills_and_renders_from_the_store(mnist, tmp_path):
    """A one-row figure on the tiny OTAD: fill runs the attack cell and both analyses, render shows them and
    draws the figure; a second fill computes nothing."""
    from otbench.papers.otad.analyses import (
        lipschitz_constants,
        relative_errors,
        sweep_figure,
    )

    tiny = {"train": dict(TINY_TRAIN)}
    table = AnalysisTable(
        name="tiny-figure", title="tiny", paper="otad", paper_table="2", dataset="mnist", figure=sweep_figure,
        sections=(Section("MNIST", "mnist", "bpda-pgd", 3.0,
                          (Row("OTAD L-l=2", "otad", None, {**tiny, "defense": {"L": 2.0, "l": 0.0}}),
                           Row("ResNet", "standard", None, tiny)), {"steps": 5}),),
        analyses=(Analysis("re", relative_errors),
                  Analysis("lipschitz", lipschitz_constants, {"radius": 0.3, "n_directions": 2, "ascent_steps": 2,
                                                              "seed": 0})),
        metrics=(Metric("Standard Acc", "clean"), Metric("Robust Acc", "robust"),
                 Metric("Lip (ascent)", "analysis", analysis="lipschitz", value="ascent", applies_to=("otad", "standard")),
                 Metric("RE", "analysis", digits=4, analysis="re", value="re", applies_to=("otad",)),
                 Metric("net", "training", value="test_accuracy", scale=100.0)))
    store = ResultStore(tmp_path / "r.sqlite")
    ctx = ReportContext(preset="quick", n=8, chunk=8, device="cpu", data_root=str(DATA), progress=False)
    table.fill(store, ctx)
    values = {(v.row.label, v.metric.label): v for v in table.collect(store, ctx)}
    assert values[("OTAD L-l=2", "RE")].status == "measured" and values[("OTAD L-l=2", "RE")].n == 8
    assert values[("ResNet", "RE")].status == "n/a"
    assert values[("ResNet", "Lip (ascent)")].measured > 0 and values[("OTAD L-l=2", "Lip (ascent)")].n == 8
    assert values[("OTAD L-l=2", "net")].measured > 50
    paths = table.render(store, tmp_path / "out", ctx)
    assert [p.suffix for p in paths] == [".csv", ".md", ".png"]
    assert "| MNIST | ResNet |" in paths[1].read_text()
    assert len(store.analyses()) == 3  # RE of OTAD, Lipschitz of OTAD and of the ResNet
    table.fill(store, ctx)  # nothing missing: nothing recomputed
    assert [len(r.sample_ids) for r in store.analyses()] == [8, 8, 8]
    assert sum(r["wall_seconds"] is not None for r in store.runs(values[("ResNet", "Robust Acc")].cell_id)) == 1
    store.close()


def test_table_5_finds_every_published_value(tmp_path):
    spec = TABLES.get("otad-table-5")()
    assert [r.attack for r in spec.rows] == ["regression-l2", "gaussian-noise", "regression-l2", "regression-l2"]
    store = ResultStore(tmp_path / "empty.sqlite")
    cells = spec.collect(store, ReportContext(preset="paper"))
    assert len(cells) == 36 and all(c.paper is not None and c.status == "not run" for c in cells)
    otad_e05 = next(c for c in cells if c.row.label == "OTAD" and c.column.label == "E0.5")
    assert otad_e05.paper == 0.119


def test_table_5_is_on_z_scores_and_the_minmax_variant_has_the_same_rows():
    z, m = TABLES.get("otad-table-5")(), TABLES.get("otad-table-5-minmax")()
    assert (z.dataset, m.dataset) == ("winequality-red-z", "winequality-red")
    assert z.rows == m.rows and z.columns == m.columns and "z-scores" in z.note and "min-max" in m.note


@needs_mnist
def test_otad_strongest_plans_every_attack_once_and_takes_the_worst_case_over_exactly_them(tmp_path):
    """The issue-15 table on an empty store: its fill plan validates (every attack's settings are real ones, the
    exact CIP gradient only where there is a CIP step), asks each (defense, attack, settings) once at every eps,
    and each defense's worst-case row spans exactly that defense's attack rows."""
    from otbench.papers.otad.mnist import STRONGEST_ATTACKS, STRONGEST_EPS
    from otbench.report.cells import fill_plan

    spec = TABLES.get("otad-strongest")()
    plan = fill_plan(spec, ResultStore(tmp_path / "r.sqlite"), ReportContext(preset="paper", n=500,
                                                                            data_root=str(DATA)))
    planned = [(job.name, a.name, json.dumps(a.config, sort_keys=True)) for job in plan.jobs for a in job.attacks]
    assert len(planned) == len(set(planned))  # the worst-case rows add no second job
    assert all(a.eps == STRONGEST_EPS for job in plan.jobs for a in job.attacks)
    for defense in ("otad", "knn", "standard"):
        rows = [r for r in spec.rows if r.defense == defense]
        (worst,) = [r for r in rows if r.worst_of]
        attacks = [(r.attack, json.dumps(r.attack_config, sort_keys=True)) for r in rows if not r.worst_of]
        assert sorted((a, json.dumps(c, sort_keys=True)) for a, c in worst.worst_of) == sorted(attacks)
        assert sorted(attacks) == sorted((a, c) for d, a, c in planned if d == defense)
        assert f"over the {len(attacks)} attacks above" in worst.label
    every = {(a, json.dumps(c, sort_keys=True)) for _, a, c in STRONGEST_ATTACKS}
    assert {(a, c) for d, a, c in planned if d in ("otad", "standard")} == every
    assert every - {(a, c) for d, a, c in planned if d == "knn"} == {
        ("otad-exact-grad", "{}"), ("square", '{"schedule": "fixed"}'), ("square", '{"init": "neighbour"}')}
