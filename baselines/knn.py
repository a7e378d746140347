"""`knn`: the paper's KNN comparison (Table XII): the mean of the K nearest neighbours' features, then H."""
from __future__ import annotations

import torch

from otbench.common.fc_defense import NeighbourDefense
from otbench.common.fc_training import fc_resnet_presets
from otbench.registry import register_defense

_KNN_DEFAULTS = {"K": 10, "batch_size": 500}


@register_defense("knn")
class KNNFeatures(NeighbourDefense):
    description = "mean feature of the K nearest training inputs, then H (papers/otad.txt Table XII)"
    differentiable = False  # piecewise constant in x
    surrogate_description = "the FC ResNet R and classifier H (= 'standard')"
    presets = fc_resnet_presets(_KNN_DEFAULTS)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        with self.timer("neighbours"):
            idx = self.knn.search(x.flatten(1).to(self.device), self.config["defense"]["K"])
        return self.net.head(self.bank[idx].mean(1))
