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
    default_eps = (0.0,)

    @classmethod
    def check_settings(cls, config: dict, eps: float) -> None:
        if eps != 0:
            raise OTBenchError(f"attack 'none' evaluates clean inputs; its eps must be 0, got {eps:g}")

    def run(self, images: torch.Tensor, labels: torch.Tensor, seed: int) -> AttackOutput:
        return AttackOutput(images.clone(), torch.zeros(len(images), dtype=torch.long))
