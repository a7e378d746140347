"""A table never shows another model as the paper's unremarked: every clean accuracy further than
CLEAN_GAP_POINTS from the paper's is listed above the table with the defense's stated cause or the lack of one."""
from __future__ import annotations

from otbench.baselines.fgsm_at import FGSMAdversarialTraining
from otbench.report.cells import Cell
from otbench.report.render import CLEAN_GAP_POINTS, markdown
from otbench.report.spec import Column, Row, TableSpec


def _table(values: dict[str, tuple[str, float, float]], quick: tuple[str, ...] = ()) -> str:
    """The Markdown of a one-column table of clean accuracies at preset paper: row label -> (defense, measured,
    paper); the rows in `quick` were taken from preset quick."""
    rows = tuple(Row(label, defense) for label, (defense, _, _) in values.items())
    column = Column("Standard Acc", "none", 0.0, "clean")
    spec = TableSpec("gaps", "Clean accuracy", "otad", "II", "mnist", rows, (column,))
    cells = [Cell(row, column, values[row.label][1], values[row.label][2], 100, f"c{i}", "measured",
                  "quick" if row.label in quick else "paper", row.label in quick) for i, row in enumerate(rows)]
    return markdown(spec, cells, [], "paper", [])


def test_gaps_beyond_two_points_are_stated_with_their_cause():
    md = _table({"FGSM-AT": ("fgsm-at", 98.2, 72.7), "PGD-AT": ("pgd-at", 98.8, 98.6 + CLEAN_GAP_POINTS - 0.1),
                 "Median": ("median-filter", 90.0, 97.6), "STL": ("stl", 68.0, 96.4)}, quick=("STL",))
    section = md.split("| Method")[0]
    assert "- FGSM-AT (preset `paper`): 98.2 against 72.7 (+25.5): " in section
    assert FGSMAdversarialTraining.known_gaps["paper"] in section  # the stated cause, quoted
    assert "- Median (preset `paper`): 90.0 against 97.6 (-7.6): no cause is known yet." in section
    assert "- STL (preset `quick`): 68.0 against 96.4 (-28.4): the model of `quick` the reduced scale" in section
    assert "PGD-AT" not in section  # within the bar: the paper's model


def test_no_gap_no_section():
    md = _table({"PGD-AT": ("pgd-at", 98.8, 98.6)})
    assert "more than" not in md.split("| Method")[0]
