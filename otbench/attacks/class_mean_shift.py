"""`class-mean-shift`: move each input by exactly eps (L2) along mu_j - mu_y, the difference of the training
means of another class j and of its own class y; try the `candidates` classes whose means are nearest to the
input and keep the first move that changes the defense's label.

Why: for isotropic Gaussian classes (OTAD's Table XIV) mu_j - mu_y is the direction of the Bayes decision
boundary between y and j, so this one-step, label-only attack is the optimal attack on the Bayes classifier,
and any input closer than eps to that boundary is moved to where it is more likely from class j than from y.
A defense that survives it at a high rate either disagrees with the data's own labels there or was not
attacked at that eps. Gradient attacks that do worse than it are not finding the adversarial examples that
exist, which `gradient-free-beats-gradient` then flags. Needs only labels; no randomness, so seeds do not
matter; queries = candidates tried. Means are those of the defense's training inputs, as any attacker with
the training data could compute them.
"""
from __future__ import annotations

import torch

from ..errors import OTBenchError
from ..registry import register_attack
from .base import Attack, AttackOutput


def class_means(x_train: torch.Tensor, y_train: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(classes, d) mean of the flattened training inputs of each class (float64)."""
    flat = x_train.flatten(1).double()
    sums = torch.zeros(num_classes, flat.shape[1], dtype=torch.float64).index_add_(0, y_train.long(), flat)
    counts = torch.bincount(y_train.long(), minlength=num_classes).clamp_min(1).double()
    return sums / counts[:, None]


@register_attack("class-mean-shift")
class ClassMeanShift(Attack):
    description = ("one L2 step of exactly eps along the difference of training class means, toward the nearest "
                   "other classes (the Bayes-optimal attack on isotropic Gaussian classes); label-only")
    needs = "labels"
    norms = ("L2",)
    eps_meaning = "L2 norm of the step (before clipping to the input domain)"
    defaults = {"norm": "L2", "candidates": 3}
    any_domain = True

    def __init__(self, defense, eps: float, **config) -> None:
        super().__init__(defense, eps, **config)
        data = getattr(defense, "data", None)  # checked here, before any sample is attacked
        if data is None:
            raise OTBenchError("class-mean-shift needs the defense's training data to compute class means")
        k = self.config["candidates"]
        if not isinstance(k, int) or not 1 <= k < data.num_classes:
            raise OTBenchError(f"class-mean-shift: candidates must be an integer from 1 to {data.num_classes - 1}, "
                               f"got {k!r}")
        self._means: torch.Tensor | None = None

    def run(self, images: torch.Tensor, labels: torch.Tensor, seed: int) -> AttackOutput:
        data, k, labels = self.defense.data, self.config["candidates"], labels.cpu()
        if self._means is None:  # once per attack, not per chunk: a pass over the training set
            self._means = class_means(data.x_train, data.y_train, data.num_classes)
        means = self._means
        flat = images.flatten(1).double().cpu()
        dist = torch.cdist(flat, means)
        dist[torch.arange(len(flat)), labels] = float("inf")  # never the sample's own class
        order = dist.argsort(1)[:, :k]
        adv = images.clone()
        queries = torch.zeros(len(images), dtype=torch.long)
        open_ = torch.ones(len(images), dtype=torch.bool)  # not yet misclassified
        for c in range(k):
            idx = open_.nonzero().flatten()
            if len(idx) == 0:
                break
            step = means[order[idx, c]] - means[labels[idx]]
            step = step / step.norm(dim=1, keepdim=True).clamp_min(1e-12) * self.eps
            cand = flat[idx] + step
            if self.domain is not None:  # clipping can only shrink the step
                cand = cand.clamp(*self.domain)
            cand = cand.to(images.dtype).view(len(idx), *images.shape[1:])
            pred = self.defense.predict(cand.to(self.defense.device))
            queries[idx] += 1
            if c == 0:
                adv[idx] = cand  # keep the nearest class's move when nothing works
            fooled = pred.cpu() != labels[idx]
            adv[idx[fooled]] = cand[fooled]
            open_[idx[fooled]] = False
        return AttackOutput(adv, queries)
