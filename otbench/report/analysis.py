"""Analysis tables: sections (a dataset, and an attack at a budget) of rows (defenses) x metrics, where a metric
is one of
- `clean` / `robust`: the accuracy of an attack cell of the results store (the section's attack, or the
  metric's own at the section's eps);
- `training`: a value of the training record of the row's network (its test accuracy...), as stored with the
  row's cells;
- `analysis`: a quantity computed by a declared `Analysis` (a function the paper package supplies: a relative
  error, a Lipschitz estimate, codes of adversarial images, an intrinsic dimension) and stored per sample in
  the store's `analyses` table under an identity (the analysis, the defense config, its parameters), so a
  larger n only computes the missing samples;
- `constant`: a value the table states (a setting the paper chose), shown beside the paper's.
`fill` trains, attacks (through a run plan and the runner's guard) and analyses whatever is missing."""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ..defense import build_config
from ..errors import OTBenchError
from ..registry import DEFENSES
from ..store import AnalysisRecord, ResultStore
from .paper import paper_value
from .layout import ATTACK_METRICS, Column, Row
from .render import render_analysis
from .spec import TableSpec
from .table import ReportContext, Table

KINDS = (*ATTACK_METRICS, "training", "analysis", "constant")
PIXELS = "pixels"  # the `defense` of an analysis of the data themselves


@dataclass(frozen=True)
class Analysis:
    """A quantity `otbench report --fill` computes and stores.

    subject "defense": `compute(defense, x, y, params, seed) -> {key: per-sample values}` on the row's defense
    and the test subset; with `per_sample` False it is one computation over at most `max_n` samples (t-SNE),
    and n is part of its identity. subject "data": `compute(data, params) -> (sample ids, {key: values})` on
    the section's dataset, no defense."""

    kind: str
    compute: Callable[..., Any]
    params: dict[str, Any] = field(default_factory=dict)
    subject: str = "defense"
    per_sample: bool = True
    max_n: int | None = None


@dataclass(frozen=True)
class Metric:
    label: str
    kind: str  # one of KINDS
    paper_metric: str | None = None  # the paper's metric name for this value
    digits: int = 1
    attack: str | None = None  # clean/robust of this attack (default settings, the section's eps)
    analysis: str | None = None  # kind "analysis": which Analysis
    # analysis: the key of the stored values whose mean is shown, or a function of all of them; training: the
    # record's key (times `scale`)
    value: str | Callable[[dict[str, list[Any]]], float | None] | None = None
    scale: float = 1.0
    applies_to: tuple[str, ...] | None = None  # defenses the metric applies to; the others show "–"
    paper_method: str | None = None  # the paper's method name, when it is not the row's
    paper_setting: str | None = None  # the paper's setting, when it is not the section's
    constants: dict[str, float] = field(default_factory=dict)  # kind "constant": section label -> value


@dataclass(frozen=True)
class Section:
    label: str
    dataset: str
    attack: str | None = None
    eps: float = 0.0
    rows: tuple[Row, ...] = ()
    attack_overrides: dict[str, Any] = field(default_factory=dict)
    paper_dataset: str | None = None
    paper_setting: str | None = None


@dataclass
class Value:
    section: Section
    row: Row
    metric: Metric
    measured: float | None
    paper: float | None
    n: int
    status: str  # "measured", "not run", "not available", "n/a" (the metric does not apply to the row)
    cell_id: str | None = None
    record: AnalysisRecord | None = None
    trained: dict[str, Any] | None = None
    fallback: str | None = None  # the preset the row was taken from, when it had nothing at the table's


