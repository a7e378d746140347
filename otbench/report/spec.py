"""How a report table is declared: rows are defenses (with config), columns are (attack, eps, metric).
A row may name its own attack, which then replaces the column's (OTAD Table V: one row per attack)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Row:
    label: str
    defense: str
    paper_method: str | None = None  # the method's name in paper_tables.csv; None: not in the paper
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # {"defense": {...}, "train": {...}}
    attack: str | None = None  # overrides every column's attack for this row


@dataclass(frozen=True)
class Column:
    label: str
    attack: str
    eps: float
    # "robust" or "clean" accuracy of the cell; "norm": mean perturbation norm of its successful attacks;
    # "worst": robust accuracy under the worst case per sample over `attacks` (each at this eps, with the
    # settings attack_overrides[attack]);
    # regression cells: "mse" (perturbed), "clean_mse", "e", "smape" (otbench.metrics)
    metric: str = "robust"
    paper_setting: str | None = None
    attack_overrides: dict[str, Any] = field(default_factory=dict)
    attacks: tuple[str, ...] = ()
    paper_metric: str | None = None  # paper_tables.csv's metric, where one setting has several (MSE, E, SMAPE)


REGRESSION_METRICS = ("mse", "clean_mse", "e", "smape")


def row_attack(row: Row, column: Column) -> str:
    """The attack a table cell reads: the row's own, else the column's."""
    return row.attack or column.attack


@dataclass(frozen=True)
class TableSpec:
    name: str
    title: str
    paper: str
    paper_table: str
    dataset: str
    rows: tuple[Row, ...]
    columns: tuple[Column, ...]
    note: str = ""
    figure: bool = False  # also draw accuracy vs eps
    x_label: str = "L2 perturbation budget eps (0 = clean)"
    # the dataset the paper's values are filed under (paper_tables.csv), when the table measures another
    # variant of it (otad-table-5: the z-scored winequality-red-z against the paper's winequality-red)
    paper_dataset: str | None = None
