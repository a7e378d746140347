"""Render registered tables from the results store: Markdown, CSV, LaTeX and accuracy-vs-eps figures,
each measured value beside the paper's and the gap, with the commands, preset, n and machine behind them."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..defense import PRESET_NOTES, preset_note
from ..store import ResultStore
from .cells import Cell, collect, row_label
from .figures import FIGURES
from .layout import ATTACK_METRICS, REGRESSION_METRICS, Column, Row

if TYPE_CHECKING:
    from .analysis import AnalysisTable, Value
    from .spec import TableSpec
    from .table import ReportContext


def fallback_note(fallen: list[str], preset: str) -> str:
    """Why some rows carry another preset's mark, and what that means for their gap to the paper."""
    return (f"Rows marked `[preset {', '.join(fallen)}]` have no result at preset `{preset}` and were taken whole from "
            f"that preset: {', '.join(preset_note(p) for p in fallen)}. Their gap "
            f"to the paper measures that model, not the method; the trained-network lines below name each row's.")


CLEAN_GAP_POINTS = 2.0  # a row further than this from the paper's clean accuracy is not the paper's model


def clean_gap_lines(gaps: list[tuple[str, str, str, float, float]]) -> list[str]:
    """Every (row label, defense, preset, measured, paper) clean accuracy further than CLEAN_GAP_POINTS from
    the paper's, with the defense's stated cause for that preset (`Defense.known_gaps`), else what the preset is
    where it is not a paper's own (`quick`, `cpu`, `paper-v1`: describe_preset), else the absence of a cause: a
    table never shows another model as the paper's without saying so beside it."""
    from ..registry import DEFENSES

    lines = []
    for label, defense, preset, measured, paper in gaps:
        if abs(measured - paper) <= CLEAN_GAP_POINTS:
            continue
        cls = DEFENSES.get(defense) if defense in DEFENSES else None
        # a cause the defense states for the preset, else what the preset is when it is not the paper's own
        why = (cls.known_gaps.get(preset) if cls is not None else None) or (
            f"the model of {preset_note(preset)}" if preset in PRESET_NOTES else "no cause is known yet")
        line = f"- {label} (preset `{preset}`): {measured:.1f} against {paper:.1f} ({measured - paper:+.1f}): {why}."
        lines += [] if line in lines else [line]
    if not lines:
        return []
    return [f"Clean accuracy more than {CLEAN_GAP_POINTS:g} points from the paper's (the row's model is not the "
            f"paper's; its robust numbers are measured on that model):", "", *lines, ""]


def provenance(cells: list[Cell], store: ResultStore) -> list[dict[str, Any]]:
    """One entry per measured store cell: what made it, where, how long."""
    seen: dict[str, dict[str, Any]] = {}
    out = []
    for c in cells:
        if c.cell_id is None:
            continue
        if c.cell_id in seen:  # one stored cell can fill several columns (clean and robust accuracy)
            seen[c.cell_id]["column"] += f" + {c.column.label}"
            continue
        runs = store.runs(c.cell_id)
        chunks = store.chunk_records(c.cell_id)
        (cell,) = store.cells(cell_id=c.cell_id)
        seen[c.cell_id] = {
            "row": row_label(c), "column": c.column.label, "n": c.n,
            "commands": sorted({r["command"] + ("" if r["status"] == "complete" else " (killed or still running)")
                                for r in runs}),
            "machine": sorted({ch["machine"] for ch in chunks}), "device": sorted({ch["device"] for ch in chunks}),
            "wall_seconds": round(sum(ch["wall_seconds"] for ch in chunks), 1),
            "versions": json.loads(chunks[-1]["versions"]) if chunks else {},
            "trained": cell["defense_config"].get("trained"), "attack_config": cell["attack_config"],
        }
        out.append(seen[c.cell_id])
    return out


def _provenance_lines(prov: list[dict[str, Any]]) -> list[str]:
    """Cells made the same way (command, machine, versions) share one line."""
    groups: dict[tuple, list[dict]] = {}
    for p in prov:
        key = (" | ".join(p["commands"]), "; ".join(p["machine"]), "; ".join(p["device"]),
               p["versions"].get("torch"), p["versions"].get("otbench-git", p["versions"].get("otbench")))
        groups.setdefault(key, []).append(p)
    lines = []
    for (command, host, device, torch_v, ours), items in groups.items():
        cells = ", ".join(f"{p['row']} / {p['column']} (n = {p['n']}, {p['wall_seconds']} s)" for p in items)
        lines.append(f"- `{command}` on {host}, {device}; torch {torch_v}, otbench {ours}: {cells}")
    models: dict[str, list[str]] = {}  # one line per trained network, naming the rows that used it
    for p in prov:
        if p["trained"]:
            rows = models.setdefault(json.dumps(p["trained"], sort_keys=True), [])
            rows += [] if p["row"] in rows else [p["row"]]
    for m, rows in sorted(models.items(), key=lambda item: item[1]):
        lines.append(f"- trained network of {', '.join(rows)}: {_record_text(json.loads(m))}")
    return lines


