"""Attack-cell tables: rows are defenses (with their settings), columns are (attack, eps, metric). A row may
name its own attack, which then replaces the column's (OTAD Table V: one row per attack)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .table import ReportContext, Table


@dataclass(frozen=True)
class Row:
    label: str
    defense: str
    paper_method: str | None = None  # the method's name in the paper's values; None: not in the paper
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # {"defense": {...}, "train": {...}}
    attack: str | None = None  # overrides every column's attack for this row
    attack_config: dict[str, Any] = field(default_factory=dict)  # this row's own attack settings
    # a worst-case row: per sample, robust only if robust under every (attack, settings) here, at the column's eps
    worst_of: tuple[tuple[str, dict[str, Any]], ...] = ()


@dataclass(frozen=True)
class Column:
    label: str
    attack: str
    eps: float
    # "robust" or "clean" accuracy of the cell; "norm": mean perturbation norm of its successful attacks;
    # "worst": robust accuracy under the worst case per sample over `attacks` (each at this eps, with the
    # settings attack_overrides[attack]);
    # "queries": mean defense queries per attacked sample; "seconds": wall seconds per sample;
    # regression cells: "mse" (perturbed), "clean_mse", "e", "smape" (otbench.metrics)
    metric: str = "robust"
    paper_setting: str | None = None
    attack_overrides: dict[str, Any] = field(default_factory=dict)
    attacks: tuple[str, ...] = ()
    paper_metric: str | None = None  # the paper's metric, where one setting has several (MSE, E, SMAPE)


REGRESSION_METRICS = ("mse", "clean_mse", "e", "smape")
FIGURE_STYLES = ("lines", "curve")


def row_attack(row: Row, column: Column) -> str:
    """The attack a table cell reads: the row's own, else the column's."""
    return row.attack or column.attack


def column_config(column: Column, attack: str, row: Row | None = None) -> dict[str, Any]:
    """The settings of `attack` in `column` (a worst-case column keeps one dict per attack), then the row's own."""
    base = dict(column.attack_overrides.get(attack, {})) if column.metric == "worst" else dict(column.attack_overrides)
    return {**base, **(row.attack_config if row is not None and row.attack else {})}


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
        from .cells import collect

        return collect(self, store, ctx.preset, ctx.fallback)

    def fill(self, store: Any, ctx: ReportContext) -> None:
        from .cells import fill_cells

        fill_cells(self, store, ctx)

    def render(self, store: Any, out_dir: Path, ctx: ReportContext) -> list[Path]:
        from .render import render_table

        return render_table(self, store, Path(out_dir), ctx.preset, ctx.fallback)
