"""The published numbers of both papers (shared/reference/paper_tables.csv, shipped as package data)."""
from __future__ import annotations

import csv
from functools import lru_cache
from importlib.resources import files


@lru_cache(maxsize=1)
def paper_values() -> dict[tuple[str, str, str, str, str], float]:
    """(paper, table, dataset, method, setting) -> value, for metric 'accuracy' and the others alike."""
    text = files("otbench.report").joinpath("paper_tables.csv").read_text()
    return {(r["paper"], r["table"], r["dataset"], r["method"], r["setting"]): float(r["value"])
            for r in csv.DictReader(text.splitlines())}


@lru_cache(maxsize=1)
def paper_metric_values() -> dict[tuple[str, str, str, str, str, str], float]:
    """(paper, table, dataset, method, setting, metric) -> value: for settings with several metrics."""
    text = files("otbench.report").joinpath("paper_tables.csv").read_text()
    return {(r["paper"], r["table"], r["dataset"], r["method"], r["setting"], r["metric"]): float(r["value"])
            for r in csv.DictReader(text.splitlines())}


def paper_value(paper: str, table: str, dataset: str, method: str, setting: str,
                metric: str | None = None) -> float | None:
    if metric is not None:
        return paper_metric_values().get((paper, table, dataset, method, setting, metric))
    return paper_values().get((paper, table, dataset, method, setting))
