"""PGD (Madry et al. 2018) in L2 and Linf through torchattacks, on differentiable defenses."""
from __future__ import annotations

import torch
from torch import nn

from ..registry import register_attack
from .base import Attack, AttackOutput

PGD_DEFAULTS = {"norm": "Linf", "steps": 100, "step_ratio": 2.5, "random_start": True}


def run_pgd(model: nn.Module, config: dict, eps: float, images: torch.Tensor, labels: torch.Tensor,
            seed: int, device: torch.device) -> torch.Tensor:
    # step size alpha = step_ratio * eps / steps (Madry et al.'s 2.5 eps / steps rule)
    import torchattacks  # here, not at import: the CLI lists and validates without loading the toolkit

    if eps == 0 and config["norm"] == "L2":
        # the ball of radius 0 is {x}; torchattacks' PGDL2 would project by eps / ||delta|| = 0 / 0 (NaN) there
        return images.detach().cpu().clone()
    alpha = config["step_ratio"] * eps / config["steps"]
    cls = torchattacks.PGDL2 if config["norm"] == "L2" else torchattacks.PGD
    atk = cls(model, eps=eps, alpha=alpha, steps=config["steps"], random_start=config["random_start"])
    atk.set_device(device)
    torch.manual_seed(seed)  # the random start
    return atk(images.to(device), labels.to(device)).detach().cpu()


@register_attack("pgd")
class PGD(Attack):
    description = "projected gradient descent with random start (torchattacks PGD / PGDL2)"
    needs = "gradients"
    defaults = PGD_DEFAULTS
    default_eps = (0.1, 0.2, 0.3)

    def run(self, images: torch.Tensor, labels: torch.Tensor, seed: int) -> AttackOutput:
        adv = run_pgd(self.model(), self.config, self.eps, images, labels, seed, self.defense.device)
        return AttackOutput(adv, torch.full((len(images),), self.config["steps"], dtype=torch.long))
