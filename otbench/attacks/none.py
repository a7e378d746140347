"""`none`: no perturbation, for clean-accuracy cells (Table XII) and the eps = 0 sanity check."""
from __future__ import annotations

import torch

from ..errors import OTBenchError
from ..registry import register_attack
from .base import Attack, AttackOutput


@register_attack("none")
class NoAttack(Attack):
    description = "the clean inputs, unchanged (clean accuracy)"
    needs = "nothing"
    norms = ()
    eps_meaning = "ignored (must be 0)"
    any_domain = True

    def __init__(self, defense, eps: float, **config) -> None:
        if eps != 0:
            raise OTBenchError(f"attack 'none' evaluates clean inputs; its eps must be 0, got {eps:g}")
        super().__init__(defense, eps, **config)

    def run(self, images: torch.Tensor, labels: torch.Tensor, seed: int) -> AttackOutput:
        return AttackOutput(images.clone(), torch.zeros(len(images), dtype=torch.long))
