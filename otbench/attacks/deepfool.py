"""`deepfool`: DeepFool (Moosavi-Dezfooli et al. 2016, "DeepFool: a simple and accurate method to fool deep
neural networks") through torchattacks, an L2 minimum-norm attack.

From the clean input it steps to the nearest linearised class boundary (overshooting it by `overshoot`) until
the label changes or `steps` run out. Its result is kept where it is misclassified and within eps, else the
clean input comes back (`_minimum_norm.py`); the search never reads eps, so one cell at the largest budget gives
the robust accuracy at every smaller one (otbench.curves). Queries: the steps run (each a forward and one
backward pass per class). torchattacks runs it one sample at a time, and clamping to [0, 1] each step can
stall it until `steps` run out: 427 s for 100 samples on the quick FC ResNet on a 2-core CPU (FAB: 53 s)."""
from __future__ import annotations

import torch

from ..registry import register_attack
from ._minimum_norm import keep_adversarial_within
from .base import Attack, AttackOutput


@register_attack("deepfool")
class DeepFool(Attack):
    description = "DeepFool (torchattacks): L2 minimum-norm attack; its adversarial kept when within eps"
    needs = "gradients"
    norms = ("L2",)
    eps_meaning = ("largest budget searched: the adversarial input found is returned when within eps, else the "
                   "clean input; inputs in [0, 1]")
    defaults = {"norm": "L2", "steps": 50, "overshoot": 0.02}
    default_eps = (3.0,)
    minimum_norm = True

    @classmethod
    def check_settings(cls, config: dict, eps: float) -> None:
        cls.require_int(config, "steps")
        if not 0 <= config["overshoot"] <= 1:
            from ..errors import OTBenchError
            raise OTBenchError(f"{cls.name}: overshoot must be in [0, 1], got {config['overshoot']!r}")

    def run(self, images: torch.Tensor, labels: torch.Tensor, seed: int) -> AttackOutput:
        import torchattacks

        c, device, model = self.config, self.defense.device, self.model()
        atk = torchattacks.DeepFool(model, steps=c["steps"], overshoot=c["overshoot"])
        atk.set_device(device)
        adv = atk(images.to(device), labels.to(device))
        adv = keep_adversarial_within(model, images, adv, labels, self.norm, self.eps)
        return AttackOutput(adv, torch.full((len(images),), c["steps"], dtype=torch.long))
