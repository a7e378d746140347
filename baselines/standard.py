"""`standard`: OTAD's FC ResNet and classifier H without the CIP step, i.e. the undefended model."""
from __future__ import annotations

import torch

from otbench.common.fc_defense import FCResNetDefense
from otbench.registry import register_defense


@register_defense("standard")
class Standard(FCResNetDefense):
    description = "the undefended FC ResNet + H that OTAD is built on"
    differentiable = True
    surrogate_description = "itself"

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.to(self.device))
