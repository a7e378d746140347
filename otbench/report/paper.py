"""The published numbers beside which tables are rendered. Each paper's reproduction package registers its
own values file (`register_paper_values`), so the report engine holds no paper of its own."""
from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import OTBenchError

_SOURCES: dict[str, Any] = {}  # paper -> a path or importlib.resources Traversable of its values CSV
COLUMNS = ("paper", "table", "dataset", "method", "setting", "metric", "value")


def register_paper_values(paper: str, source: Any) -> None:
    """Declare the CSV (columns COLUMNS, one published number per row) holding `paper`'s values."""
    _SOURCES[paper] = source
    _values.cache_clear()


@lru_cache(maxsize=None)
def _values(paper: str) -> dict[tuple[str, str, str, str, str], float]:
    if paper not in _SOURCES:
        # A paper registers its values when its tables load; a table built by hand must see them all the same.
        from ..registry import TABLES

        TABLES.names()
    if paper not in _SOURCES:
        return {}
    rows = list(csv.DictReader(Path(str(_SOURCES[paper])).read_text().splitlines())) \
        if isinstance(_SOURCES[paper], (str, Path)) else list(csv.DictReader(_SOURCES[paper].read_text().splitlines()))
    out = {}
    for r in rows:
        if tuple(r) != COLUMNS or r["paper"] != paper:
            raise OTBenchError(f"paper values of '{paper}' ({_SOURCES[paper]}): expected columns {', '.join(COLUMNS)} "
                               f"and paper '{paper}' on every row, got {r}")
        out[(r["table"], r["dataset"], r["method"], r["setting"], r["metric"])] = float(r["value"])
    return out


def paper_rows(paper: str) -> dict[tuple[str, str, str, str, str], float]:
    """(table, dataset, method, setting, metric) -> value of every registered number of `paper`."""
    return dict(_values(paper))


def paper_value(paper: str, table: str, dataset: str, method: str, setting: str,
                metric: str | None = None) -> float | None:
    """One published number; with no metric, the setting's only one (its 'accuracy', or whichever it has)."""
    values = _values(paper)
    if metric is not None:
        return values.get((table, dataset, method, setting, metric))
    found = [v for (t, d, m, s, _), v in values.items() if (t, d, m, s) == (table, dataset, method, setting)]
    return found[-1] if found else None
