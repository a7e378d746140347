"""`neighbour-shift`: an adaptive attack on defenses that classify from the training points nearest to the
input (K-NN, OTAD, OTAD-T): move the input toward training points of other classes so that its neighbour
set changes, then refine by random search.

Why: such a defense's output is piecewise smooth, with jumps where the neighbour set changes; gradients
(even exact ones, `otad-exact-grad`) are blind to those jumps, and BPDA's surrogate ignores the neighbours
altogether. The jumps sit between the input and the training points of other classes, so the attack goes
there directly. Knowing the training set is the standard threat model for K-NN defenses (Sitawarin &
Wagner 2020); the points are `defense.data.x_train`, a superset of those the defense searches.

1. Sweep. For each of the `classes` other classes nearest to the input (by their nearest training point;
   all other classes where there are fewer),
   the targets are its `points` nearest training points and its local mean (the mean of its `k` nearest
   training points, k = OTAD's K by default). The candidates are x + s (t - x) / ||t - x|| for every
   target t and `steps` step lengths s = eps, (steps - 1) / steps * eps, ..., eps / steps (L2), clipped to
   [0, 1] (which only shortens the step). Step lengths are tried longest first; a sample stops at the
   first round in which a candidate is misclassified. Per sample and round: classes * (points + 1) queries
   (36 with the defaults), so at most 144 for the sweep.
2. Refinement (scores only). From the candidate of lowest margin Z_y - max_{j != y} Z_j, a random search
   within the eps ball: each query adds Gaussian noise in a random square window (side and size shrinking
   geometrically, as Square's schedule does), projects onto the eps ball and [0, 1], and keeps the result
   if the margin falls; a sample stops once misclassified or after `refine_queries` queries.

`neighbour-shift` returns the lowest-margin point found. `neighbour-shift-labels` uses labels only: the
sweep alone, returning the first misclassified candidate (the input unchanged where none is).
Queries are counted per sample; randomness (refinement only) is seeded by the call's seed.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from ..registry import register_attack
from ._neighbour_sweep import SWEEP_DEFAULTS, Sweep, check_sweep_data, check_sweep_settings, margins, scores, sweep
from .base import Attack, AttackOutput


def refine(defense, images: torch.Tensor, labels: torch.Tensor, start: Sweep, eps: float, budget: int,
           seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 2: random search in the eps ball from the sweep's best points; returns (adv, queries used)."""
    gen = torch.Generator().manual_seed(seed)
    shape, labels = images.shape[1:], labels.long().cpu()
    x = images.flatten(1).double().cpu()
    delta = start.adv.flatten(1).double().cpu() - x
    best_m, low, high = start.margin.clone(), *defense.data.domain
    queries = torch.zeros(len(images), dtype=torch.long)
    open_ = ~start.fooled
    side0 = shape[-1] // 2 if len(shape) == 3 else 0
    for it in range(budget):
        active = open_.nonzero().flatten()
        if len(active) == 0:
            break
        frac = 0.5 ** (4 * it / max(budget, 1))  # 1 -> 1/16 over the budget
        noise = torch.randn(len(active), *shape, generator=gen, dtype=torch.float64)
        if side0:  # a random square window per sample (images); elsewhere the whole input
            s = max(3, round(side0 * math.sqrt(frac)))
            h, w = shape[-2:]
            top = torch.randint(0, h - s + 1, (len(active),), generator=gen)
            left = torch.randint(0, w - s + 1, (len(active),), generator=gen)
            rows, cols = torch.arange(h), torch.arange(w)
            win = (((rows[None] >= top[:, None]) & (rows[None] < top[:, None] + s))[:, :, None]
                   & ((cols[None] >= left[:, None]) & (cols[None] < left[:, None] + s))[:, None, :])
            noise = noise * win[:, None].double()
        noise = noise.flatten(1)
        noise *= (0.5 * eps * frac) / noise.norm(dim=1, keepdim=True).clamp_min(1e-12)
        d = delta[active] + noise
        d *= (eps / d.norm(dim=1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)  # onto the ball
        cand = (x[active] + d).clamp(low, high).float()
        logits = scores(defense, cand.view(-1, *shape))
        queries[active] += 1
        m = margins(logits, labels[active])
        ok = m < best_m[active]
        delta[active[ok]] = cand[ok].double() - x[active[ok]]
        best_m[active[ok]] = m[ok]
        open_[active[logits.argmax(1) != labels[active]]] = False
    adv = (x + delta).float().view_as(images).to(images.dtype)
    return adv, queries


@register_attack("neighbour-shift")
class NeighbourShift(Attack):
    description = ("moves the input toward other classes' nearest training points and local means (the jumps of "
                   "K-NN / OTAD), then random search on the margin; score-based, L2")
    needs = "scores"
    norms = ("L2",)
    default_eps: ClassVar[tuple[float, ...]] = (2.0, 2.5, 3.0)
    defaults = {"norm": "L2", **SWEEP_DEFAULTS, "refine_queries": 500}

    @classmethod
    def check_settings(cls, config: dict[str, Any], eps: float) -> None:
        check_sweep_settings(cls.name, config)
        cls.require_int(config, "refine_queries", low=0)

    def __init__(self, defense, eps: float, **config: Any) -> None:
        super().__init__(defense, eps, **config)
        check_sweep_data(self.name, self.config, defense)

    def run(self, images: torch.Tensor, labels: torch.Tensor, seed: int) -> AttackOutput:
        first = sweep(self.defense, images, labels, self.eps, self.config)
        if self.config["refine_queries"] == 0:
            return AttackOutput(first.adv, first.queries)
        adv, more = refine(self.defense, images, labels, first, self.eps, self.config["refine_queries"], seed)
        return AttackOutput(adv, first.queries + more)
