"""`regressor`: the undefended FC ResNet regressor (OTAD Table V's first two rows), the model
`otad-regression` and `regressor-at` are built on."""
from __future__ import annotations

import torch

from otbench.common.regressor import RegressorDefense
from otbench.registry import register_defense


@register_defense("regressor")
class Regressor(RegressorDefense):
    description = "the undefended FC ResNet regressor (10 blocks, MSE) that otad-regression is built on"
    differentiable = True
    surrogate_description = "itself"

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.to(self.device))
