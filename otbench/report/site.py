"""`otbench report --html DIR`: a static leaderboard site that opens from file:// with no network. Pages are Jinja2
templates (templates/), the script and style sheet ship with the package (static/), every table has CSV and JSON
downloads beside it, and nothing is read from the network. The store is only read."""
from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import Any

import pandas as pd

from ..store import ResultStore
from .leaderboard import Board, DefenseGroup, Entry, leaderboards
from .site_figures import defense_curves
from .table import ReportContext


def _environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(loader=PackageLoader("otbench.report", "templates"), autoescape=select_autoescape(["html"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["pct"] = lambda v: "" if v is None else f"{100 * v:.1f}"
    env.filters["num"] = lambda v, d=0: "" if v is None else f"{v:.{d}f}"
    return env


def board_records(board: Board) -> list[dict[str, Any]]:
    """A leaderboard as rows of plain values (its CSV and JSON downloads, and the page's cells)."""
    return [{"rank": e.rank, "defense": e.label, "name": e.defense, "preset": e.preset, "dataset": e.dataset,
             "norm": e.norm, "eps": e.eps, "clean_accuracy": round(100 * e.clean, 2),
             "best_known_robust_accuracy": round(100 * e.robust, 2), "best_attack": e.best_attack,
             "attacks": len(e.cells),
             "reference_attack": e.reference_label,
             "reference_robust_accuracy": None if e.reference is None else round(100 * e.reference.robust, 2),
             "reference_n": None if e.reference is None else e.reference.n, "n": e.n,
             "queries_per_sample": None if e.queries is None else round(e.queries, 1),
             "seconds_per_sample": None if e.seconds is None else round(e.seconds, 3),
             "flags": "; ".join(e.marks or sorted({f["code"] for f in e.flags})), "page": f"defenses/{e.key}.html"}
            for e in board.entries]


def attack_records(entry: Entry) -> list[dict[str, Any]]:
    return [{"eps": entry.eps, "norm": entry.norm, "attack": a.label, "needs": a.needs,
             "minimum_norm": a.minimum_norm, "n": a.n, "clean_accuracy": round(100 * a.clean, 2),
             "robust_accuracy": round(100 * a.robust, 2),
             "robust_accuracy_common_samples": None if a.robust_common is None else round(100 * a.robust_common, 2),
             "queries_per_sample": None if a.queries is None else round(a.queries, 1),
             "seconds_per_sample": None if a.seconds is None else round(a.seconds, 3), "seed": a.seed,
             "cell_id": a.cell_id} for a in sorted(entry.cells, key=lambda a: (a.robust_common, a.label))]


def _downloads(records: list[dict[str, Any]], stem: Path) -> dict[str, str]:
    """Write `records` as stem.csv and stem.json; the two paths relative to the site root."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv, js = stem.parent / f"{stem.name}.csv", stem.parent / f"{stem.name}.json"  # a stem may hold a dot (eps)
    pd.DataFrame.from_records(records).to_csv(csv, index=False)
    js.write_text(json.dumps(records, indent=1, default=str))
    root = stem.parent.parent
    return {"csv": csv.relative_to(root).as_posix(), "json": js.relative_to(root).as_posix()}


def _provenance(store: ResultStore, group: DefenseGroup) -> list[dict[str, Any]]:
    """Per stored cell: how it was made (runs: command, status; chunks: machine, device, versions), its seeds."""
    out = []
    for cell in sorted(group.cells, key=lambda c: (c["attack"], c["eps"], c["cell_id"])):
        chunks = store.chunk_records(cell["cell_id"])
        runs = store.runs(cell["cell_id"])
        versions = json.loads(chunks[-1]["versions"]) if chunks else {}
        out.append({"cell_id": cell["cell_id"], "attack": cell["attack"], "eps": cell["eps"],
                    "attack_config": json.dumps(cell["attack_config"], sort_keys=True), "seed": cell["seed"],
                    "subset_seed": cell["subset_seed"], "n": store.count_rows(cell["cell_id"]),
                    "commands": sorted({r["command"] + ("" if r["status"] == "complete" else f" ({r['status']})")
                                        for r in runs}),
                    "machine": ", ".join(sorted({c["machine"] for c in chunks})),
                    "device": ", ".join(sorted({c["device"] for c in chunks})),
                    "wall_seconds": round(sum(c["wall_seconds"] for c in chunks), 1),
                    "versions": ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))})
    return out


def _paper_tables(store: ResultStore, out: Path, ctx: ReportContext, names: list[str] | None) -> list[dict[str, Any]]:
    """Each registered table rendered by its own `render` (the report's CSV, Markdown and figure) into tables/,
    shown on a page of its own beside the published values, with a JSON copy of its CSV."""
    from ..registry import TABLES

    pages = []
    for name in names or TABLES.names():
        table = TABLES.get(name)()
        paths = [Path(p) for p in table.render(store, out / "tables", ctx)]
        csv = next(p for p in paths if p.suffix == ".csv")
        frame = pd.read_csv(csv)
        records = json.loads(frame.to_json(orient="records"))
        csv.with_suffix(".json").write_text(json.dumps(records, indent=1))
        md = next((p for p in paths if p.suffix == ".md"), None)
        columns, rows = _grid_of(table, store, ctx)
        if columns is None:  # a kind of table with no grid of its own: its CSV as it is
            columns, rows = list(frame.columns), frame.astype(object).where(frame.notna(), None).values.tolist()
        links = _downloads([dict(zip(columns, r)) for r in rows], out / "data" / f"table-{name}")
        pages.append({"name": name, "title": table.title, "paper": table.paper, "paper_table": table.paper_table,
                      "dataset": table.dataset, "columns": columns, "rows": rows, "links": links,
                      "csv": f"tables/{csv.name}", "json": f"tables/{csv.with_suffix('.json').name}",
                      "markdown": f"tables/{md.name}" if md else None,
                      "markdown_text": md.read_text() if md else "",
                      "figures": [f"tables/{p.name}" for p in paths if p.suffix == ".png"]})
    return pages


def _grid_of(table: Any, store: ResultStore, ctx: ReportContext) -> tuple[list[str] | None, list[list[str]]]:
    """The table as its Markdown shows it (each cell `measured / paper (gap)`), from the report's own grid."""
    from .analysis import AnalysisTable
    from .render import _analysis_grid, _grid
    from .spec import TableSpec

    if isinstance(table, TableSpec):
        return (["Method"] + [c.label for c in table.columns] + ["n"],
                _grid(table, table.collect(store, ctx)))
    if isinstance(table, AnalysisTable):
        return (["Data", "Method"] + [m.label for m in table.metrics] + ["n"],
                _analysis_grid(table, table.collect(store, ctx)))
    return None, []


def write_site(store: ResultStore, out: Path, ctx: ReportContext, tables: list[str] | None = None) -> list[Path]:
    """The whole site under `out`: index.html (the leaderboards), defenses/*.html, tables/*.html, data/, static/."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    env = _environment()
    static = out / "static"
    static.mkdir(exist_ok=True)
    for item in files("otbench.report").joinpath("static").iterdir():
        (static / item.name).write_bytes(item.read_bytes())
    boards, groups, by_group = leaderboards(store)
    sections: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for board in boards:
        records = board_records(board)
        links = _downloads(records, out / "data" / f"leaderboard-{board.slug}")
        sections.setdefault((board.dataset, board.norm), []).append(
            {"board": board, "records": records, "links": links, "id": board.slug})
    written = []
    (out / "defenses").mkdir(exist_ok=True)
    for group in groups:
        entries = by_group[group.key]
        per_eps = [{"entry": e, "records": attack_records(e),
                    "links": _downloads(attack_records(e), out / "data" / f"{group.key}-{e.norm}-eps{e.eps:g}")}
                   for e in entries]
        figures = defense_curves(store, group, entries, out / "figures")
        prov = _provenance(store, group)
        links = _downloads(prov, out / "data" / f"{group.key}-provenance")
        page = out / "defenses" / f"{group.key}.html"
        page.write_text(env.get_template("defense.html").render(
            root="..", group=group, per_eps=per_eps, figures=[f"../figures/{f.name}" for f in figures],
            trained=json.dumps(group.config.get("trained"), indent=1, sort_keys=True, default=str),
            settings=json.dumps({k: group.config.get(k) for k in ("defense", "train")}, indent=1, sort_keys=True,
                                default=str), provenance=prov, provenance_links=links))
        written.append(page)
    pages = _paper_tables(store, out, ctx, tables)
    for p in pages:
        path = out / "tables" / f"{p['name']}.html"
        path.write_text(env.get_template("table.html").render(root="..", table=p))
        written.append(path)
    index = out / "index.html"
    index.write_text(env.get_template("index.html").render(
        root=".", sections=[{"dataset": d, "norm": n, "boards": b} for (d, n), b in sections.items()],
        tables=pages, preset=ctx.preset, store=store.path.name))
    return [index] + written
