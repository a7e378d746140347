"""`otad`: ResNet-based OTAD (papers/otad.txt IV-A, Algorithm 2) on top of the shared FC ResNet
(otbench/common).

Test time: exact K nearest training inputs in l2, the convex integration step solved exactly and in batches
(cip.py, following shared/design/cip.md), then the linear classifier H on the CIP feature.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from otbench.common.fc_defense import NeighbourDefense
from otbench.common.fc_training import fc_resnet_presets
from otbench.errors import OTBenchError
from otbench.registry import register_defense

from .cip import FORMULATIONS, POTENTIALS
from .step import CIPStep

# papers/otad.txt V-D1: K = 10, L = 2, l = 0, delta1 = delta2 = 0.2 on MNIST.
OTAD_DEFAULTS: dict[str, Any] = {"K": 10, "L": 2.0, "l": 0.0, "delta1": 0.2, "delta2": 0.2,
                                 "formulation": "paper", "potentials": "least", "batch_size": 500}


def check_cip_settings(cfg: dict[str, Any]) -> None:
    """The CIP step's settings, shared by every OTAD variant; one-line errors naming the valid choices."""
    if cfg["formulation"] not in FORMULATIONS:
        raise OTBenchError(f"unknown formulation '{cfg['formulation']}'; valid: {', '.join(FORMULATIONS)}")
    if cfg["potentials"] not in POTENTIALS:
        raise OTBenchError(f"unknown potentials '{cfg['potentials']}'; valid: {', '.join(POTENTIALS)}")
    if not cfg["l"] < cfg["L"]:
        raise OTBenchError(f"OTAD needs l < L, got l={cfg['l']}, L={cfg['L']}")


@register_defense("otad")
class OTAD(NeighbourDefense):
    description = "OTAD: FC ResNet + exact K-NN + convex integration step (papers/otad.txt IV-A)"
    differentiable = False  # the CIP step is solved, not differentiated as a network is...
    piecewise_differentiable = True  # ...but its exact solution is differentiable a.e. (otad-exact-grad)
    surrogate_description = "the FC ResNet R and classifier H without the CIP step (= 'standard')"
    presets = fc_resnet_presets(OTAD_DEFAULTS)

    @classmethod
    def check_config(cls, config: dict[str, Any]) -> None:
        super().check_config(config)
        check_cip_settings(config["defense"])

    def __init__(self, data, config, device) -> None:
        super().__init__(data, config, device)
        self.last_steps: torch.Tensor | None = None  # relaxation steps of the last batch, for diagnostics
        self.cip = CIPStep(config["defense"], self.timer)

    def cip_features(self, x: torch.Tensor):
        """The CIP features of x; differentiable a.e. in x when x requires grad (the neighbour set and the
        relaxation step are piecewise constant in x, so only the QP's solution carries the gradient). The
        potentials follow the neighbours in training-index order."""
        flat = x.flatten(1).to(self.device)
        with self.timer("neighbours"):
            # in training-index order, as the CIP step takes them (the K-NN lists them nearest first)
            idx = self.knn.search(flat.detach(), self.config["defense"]["K"]).sort(1).values
        result = self.cip(flat, self.train_flat[idx], self.bank[idx], idx)
        self.last_steps = result.steps
        return result

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        features = self.cip_features(x).features
        return self.net.head(features.to(self.net.head.weight.dtype))

    def exact_module(self) -> nn.Module:
        return _ExactOTAD(self)


class _ExactOTAD(nn.Module):
    """OTAD's real outputs with autograd through the exact CIP solution (for `otad-exact-grad`)."""

    def __init__(self, defense: OTAD) -> None:
        super().__init__()
        self.defense = defense
        self.anchor = nn.Parameter(torch.zeros(1, device=defense.device), requires_grad=False)

    def train(self, mode: bool = True) -> "_ExactOTAD":
        self.training = mode  # BatchNorm inside stays in eval (see otbench.defense.DefenseModule)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.defense.logits(x)
