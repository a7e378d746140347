"""The cells of an attack-cell table (spec.py): each (row, column) found in the results store at a preset (a
row with no result there may be taken whole from a fallback preset), and `fill_cells`, which runs the missing
ones through a run plan."""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..config import merge
from ..defense import build_config
from ..metrics import regression_metrics
from ..registry import ATTACKS, DEFENSES
from ..runner import MixedNetworks, worst_case
from ..store import ResultStore
from .paper import paper_value
from .layout import REGRESSION_METRICS, Column, Row, column_config, row_attack
from .table import ReportContext

if TYPE_CHECKING:
    from ..plan import RunPlan
    from .spec import TableSpec


@dataclass
class Cell:
    row: Row
    column: Column
    measured: float | None  # percent; for the regression metrics (mse, e, smape) their value
    paper: float | None
    n: int
    cell_id: str | None
    status: str  # "measured", "not run", "not available", "mixed networks" (worst case over two networks)
    preset: str = ""  # the preset the cell was found at
    fallback: bool = False  # its row had no result at the table's preset and was taken from a smaller one


def expected_configs(spec: TableSpec, row: Row, column: Column, preset: str) -> tuple[dict, dict] | None:
    """The defense and attack configs a stored cell must have to count for this table cell."""
    if row.defense not in DEFENSES:
        return None
    cls = DEFENSES.get(row.defense)
    if preset not in cls.presets:
        return None
    defense_cfg = build_config(cls, preset, row.overrides)
    attack = row_attack(row, column)
    attack_cfg = merge(ATTACKS.get(attack).defaults, column_config(column, attack, row), attack)
    return defense_cfg, attack_cfg


def find_cell(store: ResultStore, spec: TableSpec, row: Row, column: Column, preset: str) -> dict | None:
    expected = expected_configs(spec, row, column, preset)
    if expected is None:
        return None
    defense_cfg, attack_cfg = expected
    best = None
    stored_name = DEFENSES.get(row.defense).name  # FILE.py:NAME is stored under its name with the file's hash
    for cell in store.cells(dataset=spec.dataset, defense=stored_name, attack=row_attack(row, column), preset=preset):
        if abs(cell["eps"] - column.eps) > 1e-12:
            continue
        stored_attack = {k: v for k, v in cell["attack_config"].items() if k != "chunk_size"}
        if stored_attack != attack_cfg or any(cell["defense_config"].get(s) != defense_cfg.get(s)
                                              for s in ("train", "defense")):
            continue
        cell["n"] = store.count_rows(cell["cell_id"])  # a count, not every row of every candidate
        if cell["n"] and (best is None or (cell["n"], cell["created_at"]) > (best["n"], best["created_at"])):
            best = cell
    return best


def row_label(cell: Cell) -> str:
    """The row's label, marked when the row was taken from a fallback preset."""
    return cell.row.label + (f" [preset {cell.preset}]" if cell.fallback else "")


def collect(spec: TableSpec, store: ResultStore, preset: str, fallback: tuple[str, ...] = ()) -> list[Cell]:
    """Every cell of the table at `preset`. A row with no result there is taken whole from the first preset of
    `fallback` that has one (the former paper network `paper-v1`, or `quick` where a paper-scale model needs a
    GPU), never mixed within a row; its cells carry that preset."""
    out = []
    for row in spec.rows:
        cells = [_collect_cell(spec, store, row, column, preset) for column in spec.columns]
        for other in (f for f in fallback if f != preset):
            if any(c.status == "measured" for c in cells):
                break
            taken = [_collect_cell(spec, store, row, column, other) for column in spec.columns]
            if any(c.status == "measured" for c in taken):
                cells = [replace(c, fallback=True) for c in taken]
        out += cells
    return out


