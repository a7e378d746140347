"""OTAD's accuracy-vs-eps figures as small multiples (report/figures.py `lines_figure`), read back from the drawn
matplotlib objects: one panel per measured row, the paper's series in the measured one's colour, no line across a
budget nothing was measured at, clean accuracy never joined to the robust points, the worst case beside them."""
from __future__ import annotations

import math

import matplotlib
import pytest

from otbench.report.cells import Cell
from otbench.report.figures import lines_figure
from otbench.report.spec import Column, Row, TableSpec

matplotlib.use("Agg")

COLUMNS = (Column("Standard Acc", "square", 2.0, "clean"), Column("eps=2", "square", 2.0, "robust"),
           Column("eps=2.5", "square", 2.5, "robust"), Column("eps=3", "square", 3.0, "robust"))
ROWS = (Row("A", "otad", "A"), Row("B", "knn", "B"), Row("C (never run)", "standard"))


def _cells() -> list[Cell]:
    # A: measured at 2 and 3 but not at 2.5; the paper has all three. B: measured everywhere, no paper. C: nothing.
    measured = {("A", 2.0): 60.0, ("A", 3.0): 40.0, ("B", 2.0): 50.0, ("B", 2.5): 45.0, ("B", 3.0): 30.0}
    paper = {("A", 2.0): 70.0, ("A", 2.5): 65.0, ("A", 3.0): 55.0}
    out = []
    for row in ROWS:
        for col in COLUMNS:
            if col.metric == "clean":
                m, pp = (95.0, 96.0) if row.label != "C (never run)" else (None, None)
            else:
                m, pp = measured.get((row.label, col.eps)), paper.get((row.label, col.eps))
            out.append(Cell(row, col, m, pp if row.label == "A" else None, 100 if m is not None else 0,
                            "x" if m is not None else None, "measured" if m is not None else "not run", "paper"))
    return out


def test_one_panel_per_measured_row_with_broken_lines_and_the_worst_case():
    spec = TableSpec(name="t", title="t", paper="otad", paper_table="II", dataset="mnist", rows=ROWS, columns=COLUMNS,
                     figure=True)
    fig = lines_figure(spec, _cells(), "paper", {"A": {2.0: (0.5, 100), 3.0: (0.3, 100)}})
    panels = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_title() for ax in panels] == ["A", "B"]  # C was never run: no panel
    a = {line.get_label(): line for line in panels[0].get_lines()}
    measured, paper = a["measured"], a["paper"]
    assert list(measured.get_xdata()) == [2.0, 2.5, 3.0]
    ys = list(measured.get_ydata())
    assert ys[0] == 60.0 and math.isnan(ys[1]) and ys[2] == 40.0  # nothing measured at 2.5: the line breaks
    assert list(paper.get_ydata()) == [70.0, 65.0, 55.0] and paper.get_linestyle() == "--"
    assert paper.get_color() == measured.get_color()  # the paper's values in the measured series' colour
    clean = a["clean (measured)"]
    assert list(clean.get_xdata()) == [0.0] and clean.get_linestyle() == "None"  # a lone point, never joined
    worst = next(line for label, line in a.items() if label.startswith("worst case"))
    assert list(worst.get_xdata()) == [2.0, 3.0] and list(worst.get_ydata()) == pytest.approx([50.0, 30.0])
    assert worst.get_color() == "black"
    b = {line.get_label() for line in panels[1].get_lines()}
    assert "paper" not in b and not any(label.startswith("worst case") for label in b)
    colours = {panels[0].get_lines()[0].get_color(), panels[1].get_lines()[0].get_color()}
    assert len(colours) == 2
