"""`neighbour-shift-labels`: the sweep of `neighbour-shift` (neighbour_shift.py) with labels only: the first
candidate the defense misclassifies, the input unchanged where none is."""
from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..registry import register_attack
from ._neighbour_sweep import SWEEP_DEFAULTS, check_sweep_data, check_sweep_settings, sweep
from .base import Attack, AttackOutput


@register_attack("neighbour-shift-labels")
class NeighbourShiftLabels(Attack):
    description = ("the sweep of neighbour-shift with labels only: the first misclassified move toward another "
                   "class's training points, L2")
    needs = "labels"
    norms = ("L2",)
    default_eps: ClassVar[tuple[float, ...]] = (2.0, 2.5, 3.0)
    defaults = {"norm": "L2", **SWEEP_DEFAULTS}

    @classmethod
    def check_settings(cls, config: dict[str, Any], eps: float) -> None:
        check_sweep_settings(cls.name, config)

    def __init__(self, defense, eps: float, **config: Any) -> None:
        super().__init__(defense, eps, **config)
        check_sweep_data(self.name, self.config, defense)

    def run(self, images: torch.Tensor, labels: torch.Tensor, seed: int) -> AttackOutput:
        first = sweep(self.defense, images, labels, self.eps, self.config)
        adv = torch.where(first.fooled.view(-1, *[1] * (images.dim() - 1)), first.adv, images)
        return AttackOutput(adv, first.queries)