def _record_text(rec: dict[str, Any]) -> str:
    """A training record as text; a purifier's record nests its parts (otbench/baselines/purification.py)."""
    if all(isinstance(v, dict) for v in rec.values()):
        return "; ".join(f"{part}: {_record_text(sub)}" for part, sub in rec.items())
    score = f"test MSE {rec['test_mse']:.4f}" if "test_mse" in rec else \
        f"test accuracy {100 * rec['test_accuracy']:.2f}%" if "test_accuracy" in rec else ""
    extra = ", ".join(f"{k} {v}" for k, v in sorted(rec.items())
                      if k not in ("test_mse", "test_accuracy", "train_seconds", "device"))
    what = ", ".join(t for t in (score, extra) if t) or "no test score"
    return f"{what}, trained in {rec.get('train_seconds')} s on {rec.get('device')}"


def _regression(column: Column) -> bool:
    return column.metric in REGRESSION_METRICS


def _fmt(v: float | None, column: Column | None = None) -> str:
    if v is None:
        return ""
    if column is not None and column.metric == "queries":
        return f"{v:.0f}"
    if column is not None and column.metric == "seconds":
        return f"{v:.2f}"
    return f"{v:.3f}" if column is not None and _regression(column) else f"{v:.1f}"


def _gap(c: Cell) -> str:
    """Accuracy: the difference in points; regression metrics: relative to the paper's value."""
    if c.measured is None or c.paper is None:
        return ""
    if _regression(c.column):
        return f"{100 * (c.measured - c.paper) / c.paper:+.0f}%" if c.paper else ""
    return f"{c.measured - c.paper:+.1f}"


def frame(cells: list[Cell]) -> pd.DataFrame:
    records = []
    for c in cells:
        digits = 4 if _regression(c.column) else 2
        records.append({"method": c.row.label, "column": c.column.label,
                        "measured": None if c.measured is None else round(c.measured, digits),
                        "paper": c.paper,
                        "gap": None if c.measured is None or c.paper is None else round(c.measured - c.paper, digits),
                        "n": c.n, "status": c.status, "preset": c.preset, "cell_id": c.cell_id})
    return pd.DataFrame.from_records(records)


def render_table(spec: TableSpec, store: ResultStore, out_dir: Path, preset: str,
                 fallback: tuple[str, ...] = ()) -> list[Path]:
    cells = collect(spec, store, preset, fallback)
    out_dir.mkdir(parents=True, exist_ok=True)
    df = frame(cells)
    paths = [out_dir / f"{spec.name}.csv", out_dir / f"{spec.name}.md", out_dir / f"{spec.name}.tex"]
    df.to_csv(paths[0], index=False)
    prov = provenance(cells, store)
    paths[1].write_text(markdown(spec, cells, prov, preset, table_flags(cells, store)))
    paths[2].write_text(latex(spec, cells))
    if spec.figure and any(c.measured is not None for c in cells):
        extra = {"worst": _worst_beside(spec, cells, store)} if spec.figure_style == "lines" else {}
        paths.append(FIGURES[spec.figure_style](spec, cells, preset, out_dir / f"{spec.name}.png", **extra))
    return paths


def _worst_beside(spec: TableSpec, cells: list[Cell], store: ResultStore) -> dict[str, dict[float, tuple[float, int]]]:
    """Per row, the per-sample worst case over every attack stored for its defense (leaderboard.py), for the
    figure to draw beside the table's attack; only where the table's attack has a norm budget for eps."""
    from ..registry import ATTACKS
    from .leaderboard import worst_cases_beside

    first = {}
    for c in cells:
        bounded = c.column.attack in ATTACKS and ATTACKS.get(c.column.attack).bounded
        if c.cell_id and c.column.metric == "robust" and bounded and c.row.label not in first:
            first[c.row.label] = c.cell_id
    return worst_cases_beside(store, first)


def _grid(spec: TableSpec, cells: list[Cell]) -> list[list[str]]:
    by = {(c.row.label, c.column.label): c for c in cells}
    # a column the paper has no number for (queries, seconds, a table of our own) shows the measured value alone
    published = {col.label for col in spec.columns if any(by[(row.label, col.label)].paper is not None
                                                          for row in spec.rows)}
    grid = []
    for row in spec.rows:
        line = [row_label(by[(row.label, spec.columns[0].label)])]
        row_n = max(by[(row.label, col.label)].n for col in spec.columns)
        for col in spec.columns:
            c = by[(row.label, col.label)]
            if c.status == "n/a":  # the column does not apply to the row (a worst-case row's queries)
                line.append("–")
                continue
            if c.status == "not available":
                measured = "n/a"
            elif c.status in ("not run", "mixed networks"):
                measured = c.status
            else:
                measured = _fmt(c.measured, col)
            paper = _fmt(c.paper, col) if c.paper is not None else "–"
            gap = _gap(c)
            fewer = f" [n={c.n}]" if c.status == "measured" and c.n != row_n else ""
            if col.label not in published:
                line.append(measured + fewer)
                continue
            line.append(f"{measured} / {paper}" + (f" ({gap})" if gap else "") + fewer)
        line.append(str(row_n))
        grid.append(line)
    return grid


