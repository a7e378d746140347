"""Render registered tables from the results store: Markdown, CSV, LaTeX and accuracy-vs-eps figures,
each measured value beside the paper's and the gap, with the commands, preset, n and machine behind them."""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import merge
from ..defense import build_config
from ..metrics import regression_metrics
from ..registry import ATTACKS, DEFENSES
from ..store import ResultStore
from .paper import paper_value
from .spec import REGRESSION_METRICS, Column, Row, TableSpec, row_attack


@dataclass
class Cell:
    row: Row
    column: Column
    measured: float | None  # percent; for the regression metrics (mse, e, smape) their value
    paper: float | None
    n: int
    cell_id: str | None
    status: str  # "measured", "not run", "not available"
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
    attack_cfg = merge(ATTACKS.get(attack).defaults, column.attack_overrides, attack)
    return defense_cfg, attack_cfg


def find_cell(store: ResultStore, spec: TableSpec, row: Row, column: Column, preset: str) -> dict | None:
    expected = expected_configs(spec, row, column, preset)
    if expected is None:
        return None
    defense_cfg, attack_cfg = expected
    best = None
    for cell in store.cells(dataset=spec.dataset, defense=row.defense, attack=row_attack(row, column), preset=preset):
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


def collect(spec: TableSpec, store: ResultStore, preset: str, fallback: str | None = None) -> list[Cell]:
    """Every cell of the table at `preset`. A row with no result there is taken whole from `fallback` (e.g.
    `quick` where a paper-scale model needs a GPU), never mixed within a row; its cells carry that preset."""
    out = []
    for row in spec.rows:
        cells = [_collect_cell(spec, store, row, column, preset) for column in spec.columns]
        if fallback and fallback != preset and not any(c.status == "measured" for c in cells):
            smaller = [_collect_cell(spec, store, row, column, fallback) for column in spec.columns]
            if any(c.status == "measured" for c in smaller):
                cells = [replace(c, fallback=True) for c in smaller]
        out += cells
    return out


def _collect_cell(spec: TableSpec, store: ResultStore, row: Row, column: Column, preset: str) -> Cell:
    setting = column.paper_setting.format(**row.overrides.get("defense", {})) if column.paper_setting else None
    paper = paper_value(spec.paper, spec.paper_table, spec.paper_dataset or spec.dataset, row.paper_method,
                        setting, column.paper_metric) if row.paper_method and setting else None
    if row.defense not in DEFENSES:
        return Cell(row, column, None, paper, 0, None, "not available", preset)
    if column.metric == "worst":
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
    else:
        value = 100.0 * sum(r.clean_correct if column.metric == "clean" else r.robust for r in rows) / len(rows)
    return Cell(row, column, value, paper, len(rows), cell["cell_id"], "measured", preset)


def _worst_cell(store: ResultStore, spec: TableSpec, row: Row, column: Column, preset: str,
                paper: float | None) -> Cell:
    """Robust only if robust under every attack of the column: the per-sample worst case."""
    plain = replace(row, attack=None)  # each of the column's attacks, whatever the row names
    found = [find_cell(store, spec, plain, Column(a, a, column.eps, attack_overrides=column.attack_overrides.get(a, {})),
                       preset) for a in column.attacks]
    if any(f is None for f in found):
        return Cell(row, column, None, paper, 0, None, "not run", preset)
    per = [{r.sample_id: r.robust for r in store.rows(f["cell_id"])} for f in found]
    common = set.intersection(*(set(p) for p in per))
    value = 100.0 * sum(all(p[i] for p in per) for i in common) / max(len(common), 1)
    return Cell(row, column, value, paper, len(common), None, "measured", preset)


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
    """A training record as text; a purifier's record nests its parts (baselines/purification.py)."""
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
                 fallback: str | None = None) -> list[Path]:
    cells = collect(spec, store, preset, fallback)
    out_dir.mkdir(parents=True, exist_ok=True)
    df = frame(cells)
    paths = [out_dir / f"{spec.name}.csv", out_dir / f"{spec.name}.md", out_dir / f"{spec.name}.tex"]
    df.to_csv(paths[0], index=False)
    prov = provenance(cells, store)
    paths[1].write_text(markdown(spec, cells, prov, preset, table_flags(cells, store)))
    paths[2].write_text(latex(spec, cells))
    if spec.figure and any(c.measured is not None for c in cells):
        paths.append(figure(spec, cells, out_dir / f"{spec.name}.png"))
    return paths


def _grid(spec: TableSpec, cells: list[Cell]) -> list[list[str]]:
    by = {(c.row.label, c.column.label): c for c in cells}
    grid = []
    for row in spec.rows:
        line = [row_label(by[(row.label, spec.columns[0].label)])]
        row_n = max(by[(row.label, col.label)].n for col in spec.columns)
        for col in spec.columns:
            c = by[(row.label, col.label)]
            if c.status == "not available":
                measured = "n/a"
            elif c.status == "not run":
                measured = "not run"
            else:
                measured = _fmt(c.measured, col)
            paper = _fmt(c.paper, col) if c.paper is not None else "–"
            gap = _gap(c)
            fewer = f" [n={c.n}]" if c.status == "measured" and c.n != row_n else ""
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
    recomputed = {f.code for f in fresh} | {"eps0-not-clean", "eps-not-monotone", "gradient-free-beats-gradient"}
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
             "Each cell: **measured / paper (gap)**, " + (
                 "MSE, E and SMAPE (otbench/metrics.py; lower is better), the gap relative to the paper's value."
                 if all(_regression(c) for c in spec.columns) else "accuracy in percent.") +
             " `n/a`: defense not yet registered in otbench; `not run`: no matching result in the store.", ""]
    if spec.note:
        lines += [spec.note, ""]
    fallen = sorted({c.preset for c in cells if c.fallback and c.status == "measured"})
    if fallen:
        lines += [f"Rows marked `[preset {', '.join(fallen)}]` have no result at preset `{preset}` (most need a GPU "
                  "to train at that scale) and were measured at the reduced-scale preset instead: their gap to the "
                  "paper measures that smaller model, not the method.", ""]
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


def figure(spec: TableSpec, cells: list[Cell], path: Path) -> Path:
    """Accuracy vs eps per method (clean accuracy plotted at eps = 0), measured solid, paper dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    measured_rows = [r for r in spec.rows if any(c.measured is not None for c in cells if c.row.label == r.label)]
    for i, row in enumerate(measured_rows):
        mine = [c for c in cells if c.row.label == row.label]
        color = f"C{i % 10}"
        # the measured line carries the row's preset mark; the paper's line is the paper's, whatever we ran
        for key, style, label in (("measured", "-o", row_label(mine[0])), ("paper", "--x", f"{row.label} (paper)")):
            pts = sorted((0.0 if c.column.metric == "clean" else c.column.eps, getattr(c, key))
                         for c in mine if getattr(c, key) is not None and c.column.metric in ("clean", "robust"))
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=color, label=label,
                        alpha=1.0 if key == "measured" else 0.6)
    ax.set_xlabel(spec.x_label)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{spec.paper.upper()} Table {spec.paper_table}: {spec.dataset}")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the plot, never over a line
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path
