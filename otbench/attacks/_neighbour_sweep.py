"""The neighbour sweep shared by `neighbour-shift`, `neighbour-shift-labels` and Square's `init=neighbour`:
move the input toward the training points of other classes, where the neighbour set of a K-NN-like defense
changes (see neighbour_shift.py for the attack and why)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import OTBenchError
from ._training_points import TrainingPoints

SWEEP_DEFAULTS: dict[str, Any] = {"classes": 9, "points": 3, "k": 10, "steps": 4}


def margins(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Z_y - max_{j != y} Z_j: positive while the true class wins."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    return true - logits.scatter(1, labels[:, None], float("-inf")).amax(1)


def check_sweep_settings(name: str, config: dict[str, Any]) -> None:
    """The sweep's own settings, without a defense (the run plan checks them before any data is loaded)."""
    for key, low in (("classes", 1), ("points", 0), ("k", 1), ("steps", 1)):
        v = config[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise OTBenchError(f"{name}: {key} must be an integer >= {low}, got {v!r}")


def check_sweep_data(name: str, config: dict[str, Any], defense) -> None:
    """What only the defense's data can tell: the training points exist, and every class has enough of them."""
    data = getattr(defense, "data", None)
    if data is None or getattr(data, "x_train", None) is None:
        raise OTBenchError(f"{name} needs the defense's training data (defense.data.x_train)")
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