@dataclass(frozen=True)
class AnalysisTable(Table):
    sections: tuple[Section, ...] = ()
    metrics: tuple[Metric, ...] = ()
    analyses: tuple[Analysis, ...] = ()
    # paper values the values file does not hold (a figure's points): {(section, row, metric label): value}
    paper_extra: dict[tuple[str, str, str], float] = field(default_factory=dict)
    paper_extra_source: str = ""
    is_figure: bool = False  # the paper shows it as a figure (the Markdown says "Fig.")
    figure: Callable[["AnalysisTable", list[Value], Path], Path] | None = None

    def datasets(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.dataset for s in self.sections))

    def analysis(self, kind: str) -> Analysis:
        return next(a for a in self.analyses if a.kind == kind)

    def collect(self, store: ResultStore, ctx: ReportContext) -> list[Value]:
        """Every value at ctx.preset; a row with nothing measured there is taken whole from the first of
        ctx.fallback that has something for it (marked, as attack-cell tables do)."""
        out = []
        for s in self.sections:
            for r in s.rows:
                values = [self._value(store, ctx, s, r, m) for m in self.metrics]
                for other in (f for f in ctx.fallback if f != ctx.preset):
                    if any(v.status == "measured" and v.metric.kind != "constant" for v in values):
                        break
                    taken = [self._value(store, replace(ctx, preset=other), s, r, m) for m in self.metrics]
                    if any(v.status == "measured" and v.metric.kind != "constant" for v in taken):
                        values = [replace(v, fallback=other) for v in taken]
                out += values
        return out

    def fill(self, store: ResultStore, ctx: ReportContext) -> None:
        fill_analysis(self, store, ctx)

    def render(self, store: ResultStore, out_dir: Path, ctx: ReportContext) -> list[Path]:
        return render_analysis(self, store, Path(out_dir), ctx)

    # -- values ---------------------------------------------------------------------------------------------
    def identity(self, analysis: Analysis, section: Section, row: Row, preset: str, subset_seed: int,
                 n: int | None = None) -> dict[str, Any] | None:
        """The key an analysis is stored under (None when the row's defense is not available)."""
        if analysis.subject == "data":
            return {"analysis": analysis.kind, "defense": {"name": PIXELS, "dataset": section.dataset},
                    "params": dict(analysis.params), "subset_seed": analysis.params.get("seed", 0)}
        if row.defense not in DEFENSES or preset not in DEFENSES.get(row.defense).presets:
            return None
        config = build_config(DEFENSES.get(row.defense), preset, row.overrides)
        params = dict(analysis.params) if analysis.per_sample else {**analysis.params, "n": n}
        return {"analysis": analysis.kind, "defense": {**config, "name": row.defense, "dataset": section.dataset},
                "params": params, "subset_seed": subset_seed}

    def stored(self, store: ResultStore, analysis: Analysis, section: Section, row: Row,
               ctx: ReportContext) -> AnalysisRecord | None:
        """The stored record of an analysis; of a whole-subset one, the one with the most samples."""
        ident = self.identity(analysis, section, row, ctx.preset, ctx.subset_seed)
        if ident is None:
            return None
        if analysis.per_sample:
            return store.analysis(ident)
        best = None
        for rec in store.analyses(kind=analysis.kind, defense=row.defense, dataset=section.dataset):
            params = {k: v for k, v in rec.identity["params"].items() if k != "n"}
            same = {**rec.identity, "params": params} == {**ident, "params": {k: v for k, v in ident["params"].items()
                                                                                if k != "n"}}
            if same and (best is None or len(rec.sample_ids) > len(best.sample_ids)):
                best = rec
        return best

    def _paper(self, section: Section, row: Row, metric: Metric) -> float | None:
        extra = self.paper_extra.get((section.label, row.label, metric.label))
        if extra is not None:
            return extra
        method = metric.paper_method or row.paper_method
        setting = metric.paper_setting or section.paper_setting
        if not (metric.paper_metric and method and setting):
            return None
        return paper_value(self.paper, self.paper_table, section.paper_dataset or section.dataset, method, setting,
                           metric.paper_metric)

    def _value(self, store: ResultStore, ctx: ReportContext, section: Section, row: Row, metric: Metric) -> Value:
        paper = self._paper(section, row, metric)

        def value(*args: Any, **kw: Any) -> Value:
            return Value(section, row, metric, *args, **kw)

        if metric.applies_to is not None and row.defense not in metric.applies_to:
            return value(None, paper, 0, "n/a")
        if metric.kind == "constant":
            v = metric.constants.get(section.label)
            return value(v, paper, 0, "measured" if v is not None else "not run")
        analysis = self.analysis(metric.analysis) if metric.kind == "analysis" else None
        if analysis is not None and analysis.subject == "data":
            rec = self.stored(store, analysis, section, row, ctx)
            return value(None, paper, 0, "not run") if rec is None else \
                value(_reduce(metric, rec.vals), paper, len(rec.sample_ids), "measured", record=rec)
        if row.defense not in DEFENSES or ctx.preset not in DEFENSES.get(row.defense).presets:
            return value(None, paper, 0, "not available")
        if metric.kind in ATTACK_METRICS:
            cell = self._cell(store, section, row, metric, ctx.preset)
            if cell is None:
                return value(None, paper, 0, "not run")
            rows = store.rows(cell["cell_id"])
            v = 100.0 * sum(r.clean_correct if metric.kind == "clean" else r.robust for r in rows) / len(rows)
            return value(v, paper, len(rows), "measured", cell["cell_id"])
        if metric.kind == "training":
            trained = self._trained(store, section, row, ctx.preset)
            if trained is None or metric.value not in trained:
                return value(None, paper, 0, "not run")
            return value(metric.scale * trained[metric.value], paper, 0, "measured", trained=trained)
        rec = self.stored(store, analysis, section, row, ctx)
        if rec is None:
            return value(None, paper, 0, "not run")
        return value(_reduce(metric, rec.vals), paper, len(rec.sample_ids), "measured", record=rec)

    def _cell_spec(self, section: Section, metric: Metric) -> tuple[TableSpec, Column]:
        column = Column(metric.label, metric.attack or section.attack, section.eps, metric.kind, None,
                        {} if metric.attack else dict(section.attack_overrides))
        spec = TableSpec(f"{self.name}/{section.label}", self.title, self.paper, self.paper_table, section.dataset,
                         section.rows, (column,))
        return spec, column

    def _cell(self, store: ResultStore, section: Section, row: Row, metric: Metric, preset: str) -> dict | None:
        from .cells import find_cell

        spec, column = self._cell_spec(section, metric)
        return find_cell(store, spec, row, column, preset)

    def _trained(self, store: ResultStore, section: Section, row: Row, preset: str) -> dict[str, Any] | None:
        """The training record stored with any cell of the row's defense config (the same trained network)."""
        config = build_config(DEFENSES.get(row.defense), preset, row.overrides)
        for cell in store.cells(dataset=section.dataset, defense=row.defense, preset=preset):
            stored = cell["defense_config"]
            if all(stored.get(s) == config.get(s) for s in ("train", "defense")) and stored.get("trained"):
                return stored["trained"]
        return None