def table_flags(cells: list[Cell], store: ResultStore) -> list[dict[str, Any]]:
    """Flags recorded with the table's cells, plus the stored-cell checks re-run over the table's cells."""
    from ..checks import cell_flags

    ids = [c.cell_id for c in cells if c.cell_id]
    # re-run over every stored cell of the same defenses, so a Square cell can flag this table's BPDA cell
    mine = [store.cells(cell_id=i)[0] for i in dict.fromkeys(ids)]
    related = {c["cell_id"]: c for m in mine for c in store.cells(dataset=m["dataset"], defense=m["defense"])}
    fresh = [f for f in cell_flags(store, list(related.values())) if set(f.cells) & set(ids)]
    recomputed = {f.code for f in fresh} | {"eps0-not-clean", "eps-not-monotone", "gradient-free-beats-gradient",
                                           "clean-near-chance"}
    # stored cross-cell verdicts may predate the latest samples: those checks are re-run on the cells as they are
    kept = [f for f in store.flags(ids) if f["code"] not in recomputed]
    return kept + [f.as_dict() for f in fresh]


def _flag_lines(flags: list[dict[str, Any]]) -> list[str]:
    if not flags:
        return ["No diagnostic fired (README.md, Diagnostics, lists the checks)."]
    order = {"error": 0, "warning": 1, "info": 2}
    return [f"- **{f['level']}** `{f['code']}`: {f['message']}" for f in sorted(flags, key=lambda f: order[f["level"]])]


def markdown(spec: TableSpec, cells: list[Cell], prov: list[dict], preset: str,
             flags: list[dict[str, Any]] | None = None) -> str:
    header = ["Method"] + [c.label for c in spec.columns] + ["n"]
    lines = [f"# {spec.title}", "",
             f"papers/{spec.paper}.txt, Table {spec.paper_table}; dataset `{spec.dataset}`, preset `{preset}`.",
             ("Each cell: **measured / paper (gap)** where the paper has a number, else measured alone; " if any(
                 c.paper is not None for c in cells) else "Each cell: measured (the paper has no number here); ") + (
                 "MSE, E and SMAPE (otbench/metrics.py; lower is better), the gap relative to the paper's value."
                 if all(_regression(c) for c in spec.columns) else "accuracy in percent" + (
                     "; `queries` in defense queries per sample, `s/sample` in seconds." if any(
                         c.metric in ("queries", "seconds") for c in spec.columns) else ".")) +
             " `n/a`: defense not yet registered in otbench; `not run`: no matching result in the store.", ""]
    if spec.note:
        lines += [spec.note, ""]
    fallen = sorted({c.preset for c in cells if c.fallback and c.status == "measured"})
    if fallen:
        lines += [fallback_note(fallen, preset), ""]
    lines += clean_gap_lines([(c.row.label, c.row.defense, c.preset or preset, c.measured, c.paper) for c in cells
                              if c.column.metric == "clean" and c.measured is not None and c.paper is not None])
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in _grid(spec, cells)]
    lines += ["", "## Diagnostics", ""]
    lines += _flag_lines(flags)
    lines += ["", "## How these numbers were made", ""]
    if not prov:
        lines.append("No measured cell yet.")
    lines += _provenance_lines(prov)
    return "\n".join(lines) + "\n"


def latex(spec: TableSpec, cells: list[Cell]) -> str:
    cols = "l" + "c" * (len(spec.columns) + 1)
    body = [" & ".join(["Method"] + [c.label for c in spec.columns] + ["$n$"]) + r" \\ \hline"]
    for r in _grid(spec, cells):
        body.append(" & ".join(x.replace("_", r"\_") for x in r) + r" \\")
    return "\n".join([r"% generated by otbench report; cells are measured / paper (gap)",
                      r"\begin{table}[t]", r"\centering", rf"\caption{{{spec.title}}}", rf"\begin{{tabular}}{{{cols}}}",
                      *body, r"\end{tabular}", r"\end{table}"]) + "\n"


