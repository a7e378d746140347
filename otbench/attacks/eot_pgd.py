"""EOT-PGD: PGD with Expectation over Transformation (Athalye et al. 2018, "Obfuscated Gradients Give a
False Sense of Security", Sec. 4.3) for randomized defenses, in L2 and Linf.

A randomized defense gives a different gradient on every call; one draw is a noisy estimate of the
direction that raises the *expected* loss, which is what the harness's (fresh-noise) evaluation measures.
Each step therefore averages the gradient over `eot_samples` separate calls of the defense.

The ascent loop itself is otbench/attacks/ascent.py's, shared with fgsm, dml-attack, regression-l2 and
adversarial training.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F

from ..registry import register_attack
from .ascent import input_grad, pgd_ascent
from .base import Attack, AttackOutput
from .pgd import PGD_DEFAULTS

@register_attack("eot-pgd")
class EOTPGD(Attack):
    description = ("PGD whose every step averages the gradient over eot_samples calls of a randomized "
                   "defense (EOT, Athalye et al. 2018)")
    needs = "gradients"
    defaults = {**PGD_DEFAULTS, "eot_samples": 20}
    default_eps = (0.1, 0.2, 0.3)

    @classmethod
    def check_settings(cls, config: dict, eps: float) -> None:
        cls.require_int(config, "steps", "eot_samples")

    def run(self, images: torch.Tensor, labels: torch.Tensor, seed: int) -> AttackOutput:
        model, device = self.defense.module(), self.defense.device
        x, y = images.to(device), labels.to(device)
        samples = self.config["eot_samples"]

        def grad_fn(adv: torch.Tensor) -> torch.Tensor:
            return input_grad(lambda a: F.cross_entropy(model(a), y, reduction="sum"), adv, samples)

        torch.manual_seed(seed)  # the defense's own noise, so a cell is reproducible
        adv = pgd_ascent(grad_fn, x, self.eps, self.norm, self.config["steps"], self.config["step_ratio"],
                         self.config["random_start"], torch.Generator().manual_seed(seed))
        queries = self.config["steps"] * samples
        return AttackOutput(adv.cpu(), torch.full((len(images),), queries, dtype=torch.long))
