"""Robustness curves from minimum-norm cells: a minimum-norm attack (class attribute `minimum_norm = True`) stores
per sample the norm of the smallest adversarial perturbation it found (`samples.pert_norm`, with adv_pred != label;
where it found none, adv_pred == label), so one cell gives the robust accuracy at every budget:
R(eps) = share of samples clean-correct with no adversarial input found within eps (`SampleRow.robust_at`).
The per-sample worst case over several such attacks is the smallest of their distances."""
from __future__ import annotations

import math
from typing import Iterable

from ..registry import ATTACKS
from ..store import ResultStore, SampleRow


def is_minimum_norm(attack: str) -> bool:
    """Whether a stored cell's attack records each sample's smallest adversarial perturbation."""
    return attack in ATTACKS and bool(getattr(ATTACKS.get(attack), "minimum_norm", False))


def distance(row: SampleRow) -> float:
    """The budget a sample survives below: 0 for a clean error, inf where no adversarial input was found, else the
    smallest adversarial perturbation's norm. Robust at eps exactly when distance > eps (`SampleRow.robust_at`)."""
    if not row.clean_correct:
        return 0.0
    return math.inf if row.adv_pred == row.label else float(row.pert_norm)


def smallest_distances(store: ResultStore, cell_ids: Iterable[str]) -> dict[int, float]:
    """Per sample (those every cell holds), the smallest distance over the cells: the per-sample worst case."""
    per_cell = [{r.sample_id: distance(r) for r in store.rows(c)} for c in cell_ids]
    if not per_cell:
        return {}
    common = set.intersection(*(set(p) for p in per_cell))
    return {i: min(p[i] for p in per_cell) for i in sorted(common)}


def robust_accuracy(distances: dict[int, float], eps: float) -> float:
    """R(eps) in [0, 1]: the share of samples whose smallest adversarial perturbation exceeds eps."""
    return sum(d > eps for d in distances.values()) / max(len(distances), 1)


def curve(distances: dict[int, float], eps_grid: Iterable[float]) -> list[tuple[float, float]]:
    return [(float(e), robust_accuracy(distances, e)) for e in eps_grid]


def area(distances: dict[int, float], max_eps: float) -> float:
    """The area under R on [0, max_eps], divided by max_eps (1 = robust to every budget up to max_eps): exactly
    the mean of min(distance, max_eps) / max_eps, since R is the survival function of the distances."""
    if not distances or max_eps <= 0:
        return 0.0
    return sum(min(d, max_eps) for d in distances.values()) / (len(distances) * max_eps)
