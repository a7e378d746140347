"""`otad`: ResNet-based OTAD (papers/otad.txt IV-A, Algorithm 2) on top of the shared FC ResNet
(otbench/common).

Test time: exact K nearest training inputs in l2, the convex integration step solved exactly and in batches
(cip.py, following shared/design/cip.md), then the linear classifier H on the CIP feature.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from otbench.common.fc_defense import NeighbourDefense
from otbench.common.fc_training import fc_resnet_presets
from otbench.errors import OTBenchError
from otbench.registry import register_defense

from .cip import FORMULATIONS, POTENTIALS, first_feasible_step, solve_cip

# papers/otad.txt V-D1: K = 10, L = 2, l = 0, delta1 = delta2 = 0.2 on MNIST.
OTAD_DEFAULTS: dict[str, Any] = {"K": 10, "L": 2.0, "l": 0.0, "delta1": 0.2, "delta2": 0.2,
                                 "formulation": "paper", "potentials": "least", "batch_size": 500}


MAX_STEPS = 2000  # Algorithm 2's loop has no bound; this one is far above the ~200 seen on MNIST


def check_cip_settings(cfg: dict[str, Any]) -> None:
    """The CIP step's settings, shared by every OTAD variant; one-line errors naming the valid choices."""
    if cfg["formulation"] not in FORMULATIONS:
        raise OTBenchError(f"unknown formulation '{cfg['formulation']}'; valid: {', '.join(FORMULATIONS)}")
    if cfg["potentials"] not in POTENTIALS:
        raise OTBenchError(f"unknown potentials '{cfg['potentials']}'; valid: {', '.join(POTENTIALS)}")
    if not cfg["l"] < cfg["L"]:
        raise OTBenchError(f"OTAD needs l < L, got l={cfg['l']}, L={cfg['L']}")


class StepCache:
    """Memo of Algorithm 2's first feasible relaxation step per neighbour set.

    Eq. 15 involves only the neighbours (X, Z), never the test point, so the step is a function of the
    (unordered) neighbour set. An attack's successive queries of one sample almost always keep the same
    neighbours, so this exact memo removes the feasibility search from nearly every query."""

    def __init__(self, max_entries: int = 1_000_000) -> None:
        self._steps: dict[bytes, int] = {}
        self.max_entries = max_entries
        self.hits = self.misses = 0

    @staticmethod
    def _keys(idx: torch.Tensor) -> list[bytes]:
        return [row.tobytes() for row in np.sort(idx.cpu().numpy().astype(np.int64), axis=1)]

    def lookup(self, idx: torch.Tensor) -> torch.Tensor:
        """(B,) int64 steps, -1 where the set has not been seen."""
        found = [self._steps.get(k, -1) for k in self._keys(idx)]
        out = torch.tensor(found, dtype=torch.long, device=idx.device)
        n_hit = int((out >= 0).sum())
        self.hits, self.misses = self.hits + n_hit, self.misses + len(found) - n_hit
        return out

    def store(self, idx: torch.Tensor, steps: torch.Tensor) -> None:
        if len(self._steps) > self.max_entries:
            self._steps.clear()  # a memo, not a store: dropping it only costs recomputation
        self._steps.update(zip(self._keys(idx), steps.tolist()))


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
        self.steps_cache = StepCache()

    def cip_features(self, x: torch.Tensor):
        """The CIP features of x; differentiable a.e. in x when x requires grad (the neighbour set and the
        relaxation step are piecewise constant in x, so only the QP's solution carries the gradient)."""
        cfg = self.config["defense"]
        flat = x.flatten(1).to(self.device)
        with self.timer("neighbours"):
            idx = self.knn.search(flat.detach(), cfg["K"])
        X, Z = self.train_flat[idx].double(), self.bank[idx].double()
        with self.timer("relaxation search"):
            steps = self.steps_cache.lookup(idx)
            miss = steps < 0
            if miss.any():
                steps[miss] = first_feasible_step(X[miss], Z[miss], cfg["L"], cfg["l"], cfg["delta1"],
                                                  cfg["delta2"], MAX_STEPS)
                self.steps_cache.store(idx[miss], steps[miss])
        with self.timer("cip"):
            result = solve_cip(flat.double(), X, Z, L=cfg["L"], l=cfg["l"], delta1=cfg["delta1"],
                               delta2=cfg["delta2"], formulation=cfg["formulation"],
                               potentials=cfg["potentials"], max_steps=MAX_STEPS, steps=steps)
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
