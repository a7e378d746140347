"""Attack-cell tables: rows are defenses (with their settings), columns are (attack, eps, metric). A row may
name its own attack, which then replaces the column's (OTAD Table V: one row per attack)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cells import collect, fill_cells
from .layout import FIGURE_STYLES, REGRESSION_METRICS, Column, Row, column_config, row_attack
from .render import render_table
from .table import ReportContext, Table

__all__ = ["FIGURE_STYLES", "REGRESSION_METRICS", "Column", "Row", "TableSpec", "column_config", "row_attack"]


@dataclass(frozen=True)
class TableSpec(Table):
    rows: tuple[Row, ...] = ()
    columns: tuple[Column, ...] = ()
    figure: bool = False  # also draw accuracy vs eps
    # "lines": measured solid, the paper's dashed, clean accuracy at eps 0 (OTAD's tables); "curve": one
    # series per row with the paper's points as crosses and the missing rows named (the OT-Classifier's figures)
    figure_style: str = "lines"
    figure_title: str = ""
    x_label: str = "L2 perturbation budget eps (0 = clean)"

    def collect(self, store: Any, ctx: ReportContext) -> list[Any]:
        return collect(self, store, ctx.preset, ctx.fallback)

    def fill(self, store: Any, ctx: ReportContext) -> None:
        fill_cells(self, store, ctx)

    def render(self, store: Any, out_dir: Path, ctx: ReportContext) -> list[Path]:
        return render_table(self, store, Path(out_dir), ctx.preset, ctx.fallback)
