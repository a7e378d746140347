"""The defense's training inputs as attacks see them: flattened once, for nearest-neighbour look-ups.

Knowing the training set is the standard threat model for attacks on K-NN defenses (Sitawarin & Wagner
2020). `data.x_train` is every training point of the dataset: a superset of those a defense keeps.
"""
from __future__ import annotations

import torch

_CACHE: dict[int, tuple[object, "TrainingPoints"]] = {}  # id(dataset) -> (dataset kept alive, points)


class TrainingPoints:
    def __init__(self, x_train: torch.Tensor, y_train: torch.Tensor) -> None:
        self.flat = x_train.flatten(1).float()
        self.sq = self.flat.pow(2).sum(1)
        self.y = y_train.long().cpu()

    @classmethod
    def of(cls, data) -> "TrainingPoints":
        hit = _CACHE.get(id(data))
        if hit is None or hit[0] is not data:
            if len(_CACHE) >= 4:
                _CACHE.pop(next(iter(_CACHE)))
            hit = _CACHE[id(data)] = (data, cls(data.x_train, data.y_train))
        return hit[1]

    def sq_distances(self, x: torch.Tensor) -> torch.Tensor:
        """(n, N) squared L2 distances from the flattened inputs x to every training point."""
        flat = x.flatten(1).float().cpu()
        return (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.flat.T + self.sq).clamp_min(0)

    def nearest_of_class(self, x: torch.Tensor, cls: torch.Tensor, k: int,
                         dist: torch.Tensor | None = None) -> torch.Tensor:
        """(n, k) indices of the k training points of class cls[i] nearest to x[i], nearest first."""
        dist = self.sq_distances(x) if dist is None else dist
        masked = dist.masked_fill(self.y[None, :] != cls.cpu()[:, None], float("inf"))
        return masked.topk(k, dim=1, largest=False).indices

    def nearest_other(self, x: torch.Tensor, label: torch.Tensor, k: int) -> torch.Tensor:
        """(n, k) indices of the k training points of any class but label[i] nearest to x[i], nearest first."""
        dist = self.sq_distances(x).masked_fill(self.y[None, :] == label.cpu()[:, None], float("inf"))
        return dist.topk(k, dim=1, largest=False).indices