# -- analysis tables (analysis.py) ------------------------------------------------------------------------------
def _value_text(v: "Value", row_n: int) -> str:
    if v.status == "n/a":
        return "–"
    digits = v.metric.digits
    measured = {"not available": "n/a", "not run": "not run"}.get(v.status, "" if v.measured is None else
                                                                   f"{v.measured:.{digits}f}")
    paper = f"{v.paper:.{digits}f}" if v.paper is not None else "–"
    gap = f" ({v.measured - v.paper:+.{digits}f})" if v.measured is not None and v.paper is not None else ""
    fewer = f" [n={v.n}]" if v.status == "measured" and v.n and v.n != row_n else ""
    return f"{measured} / {paper}{gap}{fewer}"


def _analysis_grid(table: "AnalysisTable", values: list["Value"]) -> list[list[str]]:
    by = {(v.section.label, v.row.label, v.metric.label): v for v in values}
    lines = []
    for section in table.sections:
        for row in section.rows:
            mine = [by[(section.label, row.label, m.label)] for m in table.metrics]
            row_n = max((v.n for v in mine if v.metric.kind in ATTACK_METRICS), default=0) or \
                max((v.n for v in mine), default=0)
            mark = f" [preset {mine[0].fallback}]" if mine and mine[0].fallback else ""
            lines.append([section.label, row.label + mark] + [_value_text(v, row_n) for v in mine] + [str(row_n)])
    return lines


def render_analysis(table: "AnalysisTable", store: ResultStore, out_dir: Path, ctx: "ReportContext") -> list[Path]:
    values = table.collect(store, ctx)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / f"{table.name}.csv", out_dir / f"{table.name}.md"
    records = [{"section": v.section.label, "dataset": v.section.dataset, "method": v.row.label,
                "metric": v.metric.label, "kind": v.metric.kind,
                "measured": None if v.measured is None else round(v.measured, 4), "paper": v.paper,
                "gap": None if v.measured is None or v.paper is None else round(v.measured - v.paper, 4),
                "n": v.n, "status": v.status, "cell_id": v.cell_id} for v in values]
    pd.DataFrame.from_records(records).to_csv(csv_path, index=False)
    cells = [Cell(Row(f"{v.section.label} / {v.row.label}", v.row.defense), Column(v.metric.label, v.section.attack or "",
                                                                                  v.section.eps), v.measured, v.paper,
                  v.n, v.cell_id, v.status) for v in values if v.cell_id]
    trained = [v for v in values if v.trained]
    named = [v.trained for v in trained]  # networks a `training` metric shows are listed per row, below
    prov = [{**p, "trained": None} if p["trained"] in named else p for p in provenance(cells, store)]
    header = ["Data", "Method"] + [m.label for m in table.metrics] + ["n"]
    lines = [f"# {table.title}", "",
             f"papers/{table.paper}.txt, {'Fig.' if table.is_figure else 'Table'} {table.paper_table}; preset "
             f"`{ctx.preset}`.",
             "Each cell: **measured / paper (gap)**; accuracies in percent. `–`: not given or not applicable; "
             "`not run`: no matching result in the store; `[n=...]`: fewer samples than the row's attack cell.", ""]
    if table.note:
        lines += [table.note, ""]
    fallen = sorted({v.fallback for v in values if v.fallback})
    if fallen:
        lines += [fallback_note(fallen, ctx.preset), ""]
    if table.paper_extra_source:
        lines += [table.paper_extra_source, ""]
    lines += clean_gap_lines([(f"{v.section.label} / {v.row.label}", v.row.defense, v.fallback or ctx.preset,
                               v.measured, v.paper) for v in values
                              if v.metric.kind == "clean" and v.measured is not None and v.paper is not None])
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in _analysis_grid(table, values)]
    lines += ["", "## How these numbers were made", ""]
    made = _provenance_lines(prov) + analysis_lines(values)
    networks = {f"{v.section.label} / {v.row.label}": v.trained for v in trained}
    made += [f"- network of {row}: {_record_text(rec)}" for row, rec in sorted(networks.items())]
    lines += made or ["No measured value yet."]
    md_path.write_text("\n".join(lines) + "\n")
    paths = [csv_path, md_path]
    if table.figure is not None and any(v.measured is not None for v in values):
        paths.append(table.figure(table, values, out_dir / f"{table.name}.png"))
    return paths


def analysis_lines(values: list["Value"]) -> list[str]:
    """One provenance line per stored analysis record the table shows."""
    seen, lines = set(), []
    for v in values:
        rec = v.record
        if rec is None or rec.key in seen:
            continue
        seen.add(rec.key)
        params = ", ".join(f"{k}={val}" for k, val in rec.identity["params"].items())
        lines.append(f"- {v.section.label} / {v.row.label}: `{rec.kind}`{' (' + params + ')' if params else ''} on "
                     f"{len(rec.sample_ids)} samples, {rec.wall_seconds:.0f} s on {rec.machine}, {rec.device}; "
                     f"`{rec.command}`")
    return lines
