"""The defense interface every registered defense implements, and how one is built from a preset.

A defense declares its capabilities up front (as ART's estimators do): whether gradients through it are
the real ones (`differentiable`), whether its outputs are random (`randomized`), and which differentiable
surrogate BPDA may use in its backward pass. Attacks check these before they start.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from .config import merge
from .data import Dataset
from .errors import OTBenchError
from .registry import DEFENSES


class Defense:
    name: ClassVar[str]
    description: ClassVar[str] = ""
    differentiable: ClassVar[bool] = True
    randomized: ClassVar[bool] = False
    surrogate_description: ClassVar[str | None] = None  # what BPDA differentiates instead, if anything
    # differentiable almost everywhere though not declared differentiable (OTAD: the neighbour set is
    # piecewise constant in x); such a defense offers `exact_module()` for exact-gradient attacks
    piecewise_differentiable: ClassVar[bool] = False
    # True when metric_network() returns the embedding net that picks neighbours (OTAD-T's DML-net);
    # `dml-attack` reads it from the class, so it refuses a defense before any model is built
    has_metric_network: ClassVar[bool] = False
    task: ClassVar[str] = "classification"  # or "regression": logits() then returns predictions
    presets: ClassVar[dict[str, dict[str, dict[str, Any]]]] = {}  # preset -> {"train": {}, "defense": {}}

    def __init__(self, data: Dataset, config: dict[str, Any], device: torch.device) -> None:
        self.data, self.config, self.device = data, config, device

    # -- what attacks and the runner call -------------------------------------------------------
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores of the real defense for a batch x in [0, 1]."""
        raise NotImplementedError

    def surrogate(self) -> nn.Module | None:
        """A differentiable module approximating the defense, for BPDA; None when there is none."""
        return None

    def exact_module(self) -> nn.Module:
        """An nn.Module with the defense's outputs whose autograd gives its exact (a.e.) gradient."""
        if self.differentiable:
            return self.module()
        raise OTBenchError(f"defense '{self.name}' has no exact gradients")

    def metric_network(self) -> nn.Module | None:
        """The embedding network that picks neighbours (a DML-net), for `dml-attack`; None if none."""
        return None

    def predict(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([self.logits(x[i:i + batch_size].to(self.device)).argmax(1).cpu()
                              for i in range(0, len(x), batch_size)])

    def module(self) -> nn.Module:
        """An nn.Module that torchattacks (and anything else taking a model) can call directly."""
        return DefenseModule(self)

    @property
    def identity(self) -> dict[str, Any]:
        """Everything that determines this defense's outputs: the key results are stored under."""
        return defense_identity(self.name, self.data.name, self.config)


class DefenseModule(nn.Module):
    """Inference-only wrapper. torchattacks saves and restores the model's train flag around an attack;
    if that flag reached the BatchNorm layers inside, a wrapper left in train mode would switch them to
    batch statistics. So `train()` here only sets this wrapper's own flag; the defense always evaluates."""

    def __init__(self, defense: Defense) -> None:
        super().__init__()
        self.defense = defense
        # attack libraries read the device from the parameters: register them, frozen and in eval mode
        self.params_anchor = nn.ParameterList(
            [nn.Parameter(torch.zeros(1, device=defense.device), requires_grad=False)])
        self.training = False

    def train(self, mode: bool = True) -> "DefenseModule":
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.defense.differentiable:
            return self.defense.logits(x)
        with torch.no_grad():
            return self.defense.logits(x)


def defense_identity(name: str, dataset: str, config: dict[str, Any]) -> dict[str, Any]:
    """The stored identity of a defense. Known flaw, kept so that stored cell ids stay valid: a config with a
    `defense` section replaces the name, so two defenses with equal presets would share cells.
    tests/test_registry.py checks that no two registered defenses do; a new defense that collides must add
    a distinguishing setting (e.g. `{"model": name}` in its defense section)."""
    return {"defense": name, "dataset": dataset, **config}


def build_config(cls: type[Defense], preset: str, overrides: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    if preset not in cls.presets:
        raise OTBenchError(f"unknown preset '{preset}' for defense '{cls.name}'; valid: {', '.join(cls.presets)}")
    overrides = overrides or {}
    base = cls.presets[preset]
    config: dict[str, Any] = {"preset": preset}
    for section in ("train", "defense"):
        if section in base:
            config[section] = merge(base[section], overrides.get(section, {}), f"{cls.name} {section}")
        elif overrides.get(section):
            raise OTBenchError(f"defense '{cls.name}' has no {section} settings to override")
    return config


def create_defense(name: str, data: Dataset, preset: str = "quick",
                   overrides: dict[str, dict[str, Any]] | None = None,
                   device: torch.device | str = "cpu") -> Defense:
    """Build a registered defense (training its model if no cached checkpoint matches the config)."""
    cls = DEFENSES.get(name)
    return cls(data, build_config(cls, preset, overrides), torch.device(device))
