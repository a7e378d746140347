"""`transfer-pgd`: L2 (or Linf) PGD crafted on the defense's undefended network, evaluated on the defense.

A transfer attack (Papernot et al. 2017) from the closest possible surrogate: `defense.surrogate()`, the
network without the defense step (OTAD: the FC ResNet R and classifier H without CIP). Unlike `bpda-pgd`,
whose forward pass is the real defense, nothing here ever queries the defense: the examples are those that
fool the undefended network, and the harness then asks the defense about them (queries = 0). A defense
that keeps its accuracy on them only undoes the surrogate's adversarial directions, which says nothing
about adaptive attacks; one that loses it needs no adaptive attack to be broken.
"""
from __future__ import annotations

from typing import ClassVar

import torch

from ..registry import register_attack
from .base import Attack, AttackOutput
from .pgd import PGD_DEFAULTS, run_pgd


@register_attack("transfer-pgd")
class TransferPGD(Attack):
    description = "PGD on the defense's undefended network (its surrogate), evaluated on the defense: transfer"
    needs = "surrogate-gradients"
    default_eps: ClassVar[tuple[float, ...]] = (2.0, 2.5, 3.0)
    defaults = {**PGD_DEFAULTS, "norm": "L2"}

    def run(self, images: torch.Tensor, labels: torch.Tensor, seed: int) -> AttackOutput:
        net = self.eot(self.defense.surrogate().eval())
        adv = run_pgd(net, self.config, self.eps, images, labels, seed, self.defense.device)
        return AttackOutput(adv, torch.zeros(len(images), dtype=torch.long))
