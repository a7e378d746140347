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
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..errors import OTBenchError
from ..registry import register_attack
from ._training_points import TrainingPoints
from .base import Attack, AttackOutput

SWEEP_DEFAULTS: dict[str, Any] = {"classes": 9, "points": 3, "k": 10, "steps": 4}


def margins(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Z_y - max_{j != y} Z_j: positive while the true class wins."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    return true - logits.scatter(1, labels[:, None], float("-inf")).amax(1)


def check_sweep(name: str, config: dict[str, Any], defense) -> None:
    data = getattr(defense, "data", None)
    if data is None or getattr(data, "x_train", None) is None:
        raise OTBenchError(f"{name} needs the defense's training data (defense.data.x_train)")
    for key, low in (("classes", 1), ("points", 0), ("k", 1), ("steps", 1)):
        v = config[key]
        if not isinstance(v, int) or v < low:
            raise OTBenchError(f"{name}: {key} must be an integer >= {low}, got {v!r}")
    fewest = int(torch.bincount(data.y_train.long(), minlength=data.num_classes).min())
    if max(config["points"], config["k"]) > fewest:
        raise OTBenchError(f"{name}: points and k must be at most {fewest}, the training points of the "
                           f"smallest class; got points={config['points']}, k={config['k']}")


def scores(defense, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """The defense's logits on CPU, asked in batches of at most `batch` inputs."""
    with torch.no_grad():
        return torch.cat([defense.logits(x[i:i + batch].to(defense.device)).float().cpu()
                          for i in range(0, len(x), batch)])


@dataclass
class Sweep:
    adv: torch.Tensor  # lowest-margin candidate per sample (the input itself where none was queried)
    margin: torch.Tensor  # its margin (+inf where none was queried)
    queries: torch.Tensor  # (n,) long
    fooled: torch.Tensor  # (n,) bool: some candidate was misclassified (adv is then the first one)


def targets(points: TrainingPoints, x: torch.Tensor, labels: torch.Tensor, config: dict[str, Any],
            num_classes: int) -> torch.Tensor:
    """(n, classes * (points + 1), d) target points, nearest other class first."""
    n, dist = len(x), points.sq_distances(x)
    m = max(config["points"], config["k"])
    per_class = []  # (n, m) nearest indices of each class
    for c in range(num_classes):
        per_class.append(points.nearest_of_class(x, torch.full((n,), c), m, dist))
    near = torch.stack(per_class, 1)  # (n, classes, m)
    first = dist.gather(1, near[:, :, 0])  # (n, classes) distance to each class's nearest point
    first[torch.arange(n), labels] = float("inf")
    order = first.argsort(1)[:, :min(config["classes"], num_classes - 1)]  # other classes, nearest first
    chosen = near.gather(1, order[:, :, None].expand(-1, -1, m))  # (n, classes, m)
    flat = points.flat
    singles = flat[chosen[:, :, :config["points"]]]  # (n, classes, points, d)
    means = flat[chosen[:, :, :config["k"]]].mean(2, keepdim=True)  # (n, classes, 1, d)
    return torch.cat([singles, means], 2).flatten(1, 2)


def sweep(defense, images: torch.Tensor, labels: torch.Tensor, eps: float, config: dict[str, Any]) -> Sweep:
    """Stage 1 (see the module docstring), batched over samples and targets."""
    n, shape = len(images), images.shape[1:]
    labels = labels.long().cpu()
    x = images.flatten(1).float().cpu()
    t = targets(TrainingPoints.of(defense.data), x, labels, config, defense.data.num_classes)
    diff = t - x[:, None]
    unit = diff / diff.norm(dim=2, keepdim=True).clamp_min(1e-12)  # (n, T, d)
    n_t, low, high = unit.shape[1], *defense.data.domain
    best, best_margin = x.clone(), torch.full((n,), math.inf)
    queries = torch.zeros(n, dtype=torch.long)
    fooled = torch.zeros(n, dtype=torch.bool)
    for r in range(config["steps"]):
        active = (~fooled).nonzero().flatten()
        if len(active) == 0:
            break
        step = eps * (config["steps"] - r) / config["steps"]
        cand = (x[active, None] + step * unit[active]).clamp(low, high)  # (a, T, d)
        logits = scores(defense, cand.view(-1, *shape))
        queries[active] += n_t
        m = margins(logits, labels[active].repeat_interleave(n_t)).view(len(active), n_t)
        wrong = (logits.argmax(1).view(len(active), n_t) != labels[active, None])
        # the first misclassified candidate where there is one, else the lowest margin
        pick = torch.where(wrong.any(1), wrong.float().argmax(1), m.argmin(1))
        pm = m.gather(1, pick[:, None]).squeeze(1)
        better = wrong.any(1) | (pm < best_margin[active])
        idx = active[better]
        best[idx] = cand[better, pick[better]]
        best_margin[idx] = pm[better]
        fooled[active] = wrong.any(1)
    return Sweep(best.view_as(images).to(images.dtype), best_margin, queries, fooled)


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

    def __init__(self, defense, eps: float, **config: Any) -> None:
        super().__init__(defense, eps, **config)
        check_sweep(self.name, self.config, defense)
        if self.config["refine_queries"] < 0:  # an integer: config.merge keeps the default's type
            raise OTBenchError(f"{self.name}: refine_queries must be an integer >= 0, "
                               f"got {self.config['refine_queries']!r}")

    def run(self, images: torch.Tensor, labels: torch.Tensor, seed: int) -> AttackOutput:
        first = sweep(self.defense, images, labels, self.eps, self.config)
        if self.config["refine_queries"] == 0:
            return AttackOutput(first.adv, first.queries)
        adv, more = refine(self.defense, images, labels, first, self.eps, self.config["refine_queries"], seed)
        return AttackOutput(adv, first.queries + more)


@register_attack("neighbour-shift-labels")
class NeighbourShiftLabels(Attack):
    description = ("the sweep of neighbour-shift with labels only: the first misclassified move toward another "
                   "class's training points, L2")
    needs = "labels"
    norms = ("L2",)
    default_eps: ClassVar[tuple[float, ...]] = (2.0, 2.5, 3.0)
    defaults = {"norm": "L2", **SWEEP_DEFAULTS}

    def __init__(self, defense, eps: float, **config: Any) -> None:
        super().__init__(defense, eps, **config)
        check_sweep(self.name, self.config, defense)

    def run(self, images: torch.Tensor, labels: torch.Tensor, seed: int) -> AttackOutput:
        first = sweep(self.defense, images, labels, self.eps, self.config)
        adv = torch.where(first.fooled.view(-1, *[1] * (images.dim() - 1)), first.adv, images)
        return AttackOutput(adv, first.queries)
