"""`regressor-at`: the FC ResNet regressor trained by PGD adversarial training (Table V, "Adversarial
training"; papers/otad.txt V-D3: "trained by adversarial examples (eps = 0.2)").

Madry et al.'s recipe (otbench/common/adversarial.py) with the regression attack's own objective: every
training batch is replaced by its L2 PGD examples maximising the squared error ||f(x + delta) - y||^2 (the
loss `regression-l2` maximises at test time), clamped to the dataset's input domain (none when unbounded),
then the MSE is minimised on them. The paper gives eps (0.2, L2 like its attack) and nothing else; 5 PGD steps
of 2.5 eps / 5 with a random start are ours (10 would double the ~6 CPU minutes this costs).
"""
from __future__ import annotations

from typing import Any

import torch

from otbench.common.adversarial import Perturb, pgd_perturbation
from otbench.common.regressor import TRAIN_REG_PAPER, TRAIN_REG_QUICK, RegressorDefense
from otbench.registry import register_defense

AT_DEFAULTS: dict[str, Any] = {"adv_norm": "L2", "adv_eps": 0.2, "adv_steps": 5, "adv_step_ratio": 2.5,
                               "adv_random_start": True}


@register_defense("regressor-at")
class AdversariallyTrainedRegressor(RegressorDefense):
    description = "the FC ResNet regressor trained on L2 PGD adversarial examples (eps 0.2, OTAD Table V)"
    differentiable = True
    surrogate_description = "itself"
    presets = {"paper": {"train": {**TRAIN_REG_PAPER, **AT_DEFAULTS}, "defense": {}},
               "quick": {"train": {**TRAIN_REG_QUICK, **AT_DEFAULTS}, "defense": {}}}

    def perturbation(self) -> Perturb:
        return pgd_perturbation(self.config["train"], "regression", self.data.domain, "regressor-at")

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.to(self.device))
