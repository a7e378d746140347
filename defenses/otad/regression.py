"""`otad-regression`: OTAD for regression (papers/otad.txt V-D3, Table V): OTAD's test-time step unchanged (the
exact K nearest training inputs, the convex integration problem solved exactly on (x, X, Z = R(X)) by cip.py,
in any dimension d), then the regression head H on the CIP feature instead of the classifier. The regressor
itself is otbench/common/regressor.py's."""
from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch import nn

from otbench.common.fc_defense import NeighbourDefense, check_k
from otbench.common.fc_training import feature_bank
from otbench.common.neighbours import ExactKNN
from otbench.common.regressor import TRAIN_REG_PAPER, TRAIN_REG_QUICK, RegressorDefense
from otbench.errors import OTBenchError
from otbench.registry import register_defense

from .defense import OTAD, OTAD_DEFAULTS, _ExactOTAD, check_cip_settings
from .step import CIPStep


def check_otad_config(cfg: dict[str, Any], n_train: int) -> None:
    """OTAD's settings, checked before any training starts (as `otad` checks them)."""
    k = cfg["K"]
    if not isinstance(k, int) or not 2 <= k <= n_train:
        raise OTBenchError(f"K must be an integer from 2 to the {n_train} training points, got {k!r}")
    check_cip_settings(cfg)


@register_defense("otad-regression")
class OTADRegression(RegressorDefense):
    """The paper gives no K, L, l, delta for the wine data: V-D1's MNIST values (K = 10, L = 2, l = 0,
    delta1 = delta2 = 0.2) are used."""

    description = "OTAD for regression: FC ResNet regressor + exact K-NN + CIP step, head on the CIP feature"
    differentiable = False  # the CIP step is solved...
    piecewise_differentiable = True  # ...and its exact solution is differentiable a.e.
    surrogate_description = "the FC ResNet regressor R and head H without the CIP step (= 'regressor')"
    presets = {"paper": {"train": TRAIN_REG_PAPER, "defense": OTAD_DEFAULTS},
               "quick": {"train": TRAIN_REG_QUICK, "defense": OTAD_DEFAULTS}}

    # The test-time step is `otad`'s own, line for line: the same functions, not a copy.
    cip_features = OTAD.cip_features
    timer = NeighbourDefense.timer

    @classmethod
    def check_config(cls, config: dict[str, Any]) -> None:
        super().check_config(config)
        check_k(config["defense"]["K"])
        check_cip_settings(config["defense"])

    def __init__(self, data, config, device) -> None:
        n_train = len(data.take_train(config["train"]["train_size"]).x_train)
        check_otad_config(config["defense"], n_train)
        super().__init__(data, config, device)
        self.train_flat = self.train_x.flatten(1).to(device)
        self.knn = ExactKNN(self.train_flat)
        self.bank = feature_bank(self.net, self.train_x, device)  # z_i = R(x_i)
        self.timings: Counter[str] = Counter()  # seconds per stage, as `otad` keeps them
        self.cip = CIPStep(config["defense"], self.timer)
        self.last_steps: torch.Tensor | None = None

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        bs = self.config["defense"]["batch_size"]
        return torch.cat([self._predict(x[i:i + bs]) for i in range(0, len(x), bs)])

    def _predict(self, x: torch.Tensor) -> torch.Tensor:
        features = self.cip_features(x).features
        return self.net.head(features.to(self.net.head.weight.dtype))

    def exact_module(self) -> nn.Module:
        return _ExactOTAD(self)
