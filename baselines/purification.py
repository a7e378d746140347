"""Shared plumbing of the purification baselines (`median-filter`, `stl`, `ape-gan`): x -> purify(x) -> the
standard FC ResNet + H (the classifier `standard` uses, the same cached checkpoint for the same train keys).

papers/otad.txt V-C: "When using the BPDA + PGD attack on these purification methods, we approximate the
purification process using the identity map during back-propagation": `surrogate()` is the classifier run
on purify(x) with the purifier's Jacobian replaced by the identity (the straight-through form of BPDA,
Athalye et al. 2018), so the gradient is the classifier's, taken at the purified point.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from otbench.common.fc_training import TRAIN_PAPER, check_schedule, load_or_train
from otbench.data import Dataset
from otbench.defense import Defense
from otbench.training import checkpoint_path

CLASSIFIER_KEYS = tuple(TRAIN_PAPER)  # the train settings that name the classifier's checkpoint


def classifier_config(train: dict[str, Any]) -> dict[str, Any]:
    """The classifier's own train settings (its checkpoint is `standard`'s for the same values)."""
    return {k: train[k] for k in CLASSIFIER_KEYS}


def purifier_path(kind: str, data: Dataset, settings: dict[str, Any]) -> Any:
    """Checkpoint path of a learned purifier, named by a hash of everything that determines it."""
    return checkpoint_path(kind, data.name, train=settings)


class PurifiedDefense(Defense):
    """A purifier in front of the standard classifier; subclasses implement `purify`."""

    def __init__(self, data: Dataset, config: dict[str, Any], device: torch.device) -> None:
        super().__init__(data, config, device)
        self.net, record = load_or_train(data, classifier_config(config["train"]), device)
        self.train_record: dict[str, Any] = {"classifier": record}

    @classmethod
    def check_config(cls, config: dict[str, Any]) -> None:
        check_schedule(config["train"])

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.purify(x.to(self.device)))

    def surrogate(self) -> nn.Module:
        return StraightThrough(self)


class StraightThrough(nn.Module):
    """classifier(purify(x)) in the forward pass, d classifier / d input at purify(x) in the backward pass."""

    def __init__(self, defense: PurifiedDefense) -> None:
        super().__init__()
        self.defense, self.net = defense, defense.net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            purified = self.defense.purify(x)
        return self.net(x + (purified - x).detach())
