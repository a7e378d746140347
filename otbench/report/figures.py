"""The figures of attack-cell tables: accuracy against the budget, one series per row, beside the paper's."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..registry import DEFENSES
from .cells import Cell, row_label

if TYPE_CHECKING:
    from .spec import TableSpec


def accuracy_lines(spec: TableSpec, cells: list[Cell], preset: str, path: Path,
                   worst: dict[str, dict[float, tuple[float, int]]] | None = None) -> Path:
    """`lines_figure`, saved to `path`."""
    import matplotlib.pyplot as plt

    fig = lines_figure(spec, cells, preset, worst)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def lines_figure(spec: TableSpec, cells: list[Cell], preset: str,
                 worst: dict[str, dict[float, tuple[float, int]]] | None = None) -> Any:
    """Small multiples, one panel per measured row: the measured robust accuracy (solid) and the paper's (dashed) in
    the row's colour, joined only between budgets both ends of which hold a value; clean accuracy as a lone point at
    eps = 0 (never joined to the robust points); and, in black, the per-sample worst case over every attack stored
    for the row's defense (`worst`, from the leaderboard), beside the table's own attack."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    worst = worst or {}
    measured_rows = [r for r in spec.rows if any(c.measured is not None for c in cells if c.row.label == r.label)]
    ncols = min(3, len(measured_rows))
    nrows = math.ceil(len(measured_rows) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.1 * nrows + 0.6), squeeze=False, sharey=True)
    budgets = sorted({c.column.eps for c in cells if c.column.metric == "robust"})
    for i, row in enumerate(measured_rows):
        ax = axes[i // ncols][i % ncols]
        mine = [c for c in cells if c.row.label == row.label]
        color = f"C{i % 10}"
        for key, style, marker, label in (("measured", "-", "o", "measured"), ("paper", "--", "x", "paper")):
            at = {c.column.eps: getattr(c, key) for c in mine if c.column.metric == "robust"}
            ys = [at.get(e) for e in budgets]  # None (nan) where nothing was measured: the line breaks there
            if any(y is not None for y in ys):
                ax.plot(budgets, [math.nan if y is None else y for y in ys], style, marker=marker, ms=5,
                        color=color, label=label, alpha=1.0 if key == "measured" else 0.7)
            clean = [getattr(c, key) for c in mine if c.column.metric == "clean" and getattr(c, key) is not None]
            if clean:
                ax.plot([0.0], clean[:1], "*" if key == "measured" else "x", ms=9, color=color,
                        mfc=color if key == "measured" else "none", label=f"clean ({key})")
        mine_worst = worst.get(row.label, {})
        pts = [(e, 100 * mine_worst[e][0], mine_worst[e][1]) for e in budgets if e in mine_worst]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "s-", color="black", ms=5, mfc="white", lw=1.5,
                    label=f"worst case, all stored attacks (n={min(p[2] for p in pts)})")
        ax.set_title(row_label(mine[0]), fontsize=8)
        ax.set_ylim(-2, 102)
        ax.set_xlim(-0.1 * max(budgets or [1]), 1.08 * max(budgets or [1]))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="best")
        if i % ncols == 0:
            ax.set_ylabel("accuracy (%)")
        ax.set_xlabel(spec.x_label, fontsize=7)
    for j in range(len(measured_rows), nrows * ncols):
        axes[j // ncols][j % ncols].axis("off")
    fig.suptitle(f"{spec.paper.upper()} Table {spec.paper_table}: {spec.dataset}, preset `{preset}` "
                 f"(measured solid, paper dashed, same colour)", fontsize=10)
    fig.tight_layout()
    return fig


def accuracy_curve(spec: TableSpec, cells: list[Cell], preset: str, path: Path) -> Path:
    """One series per row against eps, the paper's points as crosses, rows not run or not registered named in
    the legend, the preset and n in the title (the OT-Classifier's Figures 2-4 and 6)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.0, 4.6))
    ns = sorted({c.n for c in cells if c.status == "measured"})
    for i, row in enumerate(spec.rows):
        mine = [c for c in cells if c.row.label == row.label]
        color = f"C{i % 10}"
        pts = sorted((c.column.eps, c.measured) for c in mine if c.measured is not None)
        paper = sorted((c.column.eps, c.paper) for c in mine if c.paper is not None)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", ms=3, color=color, label=row_label(mine[0]))
        elif row.defense not in DEFENSES:
            ax.plot([], [], " ", label=f"{row.label}: not available (`{row.defense}` not registered)")
        else:
            ax.plot([], [], " ", label=f"{row.label}: not run")
        if paper:
            ax.plot([p[0] for p in paper], [p[1] for p in paper], "x", ms=8, mew=2, color=color,
                    label=f"{row.label} (paper, Table 1)")
    ax.set_xlabel("epsilon (strength of the attack, l-inf PGD)")
    ax.set_ylabel("testing accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    n_text = f"n = {ns[0]}" if len(ns) == 1 else f"n = {ns[0]}..{ns[-1]}" if ns else ""
    shown = sorted({c.preset for c in cells if c.status == "measured"}) or [preset]  # a fallback row's too
    ax.set_title(f"{spec.figure_title or spec.title}\n{spec.dataset}, preset "
                 f"{' + '.join(f'`{p}`' for p in shown)}, {n_text}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


FIGURES = {"lines": accuracy_lines, "curve": accuracy_curve}
