"""FGSM (Goodfellow et al. 2015, "Explaining and Harnessing Adversarial Examples"): one gradient step of
the full budget, eps * sign(grad) in Linf and eps * grad / ||grad||_2 in L2.

A cheap first check and the attack behind FGSM adversarial training (papers/otad.txt V-C); it is weak
against anything whose loss surface is not locally linear, so never the last word on robustness.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..registry import register_attack
from .base import Attack, AttackOutput
from .ascent import input_grad, pgd_ascent


@register_attack("fgsm")
class FGSM(Attack):
    description = "fast gradient sign method: one step of size eps along the loss gradient (Goodfellow et al. 2015)"
    needs = "gradients"
    defaults = {"norm": "Linf"}
    default_eps = (0.1, 0.2, 0.3)

    def run(self, images: torch.Tensor, labels: torch.Tensor, seed: int) -> AttackOutput:
        model, device = self.defense.module(), self.defense.device
        x, y = images.to(device), labels.to(device)
        samples = self.config.get("eot_samples", 1)  # a generic setting of gradient attacks, where offered
        torch.manual_seed(seed)  # only a randomized defense's own noise

        def grad_fn(adv: torch.Tensor) -> torch.Tensor:
            return input_grad(lambda a: F.cross_entropy(model(a), y, reduction="sum"), adv, samples)

        adv = pgd_ascent(grad_fn, x, self.eps, self.norm, steps=1, step_ratio=1.0, random_start=False)
        return AttackOutput(adv.detach().cpu(), torch.full((len(images),), samples, dtype=torch.long))
