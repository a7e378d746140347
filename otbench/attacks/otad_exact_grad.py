"""PGD through the exact gradient of a defense that is differentiable almost everywhere (OTAD).

papers/otad.txt could only attack OTAD gradient-free or with BPDA, whose backward pass is the undefended
network. OTAD's output is H(g*(x)), with g* the solution of the convex integration problem; the neighbour
set and the relaxation step are piecewise constant in x and the exact batched solver (otbench/defenses/otad/cip.py)
recomputes the QP's solution on its optimal face with autograd, so d output / d x is the true gradient
wherever the neighbour set does not change, i.e. almost everywhere. This attack runs PGD on it.
"""
from __future__ import annotations

import torch

from ..registry import register_attack
from .base import Attack, AttackOutput
from .pgd import PGD_DEFAULTS, run_pgd


@register_attack("otad-exact-grad")
class OTADExactGrad(Attack):
    description = "PGD through the exact (a.e.) gradient of the defense's CIP solution, no surrogate"
    needs = "piecewise-gradients"
    defaults = {**PGD_DEFAULTS, "norm": "L2"}
    default_eps = (2.0, 2.5, 3.0)

    def run(self, images: torch.Tensor, labels: torch.Tensor, seed: int) -> AttackOutput:
        adv = run_pgd(self.eot(self.defense.exact_module()), self.config, self.eps, images, labels, seed,
                      self.defense.device)
        return AttackOutput(adv, torch.full((len(images),), self.config["steps"], dtype=torch.long))
