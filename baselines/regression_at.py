"""`regressor-at`: the FC ResNet regressor trained by PGD adversarial training (Table V, "Adversarial
training"; papers/otad.txt V-D3: "trained by adversarial examples (eps = 0.2)").

Madry et al.'s recipe with the regression attack's own objective: every training batch is replaced by
its L2 PGD adversarial examples maximising the squared error ||f(x + delta) - y||^2 (the loss
`regression-l2` maximises at test time), made with the network in eval mode, then the MSE is minimised on
them. The paper gives eps (0.2, L2 like its attack) and nothing else; 5 PGD steps of 2.5 eps / 5 with a
random start are ours (10 would double the ~6 CPU minutes this costs).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from defenses.otad.regression import TRAIN_REG_PAPER, TRAIN_REG_QUICK, Perturb, RegressorDefense
from otbench.attacks.eot_pgd import UNIT, Domain, input_grad, pgd_ascent
from otbench.errors import OTBenchError
from otbench.registry import register_defense

AT_DEFAULTS: dict[str, Any] = {"norm": "L2", "eps": 0.2, "steps": 5, "step_ratio": 2.5, "random_start": True}


def pgd_perturbation(settings: dict[str, Any], domain: Domain = UNIT) -> Perturb:
    """PGD on the squared error, as regression-l2 runs it, for training batches, clamped to the dataset's
    input domain (none when unbounded) as regression-l2 is at test time."""
    if settings.get("norm") not in ("L2", "Linf") or settings.get("steps", 0) < 1 or settings.get("eps", -1) < 0:
        raise OTBenchError(f"train.adversarial needs norm L2 or Linf, steps >= 1 and eps >= 0; got {settings}")

    def perturb(net: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
        target = y.reshape(len(y), -1)

        def grad_fn(adv: torch.Tensor) -> torch.Tensor:
            return input_grad(lambda a: (net(a).reshape(len(a), -1) - target).pow(2).sum(), adv)

        return pgd_ascent(grad_fn, x, settings["eps"], settings["norm"], settings["steps"],
                          settings["step_ratio"], settings["random_start"], seed, domain)

    return perturb


@register_defense("regressor-at")
class AdversariallyTrainedRegressor(RegressorDefense):
    description = "the FC ResNet regressor trained on L2 PGD adversarial examples (eps 0.2, OTAD Table V)"
    differentiable = True
    surrogate_description = "itself"
    presets = {"paper": {"train": {**TRAIN_REG_PAPER, "adversarial": AT_DEFAULTS}, "defense": {}},
               "quick": {"train": {**TRAIN_REG_QUICK, "adversarial": AT_DEFAULTS}, "defense": {}}}

    def perturbation(self) -> Perturb:
        settings = self.config["train"]["adversarial"]
        if not isinstance(settings, dict):
            raise OTBenchError("regressor-at needs train.adversarial settings (norm, eps, steps, step_ratio, "
                               "random_start)")
        return pgd_perturbation(settings, self.data.domain)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.to(self.device))
