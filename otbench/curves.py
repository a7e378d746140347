"""Robust accuracy as a function of the budget, from minimum-norm attack cells (Attack.minimum_norm): the one
place both `otbench.evaluate` and the report's leaderboard read curves from.

A minimum-norm cell stores per sample, in `pert_norm`, the norm of the smallest adversarial perturbation its
attack found within the cell's eps (the largest budget searched), with `adv_pred != label`; where none was
found, the clean input (pert_norm 0, adv_pred the clean prediction). So a sample's distance is
  0 where the clean prediction is wrong, pert_norm where an adversarial was found, inf where none was,
and the robust accuracy at any e <= eps is the share of distances > e: clean correct and (adv_pred == label or
pert_norm > e) (`SampleRow.robust_at`). The worst case over attacks takes per sample the smallest distance; it is
known up to the smallest of their budgets. The area under R(e) on [0, B] is exact: the integral of 1[d > e] is
min(d, B)."""
from __future__ import annotations

import math
from typing import Iterable, Sequence

from .registry import ATTACKS
from .store import ResultStore, SampleRow


def is_minimum_norm(attack: str) -> bool:
    """Whether a stored cell's attack records each sample's smallest adversarial perturbation."""
    return attack in ATTACKS and bool(getattr(ATTACKS.get(attack), "minimum_norm", False))


def distance(row: SampleRow) -> float:
    """The budget a sample survives below (see the module docstring): robust at e exactly when distance > e."""
    if not row.clean_correct:
        return 0.0
    return math.inf if row.adv_pred == row.label else float(row.pert_norm)


def distances(rows: Iterable[SampleRow]) -> dict[int, float]:
    """Per sample id: the distance to the nearest adversarial input the cell found."""
    return {r.sample_id: distance(r) for r in rows}


def worst_distances(per_attack: Sequence[dict[int, float]]) -> dict[int, float]:
    """Per sample present in every attack's cell: the smallest distance over the attacks."""
    if not per_attack:
        return {}
    common = set.intersection(*(set(d) for d in per_attack))
    return {i: min(d[i] for d in per_attack) for i in sorted(common)}


def smallest_distances(store: ResultStore, cell_ids: Iterable[str]) -> dict[int, float]:
    """The per-sample worst case over stored minimum-norm cells, on the samples every cell holds."""
    return worst_distances([distances(store.rows(c)) for c in cell_ids])


def robust_accuracy(dist: dict[int, float], eps: float) -> float:
    """R(eps) in [0, 1]: the share of samples whose distance exceeds eps."""
    return sum(d > eps for d in dist.values()) / max(len(dist), 1)


def curve(dist: dict[int, float], grid: Iterable[float]) -> list[float]:
    return [robust_accuracy(dist, e) for e in grid]


def area(dist: dict[int, float], bound: float) -> float:
    """The mean of R(e) over [0, bound] (1: robust everywhere, 0: nowhere), exact for the stored distances; NaN for
    no samples or no budget."""
    if bound <= 0 or not dist:
        return math.nan
    return sum(min(d, bound) for d in dist.values()) / (len(dist) * bound)


def bounded_worst_curve(cells: Sequence[tuple[dict[int, float], float]], grid: Iterable[float]) -> list[float | None]:
    """The per-sample worst case over minimum-norm cells (distances, largest budget searched) at each budget e of
    `grid`, on the samples every cell holds: the smallest distance over the cells that searched up to e at least
    (a cell says nothing beyond its bound); None where no cell did."""
    common = set.intersection(*(set(d) for d, _ in cells)) if cells else set()
    out: list[float | None] = []
    for e in grid:
        known = [d for d, bound in cells if bound >= e - 1e-12]
        if not known or not common:
            out.append(None)
            continue
        out.append(sum(min(d[i] for d in known) > e for i in common) / len(common))
    return out
