"""The OT-Classifier's report tables: Table 2, Table 3 and the curve figures."""
from __future__ import annotations

import pytest
from support import TINY_OTC, needs_mnist

from otbench.registry import DEFENSES
from otbench.report.table import ReportContext


# Tiny stand-in for the quick preset: 8-16 channels, 2 epochs on 2000 real MNIST training points.
def test_ot_cla_table_2_pairs_paper_values_and_marks_missing_defenses(tmp_path):
    from otbench.registry import TABLES
    from otbench.store import ResultStore

    spec = TABLES.get("otc-table-2")()
    cells = {(c.row.defense, c.column.label): c for c in spec.collect(ResultStore(tmp_path / "r.sqlite"),
                                                                       ReportContext(preset="quick"))}
    assert cells[("defense-gan", "Testing accuracy")].paper == 55.0
    assert cells[("defense-gan", "Testing accuracy")].status == "not run"
    assert cells[("ot-cla-adv", "Testing accuracy")].paper == 99.1
    assert cells[("ot-cla-adv", "Testing accuracy")].status == ("not available" if "ot-cla-adv" not in DEFENSES
                                                                else "not run")


@needs_mnist
def test_table_3_estimates_mnist_near_the_paper(tmp_path, mnist):
    from otbench.data import resolve_data_root
    from otbench.registry import TABLES
    from otbench.store import ResultStore

    table = TABLES.get("otc-table-3")()
    store = ResultStore(tmp_path / "r.sqlite")
    ctx = ReportContext(preset="quick", n=10, data_root=str(resolve_data_root(None)), progress=False)
    table.fill(store, ctx)  # other datasets are not on this machine: skipped, not an error
    paths = table.render(store, tmp_path, ctx)
    text = paths[1].read_text()
    row = next(line for line in text.splitlines() if line.startswith("| MNIST"))
    measured = float(row.split("|")[3].split("/")[0])
    assert measured == pytest.approx(13, abs=1.5)  # the paper's MLE for MNIST
    assert "| CIFAR10 (3 x 32 x 32) | pixels | not run / 17.0 |" in text
    store.close()


# -- report -------------------------------------------------------------------------------------------------------
@needs_mnist
def test_curve_figure_marks_unregistered_series_not_available(tmp_path, ot_cla, e_cla):
    from otbench.data import eval_subset
    from otbench.papers.ot_classifier.tables import PGD_OVERRIDES
    from otbench.report.spec import Column, Row, TableSpec
    from support import evaluate_cell
    from otbench.store import ResultStore

    store = ResultStore(tmp_path / "r.sqlite")
    subset = eval_subset(len(ot_cla.data.x_test), 20, 0)
    over = {"steps": 10}
    for d in (ot_cla, e_cla):
        for eps in (0.0, 0.2):
            evaluate_cell(d, "pgd", eps, subset, store, over, progress=False)
    tiny = {"train": dict(TINY_OTC)}
    spec = TableSpec(name="f", title="t", paper="ot-classifier", paper_table="1", dataset="mnist",
                     rows=(Row("OT-CLA", "ot-cla", None, tiny), Row("E-CLA", "e-cla", None, tiny),
                           Row("RSE", "rse-not-registered")),
                     columns=tuple(Column(f"eps={e:g}", "pgd", e, "robust", None, over) for e in (0.0, 0.2)),
                     figure=True, figure_style="curve")
    paths = spec.render(store, tmp_path, ReportContext(preset="quick"))
    md = next(p for p in paths if p.suffix == ".md").read_text()
    assert "| RSE | n/a | n/a | 0 |" in md  # the paper gives no number in these hand-made columns: measured alone
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ")}
    clean = float(rows["OT-CLA"].split("|")[2].split("/")[0])
    robust = float(rows["OT-CLA"].split("|")[3].split("/")[0])
    assert robust <= clean  # accuracy cannot rise with eps on the same samples
    assert any(p.suffix == ".png" and p.stat().st_size > 10_000 for p in paths)
    assert PGD_OVERRIDES == {"steps": 40}
    store.close()
