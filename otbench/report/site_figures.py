"""A defense page's robustness curves, one panel per threat model: from minimum-norm cells, robust accuracy at every
budget (otbench/curves.py) per attack and their per-sample worst case; where there are none, the fixed-budget robust
accuracies against eps, each attack joined only between budgets it was measured at, with the worst case in black."""
from __future__ import annotations

from pathlib import Path

from ..store import ResultStore
from ..curves import area, bounded_worst_curve, curve, smallest_distances
from .leaderboard import DefenseGroup, Entry


def defense_curves(store: ResultStore, group: DefenseGroup, entries: list[Entry], out_dir: Path) -> list[Path]:
    if not entries:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    norms = sorted({e.norm for e in entries})
    fig, axes = plt.subplots(1, len(norms), figsize=(9.5 * len(norms), 4.2), squeeze=False)
    for ax, norm in zip(axes[0], norms):
        mine = sorted((e for e in entries if e.norm == norm), key=lambda e: e.eps)
        # minimum-norm cells: label and the largest budget each searched (its curve stops there)
        minimum = {a.cell_id: (a.label, max(e.eps for e in mine if a in e.cells)) for e in mine for a in e.cells
                   if a.minimum_norm}
        top = max(e.eps for e in mine) * 1.05
        if minimum:
            grid = [top * i / 200 for i in range(201)]
            dists = {cell_id: smallest_distances(store, [cell_id]) for cell_id in minimum}
            for i, (cell_id, (label, bound)) in enumerate(sorted(minimum.items(), key=lambda kv: kv[1])):
                d, upto = dists[cell_id], [e for e in grid if e <= bound] + [bound]
                ax.plot(upto, [100 * r for r in curve(d, upto)], color=f"C{i % 10}", lw=1.2,
                        label=f"{label} up to eps {bound:g} (n={len(d)}, area {area(d, bound):.2f})")
            worst = bounded_worst_curve([(dists[c], bound) for c, (_, bound) in minimum.items()], grid)
            ax.plot(grid, [None if r is None else 100 * r for r in worst], color="black", lw=2.2,
                    label="worst case of the minimum-norm attacks that searched each eps")
        else:  # fixed budgets: one series per attack, its points joined only where it was measured
            labels = sorted({a.label for e in mine for a in e.cells})
            palette = plt.get_cmap("tab20" if len(labels) > 10 else "tab10")  # no two series share a colour
            for i, label in enumerate(labels):
                pts = [(e.eps, 100 * a.robust) for e in mine for a in e.cells if a.label == label]
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", ms=3.5, lw=1, alpha=0.8,
                        color=palette(i % palette.N), label=label)
        ax.plot([e.eps for e in mine], [100 * e.robust for e in mine], "s-" if not minimum else "s", color="black",
                ms=6, lw=2.2, mfc="white", label="per-sample worst case at each eps (leaderboard)")
        clean = max(mine, key=lambda e: e.n).clean
        ax.axhline(100 * clean, color="grey", ls=":", lw=1, label=f"clean accuracy {100 * clean:.1f}%")
        budgets = [e.eps for e in mine]
        span = max(budgets) - min(budgets) or max(budgets)
        # a curve starts at 0; fixed budgets are shown where they were measured, not across an empty axis from 0
        ax.set_xlim((0, top) if minimum else (min(budgets) - 0.15 * span, max(budgets) + 0.15 * span))
        ax.set_ylim(-2, 102)
        ax.set_xlabel(f"{norm} budget eps")
        ax.set_ylabel("robust accuracy (%)")
        ax.set_title(f"{group.label} on {group.dataset}, {norm}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the panel, never over a line
    fig.tight_layout()
    path = out_dir / f"{group.key}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]