def _reduce(metric: Metric, vals: dict[str, list[Any]]) -> float | None:
    if callable(metric.value):
        return metric.value(vals)
    values = [v for v in vals[metric.value or metric.analysis] if v is not None]
    return sum(values) / len(values) if values else None


# -- filling ----------------------------------------------------------------------------------------------------
def _missing(table: AnalysisTable, values: list[Value], ctx: ReportContext) -> list[Value]:
    out = []
    for v in values:
        if v.status == "not run":
            out.append(v)
        elif v.status == "measured" and v.metric.kind in (*ATTACK_METRICS, "analysis") and v.n < ctx.n:
            analysis = table.analysis(v.metric.analysis) if v.metric.kind == "analysis" else None
            if analysis is None or (analysis.per_sample and analysis.subject == "defense"):
                out.append(v)  # a per-sample quantity on fewer samples than asked: add the missing ones
    return out


def fill_analysis(table: AnalysisTable, store: ResultStore, ctx: ReportContext) -> None:
    """Train, attack and analyse whatever the table lacks at ctx.n samples (resuming stored work)."""
    from ..data import eval_subset, load_dataset
    from ..defense import create_defense
    from ..plan import AttackJob, DefenseJob, RunPlan
    from ..provenance import command_line, device_name, machine, package_versions, resolve_device

    missing = _missing(table, table.collect(store, ctx), ctx)
    device = resolve_device(ctx.device)

    def save(ident: dict[str, Any], ids: list[int], vals: dict[str, list[Any]], start: float, where: str) -> None:
        store.save_analysis(ident, ids, vals, time.time() - start, where, command_line(), machine(),
                            package_versions())

    for section in table.sections:
        try:  # a section whose data are not on this machine is skipped, the others are filled
            data = load_dataset(section.dataset, ctx.data_root)
        except OTBenchError as exc:
            if any(v.section == section for v in missing):
                print(f"{table.name}: {section.label} not filled, {exc}", file=sys.stderr)
            continue
        for analysis in table.analyses:  # analyses of the data themselves: once per section
            if analysis.subject == "data" and any(v.section == section and v.metric.analysis == analysis.kind
                                                  for v in missing):
                start = time.time()
                ids, vals = analysis.compute(data, analysis.params)
                save(table.identity(analysis, section, section.rows[0], ctx.preset, ctx.subset_seed), ids, vals,
                     start, "cpu")
        for row in section.rows:
            todo = [v for v in missing if v.section == section and v.row == row and v.metric.kind != "constant"
                    and not (v.metric.kind == "analysis" and table.analysis(v.metric.analysis).subject == "data")]
            if not todo:
                continue
            subset = eval_subset(len(data.x_test), ctx.n, ctx.subset_seed)
            attacks: dict[str, AttackJob] = {}
            for v in todo:
                if v.metric.kind in ATTACK_METRICS or v.metric.kind == "training":
                    name = v.metric.attack or section.attack
                    if name is not None:
                        config = {} if v.metric.attack else dict(section.attack_overrides)
                        attacks.setdefault(name, AttackJob(name, (section.eps,), config))
            job = DefenseJob(row.defense, ctx.preset, row.overrides, tuple(attacks.values()))
            plan = RunPlan(section.dataset, [job], checks=False, auto_eot=False, **ctx.plan_options())
            if job.attacks:
                plan.validate()
            defense = create_defense(row.defense, data, ctx.preset, row.overrides, device)
            if job.attacks:
                plan.run_job(job, defense, subset, store, ctx.progress, backend=ctx.backend)
            kinds = dict.fromkeys(v.metric.analysis for v in todo if v.metric.kind == "analysis")
            for kind in kinds:
                analysis = table.analysis(kind)
                n = len(subset.ids) if analysis.max_n is None else min(len(subset.ids), analysis.max_n)
                ident = table.identity(analysis, section, row, ctx.preset, ctx.subset_seed, n)
                old = store.analysis(ident)
                done = set(old.sample_ids) if old else set()
                ids = [i for i in subset.ids[:n] if i not in done] if analysis.per_sample else \
                    ([] if old else list(subset.ids[:n]))
                if not ids:
                    continue
                index = torch.tensor(ids)
                start = time.time()
                vals = analysis.compute(defense, data.x_test[index], data.y_test[index], analysis.params, ctx.seed)
                save(ident, ids, vals, start, device_name(device))
                if ctx.progress:
                    print(f"{table.name}: {section.label} / {row.label}: {kind} on {len(ids)} samples in "
                          f"{time.time() - start:.0f} s", file=sys.stderr)
