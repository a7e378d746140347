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
from .identity import defense_identity
from .registry import DEFENSES


TASKS = ("classification", "regression")
SECTIONS = ("train", "defense")
# What a preset's models are, for a report row taken from it instead of the preset asked for (`--fallback`). The
# method layer that defines a preset describes it here (describe_preset), so the core names no method's network.
PRESET_NOTES: dict[str, str] = {
    "quick": "`quick` the reduced scale (most such rows need a GPU to train at the paper's)"}


def describe_preset(name: str, note: str) -> None:
    """Say in one clause what preset `name`'s models are (it stands in the fallback note of report tables)."""
    PRESET_NOTES[name] = note


def preset_note(name: str) -> str:
    return PRESET_NOTES.get(name, f"`{name}` a preset of its own")


class Defense:
    """A registered defense. Subclasses declare their capabilities as class attributes, implement `logits`, and
    override the hooks below that apply to them; `check_declarations` (run when the class is registered)
    refuses a class whose declarations contradict the methods it implements."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    differentiable: ClassVar[bool] = True
    randomized: ClassVar[bool] = False
    surrogate_description: ClassVar[str | None] = None  # what BPDA differentiates instead, if anything
    # True when surrogate()'s forward already returns the defense's own outputs (a straight-through module,
    # Defense-GAN's), so BPDA needs no second call of the defense
    surrogate_outputs_defense: ClassVar[bool] = False
    # differentiable almost everywhere though not declared differentiable (OTAD: the neighbour set is
    # piecewise constant in x); such a defense offers `exact_module()` for exact-gradient attacks
    piecewise_differentiable: ClassVar[bool] = False
    # True when metric_network() returns the embedding net that picks neighbours (OTAD-T's DML-net);
    # `dml-attack` reads it from the class, so it refuses a defense before any model is built
    has_metric_network: ClassVar[bool] = False
    task: ClassVar[str] = "classification"  # or "regression": logits() then returns predictions
    presets: ClassVar[dict[str, dict[str, dict[str, Any]]]] = {}  # preset -> {"train": {}, "defense": {}}
    # preset -> why its model's clean accuracy is known to differ from a paper's (measured, with its cause): a
    # report table states every clean gap beyond CLEAN_GAP_POINTS and quotes this, or says none is known
    known_gaps: ClassVar[dict[str, str]] = {}

    def __init__(self, data: Dataset, config: dict[str, Any], device: torch.device) -> None:
        self.data, self.config, self.device = data, config, device
        # what training made the defense's model(s): stored with every cell it is evaluated in
        self.train_record: dict[str, Any] | None = None

    @classmethod
    def check_declarations(cls) -> None:
        """One-line refusal of a class whose declared capabilities contradict its methods (run at registration)."""
        def overrides(method: str) -> bool:
            return getattr(cls, method) is not getattr(Defense, method)

        problems = []
        if not overrides("logits"):
            problems.append("it does not implement logits()")
        if cls.task not in TASKS:
            problems.append(f"task '{cls.task}' is not one of {', '.join(TASKS)}")
        for flag in ("differentiable", "randomized", "piecewise_differentiable", "has_metric_network",
                     "surrogate_outputs_defense"):
            if not isinstance(getattr(cls, flag), bool):
                problems.append(f"{flag} must be True or False, got {getattr(cls, flag)!r}")
        if (cls.surrogate_description is not None) != overrides("surrogate"):
            problems.append("it declares surrogate_description without implementing surrogate()"
                            if cls.surrogate_description is not None else
                            "it implements surrogate() without declaring surrogate_description")
        if cls.surrogate_outputs_defense and cls.surrogate_description is None:
            problems.append("surrogate_outputs_defense needs a surrogate")
        if cls.piecewise_differentiable and not cls.differentiable and not overrides("exact_module"):
            problems.append("it declares piecewise_differentiable without implementing exact_module()")
        if cls.has_metric_network and not overrides("metric_network"):
            problems.append("it declares has_metric_network without implementing metric_network()")
        if not isinstance(cls.presets, dict) or not cls.presets:
            problems.append("it declares no presets (preset -> {'train': {...}, 'defense': {...}})")
        else:
            for preset, sections in cls.presets.items():
                if not isinstance(sections, dict) or set(sections) - set(SECTIONS) or \
                        not all(isinstance(v, dict) for v in sections.values()):
                    problems.append(f"preset '{preset}' must map sections among {', '.join(SECTIONS)} to dicts")
            unknown = [k for k in cls.known_gaps if k not in cls.presets or not isinstance(cls.known_gaps[k], str)]
            if unknown:
                problems.append(f"known_gaps must map its presets ({', '.join(cls.presets)}) to text, got "
                                f"{', '.join(map(repr, unknown))}")
        if problems:
            raise OTBenchError(f"defense '{cls.name}' ({cls.__module__}.{cls.__qualname__}) is refused: "
                               + "; ".join(problems))

    @classmethod
    def check_config(cls, config: dict[str, Any]) -> None:
        """Refuse settings this defense cannot use, before any data is loaded or model trained (one-line
        OTBenchError naming the valid values); build_config calls it. Ranges shared by every setting of a name
        (counts, seeds, learning rates) are checked by otbench.config already."""

    # -- what attacks and the runner call -------------------------------------------------------
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores of the real defense for a batch x in the dataset's domain (regression: predictions)."""
        raise NotImplementedError

    def surrogate(self) -> nn.Module | None:
        """A differentiable module approximating the defense, for BPDA; implemented exactly when
        `surrogate_description` is declared."""
        return None

    def undefended(self) -> nn.Module | None:
        """The network without the defense step, which `undefended-not-broken` attacks at a budget that must
        break it. By default the surrogate; a defense whose surrogate contains the defense itself (Defense-GAN's
        straight-through BPDA) returns its classifier here."""
        return self.surrogate()

    def exact_module(self) -> nn.Module:
        """An nn.Module with the defense's outputs whose autograd gives its exact (a.e.) gradient."""
        if self.differentiable:
            return self.module()
        raise OTBenchError(f"defense '{self.name}' has no exact gradients")

    def metric_network(self) -> nn.Module | None:
        """The embedding network that picks neighbours (a DML-net), for `dml-attack`; implemented exactly
        when `has_metric_network` is declared."""
        return None

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The defense's internal code of x (OT-Classifier's Q(x)), for analyses that plot or test codes."""
        raise OTBenchError(f"defense '{self.name}' has no embedding to show")

    def predict(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """Predicted classes; non-finite scores are an error, never a class (argmax would make them class 0)."""
        with torch.no_grad():
            scores = [self.logits(x[i:i + batch_size].to(self.device)) for i in range(0, len(x), batch_size)]
        check_finite_outputs(self.name, torch.cat([s.detach().cpu() for s in scores]) if scores else torch.zeros(0))
        return torch.cat([s.argmax(1).cpu() for s in scores])

    def module(self) -> nn.Module:
        """An nn.Module that torchattacks (and anything else taking a model) can call directly."""
        return DefenseModule(self)

    @property
    def identity(self) -> dict[str, Any]:
        """Everything that determines this defense's outputs: the key results are stored under."""
        return defense_identity(self.name, self.data.name, self.config)


def check_finite_outputs(name: str, outputs: torch.Tensor) -> None:
    bad = ~torch.isfinite(outputs.reshape(len(outputs), -1)).all(1)
    if bad.any():
        raise OTBenchError(f"defense '{name}' returned non-finite outputs (NaN or inf) for {int(bad.sum())} of "
                           f"{len(outputs)} inputs: no result is stored from them (a diverged training? check "
                           f"its train settings, e.g. lr)")


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


def check_task(defense: type[Defense] | Defense, dataset: str, dataset_task: str) -> None:
    """A regression defense needs a regression dataset and a classifier a classification one: one line if not."""
    if defense.task != dataset_task:
        raise OTBenchError(f"defense '{defense.name}' is a {defense.task} defense and dataset '{dataset}' is a "
                           f"{dataset_task} dataset")


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
    cls.check_config(config)
    return config


def create_defense(name: str, data: Dataset, preset: str = "quick",
                   overrides: dict[str, dict[str, Any]] | None = None,
                   device: torch.device | str = "cpu") -> Defense:
    """Build a registered defense (training its model if no cached checkpoint matches the config)."""
    cls = DEFENSES.get(name)
    return cls(data, build_config(cls, preset, overrides), torch.device(device))
