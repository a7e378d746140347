"""What a table is made of, as plain data: rows (defenses with their settings), columns (attack, eps, metric) and
the rules that read a cell's attack and settings from them. Every report module builds on these; none of them
imports a report module, so the report engine has no import cycle."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ATTACK_METRICS = ("clean", "robust")  # the metrics an attack cell holds (analysis tables mix them with others)


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
