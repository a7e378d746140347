"""`fab`: the Fast Adaptive Boundary attack (Croce & Hein 2020, "Minimally distorted Adversarial Examples with a
Fast Adaptive Boundary Attack") through torchattacks, a minimum-norm attack in L2 or Linf.

FAB walks to the decision boundary by projecting onto the linearised boundary of the closest class, biased back
toward the clean input, and keeps per sample the adversarial input of smallest norm it found; torchattacks then
keeps it only where that norm is within eps. With one run (`n_restarts` 1, the default) the search never reads
eps, so a cell at the largest budget gives the robust accuracy at every smaller one (otbench.curves); restarts
after the first draw their starting points from the eps ball. Queries: gradient steps x restarts (each step
costs one forward and one backward pass per class)."""
from __future__ import annotations

import torch

from ..registry import register_attack
from ._minimum_norm import keep_adversarial_within
from .base import Attack, AttackOutput


@register_attack("fab")
class FAB(Attack):
    description = "FAB (torchattacks): minimum-norm boundary attack; the smallest adversarial found within eps"
    needs = "gradients"
    norms = ("L2", "Linf")
    eps_meaning = ("largest budget searched: the smallest adversarial input found is returned when within eps, "
                   "else the clean input; inputs in [0, 1]")
    defaults = {"norm": "L2", "steps": 100, "n_restarts": 1, "alpha_max": 0.1, "eta": 1.05, "beta": 0.9}
    default_eps = (3.0,)
    minimum_norm = True

    @classmethod
    def check_settings(cls, config: dict, eps: float) -> None:
        cls.require_int(config, "steps", "n_restarts")

    def run(self, images: torch.Tensor, labels: torch.Tensor, seed: int) -> AttackOutput:
        import torchattacks  # here, not at import: listing and validating need not load the toolkit

        c, device, model = self.config, self.defense.device, self.model()
        atk = torchattacks.FAB(model, norm=c["norm"], eps=self.eps, steps=c["steps"], n_restarts=c["n_restarts"],
                               alpha_max=c["alpha_max"], eta=c["eta"], beta=c["beta"], seed=seed,
                               n_classes=self.defense.data.num_classes)
        atk.set_device(device)
        adv = atk(images.to(device), labels.to(device))
        adv = keep_adversarial_within(model, images, adv, labels, self.norm, self.eps)
        return AttackOutput(adv, torch.full((len(images),), c["steps"] * c["n_restarts"], dtype=torch.long))
