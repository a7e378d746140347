"""BPDA + PGD (Athalye et al. 2018): the forward pass is the real defense, the backward pass its surrogate."""
from __future__ import annotations

import torch
from torch import nn

from ..defense import Defense
from ..registry import register_attack
from .base import Attack, AttackOutput
from .pgd import PGD_DEFAULTS, run_pgd


class BPDAModule(nn.Module):
    """Output = defense logits; gradient = surrogate gradient (the straight-through form of BPDA)."""

    def __init__(self, defense: Defense) -> None:
        super().__init__()
        self.defense = defense
        self.surrogate = defense.surrogate().eval()

    def train(self, mode: bool = True) -> "BPDAModule":
        self.training = mode  # keep the surrogate's BatchNorm in eval whatever the attack library asks
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        approx = self.surrogate(x)
        if self.defense.surrogate_outputs_defense:
            return approx  # a straight-through surrogate whose forward is the defense itself: no second call
        with torch.no_grad():
            real = self.defense.logits(x)
        return approx + (real - approx).detach()


@register_attack("bpda-pgd")
class BPDAPGD(Attack):
    description = "PGD whose backward pass goes through the defense's declared surrogate (BPDA)"
    needs = "surrogate-gradients"
    defaults = {**PGD_DEFAULTS, "norm": "L2"}
    default_eps = (2.0, 2.5, 3.0)  # OTAD Table II (L2, MNIST)

    def run(self, images: torch.Tensor, labels: torch.Tensor, seed: int) -> AttackOutput:
        adv = run_pgd(self.eot(BPDAModule(self.defense)), self.config, self.eps, images, labels, seed, self.defense.device)
        return AttackOutput(adv, torch.full((len(images),), self.config["steps"], dtype=torch.long))
