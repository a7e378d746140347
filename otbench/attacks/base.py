"""A small attack base class (after torchattacks): one attack per file, `attack(images, labels)`.

Each attack declares its threat model (norm, what eps measures) and what it needs from the defense
(`gradients`, `scores` or `labels`); a gradient attack refuses a defense whose gradients are not real,
naming the alternatives (ART checks estimator capabilities the same way).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..config import merge
from ..defense import Defense
from ..errors import OTBenchError

NEEDS = ("gradients", "surrogate-gradients", "scores", "labels", "nothing")
GRADIENT_NEEDS = ("gradients", "surrogate-gradients")


@dataclass
class AttackOutput:
    adv: torch.Tensor
    queries: torch.Tensor | None = None  # per sample forward queries, when the attack counts them


class Attack:
    name: ClassVar[str]
    description: ClassVar[str] = ""
    needs: ClassVar[str] = "gradients"
    norms: ClassVar[tuple[str, ...]] = ("L2", "Linf")
    eps_meaning: ClassVar[str] = "radius of the norm ball around the clean input, inputs in [0, 1]"
    # False when eps is not a norm bound (ngopt-cw: eps is nevergrad's mutation sigma); the guard then
    # checks only the input domain and the reached norms are recorded instead.
    bounded: ClassVar[bool] = True
    tasks: ClassVar[tuple[str, ...]] = ("classification",)  # defense tasks this attack applies to
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, defense: Defense, eps: float, **config: Any) -> None:
        self.config = merge(self.defaults, config, f"{self.name} attack")
        if "norm" in self.config and self.config["norm"] not in self.norms:
            raise OTBenchError(f"{self.name}: unknown norm '{self.config['norm']}'; valid: {', '.join(self.norms)}")
        if eps < 0:
            raise OTBenchError(f"eps must be >= 0, got {eps}")
        self.defense, self.eps = defense, float(eps)
        self.check_capabilities(type(defense))

    @property
    def norm(self) -> str | None:
        return self.config.get("norm")

    @classmethod
    def check_capabilities(cls, defense: type[Defense]) -> None:
        """Refuse, before any work, a defense that cannot give what this attack needs."""
        if defense.task not in cls.tasks:
            raise OTBenchError(f"attack '{cls.name}' applies to {'/'.join(cls.tasks)} defenses, but "
                               f"'{defense.name}' is a {defense.task} defense")
        if cls.needs == "gradients" and not defense.differentiable:
            raise OTBenchError(
                f"attack '{cls.name}' needs gradients, but defense '{defense.name}' is not differentiable. "
                f"Use 'bpda-pgd' (backward through: {defense.surrogate_description}) or a gradient-free "
                f"attack such as 'square'")
        if cls.needs == "surrogate-gradients" and defense.surrogate_description is None:
            raise OTBenchError(f"attack '{cls.name}' needs a differentiable surrogate, and defense "
                               f"'{defense.name}' declares none; use a gradient-free attack such as 'square'")

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, seed: int = 0) -> AttackOutput:
        if self.eps == 0:
            return AttackOutput(images.clone(), torch.zeros(len(images), dtype=torch.long))
        return self.run(images, labels, seed)

    def run(self, images: torch.Tensor, labels: torch.Tensor, seed: int) -> AttackOutput:
        raise NotImplementedError

    @property
    def uses_gradients(self) -> bool:
        return self.needs in GRADIENT_NEEDS

    @classmethod
    def threat_model(cls) -> str:
        norms = "/".join(cls.norms) if cls.norms else "none"
        bound = "" if cls.bounded else " (unbounded: norms reached are recorded)"
        return f"norm {norms}{bound}; needs {cls.needs}; eps = {cls.eps_meaning}"
