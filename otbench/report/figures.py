"""The figures of attack-cell tables: accuracy against the budget, one series per row, beside the paper's."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..registry import DEFENSES
from .cells import Cell, row_label

if TYPE_CHECKING:
    from .spec import TableSpec


def accuracy_lines(spec: TableSpec, cells: list[Cell], preset: str, path: Path) -> Path:
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