def _collect_cell(spec: TableSpec, store: ResultStore, row: Row, column: Column, preset: str) -> Cell:
    setting = column.paper_setting.format(**row.overrides.get("defense", {})) if column.paper_setting else None
    paper = paper_value(spec.paper, spec.paper_table, spec.paper_dataset or spec.dataset, row.paper_method,
                        setting, column.paper_metric) if row.paper_method and setting else None
    if row.defense not in DEFENSES:
        return Cell(row, column, None, paper, 0, None, "not available", preset)
    if column.metric == "worst" or row.worst_of:
        if row.worst_of and column.metric not in ("robust", "clean"):
            return Cell(row, column, None, paper, 0, None, "n/a", preset)
        return _worst_cell(store, spec, row, column, preset, paper)
    cell = find_cell(store, spec, row, column, preset)
    if cell is None:
        return Cell(row, column, None, paper, 0, None, "not run", preset)
    if column.metric in REGRESSION_METRICS:
        outs = store.outputs(cell["cell_id"])
        value = regression_metrics([o.target for o in outs], [o.clean_out for o in outs],
                                   [o.adv_out for o in outs])[column.metric] if outs else None
        return Cell(row, column, value, paper, len(outs), cell["cell_id"], "measured", preset)
    rows = store.rows(cell["cell_id"])
    if column.metric == "norm":
        won = [r.pert_norm for r in rows if r.clean_correct and not r.robust]
        value = sum(won) / len(won) if won else None
    elif column.metric == "queries":  # over the samples the attack worked on (clean-correct ones)
        spent = [r.queries for r in rows if r.clean_correct and r.queries is not None]
        value = sum(spent) / len(spent) if spent else None
    elif column.metric == "seconds":
        value = sum(c["wall_seconds"] for c in store.chunk_records(cell["cell_id"])) / max(len(rows), 1)
    else:
        value = 100.0 * sum(r.clean_correct if column.metric == "clean" else r.robust for r in rows) / len(rows)
    return Cell(row, column, value, paper, len(rows), cell["cell_id"], "measured", preset)


def _worst_cell(store: ResultStore, spec: TableSpec, row: Row, column: Column, preset: str,
                paper: float | None) -> Cell:
    """Robust only if robust under every attack of the column (or of the row's `worst_of`): the per-sample worst
    case, on the samples every attack saw; a row's clean accuracy is read from its first attack's cell."""
    found = [find_cell(store, spec, Row(row.label, row.defense, overrides=row.overrides), Column(a, a, column.eps,
                       attack_overrides=cfg), preset) for a, cfg in worst_parts(row, column)]
    if any(f is None for f in found):
        return Cell(row, column, None, paper, 0, None, "not run", preset)
    try:
        worst = worst_case(store, [f["cell_id"] for f in found],
                           metric="clean" if column.metric == "clean" else "robust")
    except MixedNetworks:  # e.g. one attack's cell from a network retrained on another CPU: no honest minimum
        return Cell(row, column, None, paper, 0, None, "mixed networks", preset)
    return Cell(row, column, 100.0 * worst["robust_accuracy"], paper, worst["n"], None, "measured", preset)


def worst_parts(row: Row, column: Column) -> list[tuple[str, dict]]:
    """The (attack, settings) a worst-case cell takes the minimum over."""
    if row.worst_of:
        return [(a, dict(cfg)) for a, cfg in row.worst_of]
    return [(a, column_config(column, a)) for a in column.attacks]


def fill_cells(spec: TableSpec, store: ResultStore, ctx: ReportContext) -> None:
    """Run every cell of the table the store does not hold at ctx.preset (`fill_plan`)."""
    plan = fill_plan(spec, store, ctx)
    if plan is not None:
        plan.execute(store, progress=ctx.progress, backend=ctx.backend)


def fill_plan(spec: TableSpec, store: ResultStore, ctx: ReportContext) -> "RunPlan | None":
    """The validated run plan for the cells the store lacks at ctx.preset (None: nothing is missing): one job per
    row and attack settings, with the table's exact settings (no automatic EOT, no extra checks: the report
    re-runs the stored-cell checks itself)."""
    from ..plan import AttackJob, DefenseJob, RunPlan

    missing = [c for c in collect(spec, store, ctx.preset) if c.status == "not run"]
    # (defense, its overrides, attack, settings) -> eps: a worst-case row asks for its attack rows' own cells once
    jobs: dict[tuple[str, str, str, str], list[float]] = {}
    for c in missing:
        worst = c.column.metric == "worst" or c.row.worst_of
        parts = worst_parts(c.row, c.column) if worst else [(row_attack(c.row, c.column),
                                                             column_config(c.column, row_attack(c.row, c.column), c.row))]
        for attack, config in parts:
            key = (c.row.defense, json.dumps(c.row.overrides, sort_keys=True), attack, json.dumps(config, sort_keys=True))
            eps = jobs.setdefault(key, [])
            if c.column.eps not in eps:
                eps.append(c.column.eps)
    if not jobs:
        return None
    plan = RunPlan(spec.dataset, [DefenseJob(defense, ctx.preset, json.loads(overrides),
                                             (AttackJob(attack, tuple(eps), json.loads(config)),))
                                  for (defense, overrides, attack, config), eps in jobs.items()],
                   checks=False, auto_eot=False, **ctx.plan_options())
    plan.validate()
    return plan
