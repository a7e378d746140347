"""Defenses built on the shared FC ResNet: `FCResNetDefense` (the cached trained network, its training points)
and `NeighbourDefense` (plus the exact K nearest training points and their features), which OTAD and the KNN
baseline both classify from."""
from __future__ import annotations

import time
from collections import Counter
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from otbench.defense import Defense
from otbench.errors import OTBenchError

from .fc_training import check_schedule, fc_resnet_presets, feature_bank, load_or_train
from .neighbours import ExactKNN


def check_k(k: Any) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise OTBenchError(f"K must be an integer of at least 2, got {k!r}")


class FCResNetDefense(Defense):
    """Shared plumbing: the cached trained network, its training points and their features."""

    presets = fc_resnet_presets({})

    @classmethod
    def check_config(cls, config: dict[str, Any]) -> None:
        check_schedule(config["train"])

    def __init__(self, data, config, device) -> None:
        super().__init__(data, config, device)
        self.net, self.train_record = load_or_train(data, config["train"], device)
        self.train_x = data.take_train(config["train"]["train_size"]).x_train

    def surrogate(self) -> nn.Module:
        return self.net


class NeighbourDefense(FCResNetDefense):
    """Defenses that classify from the K nearest training points and their features."""

    @classmethod
    def check_config(cls, config: dict[str, Any]) -> None:
        super().check_config(config)
        check_k(config["defense"]["K"])

    def __init__(self, data, config, device) -> None:
        super().__init__(data, config, device)
        k = config["defense"]["K"]
        if k > len(self.train_x):
            raise OTBenchError(f"K must be at most the {len(self.train_x)} training points, got {k}")
        self.train_flat = self.train_x.flatten(1).to(device)
        self.knn = ExactKNN(self.train_flat)
        self.bank = feature_bank(self.net, self.train_x, device)  # z_i = R(x_i)
        self.timings: Counter[str] = Counter()  # seconds spent per stage, for the benchmarks

    @contextmanager
    def timer(self, stage: str):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.timings[stage] += time.perf_counter() - start

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        bs = self.config["defense"]["batch_size"]
        return torch.cat([self._logits(x[i:i + bs]) for i in range(0, len(x), bs)])

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
