"""A small attack base class (after torchattacks): one attack per file, `attack(images, labels)`.

Each attack declares its threat model (norm, what eps measures) and what it needs from the defense
(`gradients`, `scores` or `labels`); a gradient attack refuses a defense whose gradients are not real,
naming the alternatives (ART checks estimator capabilities the same way).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..config import merge
from ..defense import Defense
from ..errors import OTBenchError

# piecewise-gradients: the exact gradient of a defense that is differentiable almost everywhere (OTAD's CIP)
NEEDS = ("gradients", "surrogate-gradients", "piecewise-gradients", "scores", "labels", "nothing")
GRADIENT_NEEDS = ("gradients", "surrogate-gradients", "piecewise-gradients")


def input_domain(defense: Defense) -> tuple[float, float] | None:
    return getattr(getattr(defense, "data", None), "domain", (0.0, 1.0))


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
    # the budgets a run uses when none is given (the papers' own, where they give one)
    default_eps: ClassVar[tuple[float, ...]] = ()
    # True when the attack works in any input domain (clamps to data.domain); the others assume [0, 1]
    any_domain: ClassVar[bool] = False
    # A minimum-norm attack (otbench.curves) returns per sample the smallest adversarial input it found within
    # eps (its pert_norm is that distance, its prediction not the label), else the clean input (pert_norm 0);
    # eps is the largest budget searched, and one cell gives robust accuracy at every budget up to it.
    minimum_norm: ClassVar[bool] = False

    def __init__(self, defense: Defense, eps: float, **config: Any) -> None:
        self.config = self.settings(config, eps)
        self.defense, self.eps = defense, float(eps)
        self.check_capabilities(type(defense))
        self.check_domain(input_domain(defense), getattr(getattr(defense, "data", None), "name", "?"))

    @classmethod
    def settings(cls, config: dict[str, Any], eps: float) -> dict[str, Any]:
        """The attack's full settings for `config` at `eps`, validated without a defense (the run plan calls
        this before any data is loaded): types from the defaults, the norm, eot_samples, eps, then the
        attack's own ranges (`check_settings`)."""
        config = dict(config)
        eot = 1 if "eot_samples" in cls.defaults else config.pop("eot_samples", 1)
        out = merge(cls.defaults, config, f"{cls.name} attack")
        if eot != 1:  # stored only when used, so cells without EOT keep their identity
            if cls.needs not in GRADIENT_NEEDS or isinstance(eot, bool) or not isinstance(eot, int) or eot < 1:
                raise OTBenchError(f"eot_samples applies to gradient attacks and must be an integer >= 1; "
                                   f"'{cls.name}' needs {cls.needs}, got eot_samples={eot!r}")
            out["eot_samples"] = eot
        if "norm" in out and out["norm"] not in cls.norms:
            raise OTBenchError(f"{cls.name}: unknown norm '{out['norm']}'; valid: {', '.join(cls.norms)}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
            raise OTBenchError(f"eps must be a finite number >= 0, got {eps!r}")
        cls.check_settings(out, float(eps))
        return out

    @classmethod
    def check_settings(cls, config: dict[str, Any], eps: float) -> None:
        """Ranges of the attack's own settings (one-line OTBenchError naming the valid values); a hook."""

    @classmethod
    def require_int(cls, config: dict[str, Any], *keys: str, low: int = 1) -> None:
        """Settings that must be integers >= low (steps, samples, counts): the one check every attack calls."""
        for key in keys:
            value = config[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise OTBenchError(f"{cls.name}: {key} must be an integer >= {low}, got {value!r}")

    @property
    def domain(self) -> tuple[float, float] | None:
        """The defense's dataset's input domain (None = unbounded); [0, 1] for a defense built without data."""
        return input_domain(self.defense)

    @classmethod
    def check_domain(cls, domain: tuple[float, float] | None, dataset: str) -> None:
        """Refuse a dataset whose input domain is not [0, 1] unless the attack handles any domain (the run plan
        asks this of the dataset's declared domain, an attack built on a defense of its data's)."""
        if domain != (0.0, 1.0) and not cls.any_domain:
            from ..registry import ATTACKS
            ok = sorted(n for n in ATTACKS.names() if getattr(ATTACKS.get(n), "any_domain", False))
            raise OTBenchError(f"attack '{cls.name}' assumes inputs in [0, 1], but dataset '{dataset}' "
                               f"has input domain {'unbounded' if domain is None else list(domain)}; "
                               f"attacks that support it: {', '.join(ok)}")

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
            bpda = (f"'bpda-pgd' (backward through: {defense.surrogate_description}) or "
                    if defense.surrogate_description is not None else "")
            raise OTBenchError(f"attack '{cls.name}' needs gradients, but defense '{defense.name}' is not "
                               f"differentiable. Use {bpda}a gradient-free attack such as 'square'")
        if cls.needs == "piecewise-gradients" and not (defense.differentiable or defense.piecewise_differentiable):
            raise OTBenchError(f"attack '{cls.name}' needs exact gradients, and defense '{defense.name}' is neither "
                               f"differentiable nor differentiable almost everywhere; use 'bpda-pgd' or 'square'")
        if cls.needs == "surrogate-gradients" and defense.surrogate_description is None:
            raise OTBenchError(f"attack '{cls.name}' needs a differentiable surrogate, and defense "
                               f"'{defense.name}' declares none; use a gradient-free attack such as 'square'")

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, seed: int = 0) -> AttackOutput:
        """The attack itself, at every eps: no shortcut at eps = 0, so a check there exercises the attack (the
        guard then holds it to the clean input, and `eps0-not-clean` sees what the defense makes of it)."""
        return self.run(images, labels, seed)

    def run(self, images: torch.Tensor, labels: torch.Tensor, seed: int) -> AttackOutput:
        raise NotImplementedError

    def model(self) -> nn.Module:
        """The defense as a module for gradient attacks, with EOT when eot_samples > 1."""
        return self.eot(self.defense.module())

    def eot(self, module: nn.Module) -> nn.Module:
        k = self.config.get("eot_samples", 1)
        return EOTModule(module, k) if k > 1 else module

    def expected_calls(self) -> int | None:
        """Batched defense calls one chunk costs at most, from the declared budget (a progress bar's total);
        None when the settings do not say."""
        c = self.config
        if "n_queries" in c:
            return c["n_queries"] * c.get("n_restarts", 1)
        if "budget" in c:
            return c["budget"]
        if "steps" in c:
            return c["steps"] * c.get("binary_search_steps", 1) * c.get("eot_samples", 1)
        return None

    @property
    def uses_gradients(self) -> bool:
        return self.needs in GRADIENT_NEEDS

    @classmethod
    def threat_model(cls) -> str:
        norms = "/".join(cls.norms) if cls.norms else "none"
        bound = "" if cls.bounded else " (unbounded: norms reached are recorded)"
        mode = "; minimum-norm: one cell gives robust accuracy at every smaller eps" if cls.minimum_norm else ""
        return f"norm {norms}{bound}; needs {cls.needs}{mode}; eps = {cls.eps_meaning}"


class EOTModule(nn.Module):
    """Expectation over Transformation (Athalye et al. 2018): the mean of k calls of a randomized model, so
    any gradient attack on it follows the mean gradient over the defense's randomness."""

    def __init__(self, model: nn.Module, samples: int) -> None:
        super().__init__()
        self.inner, self.samples = model, samples

    def train(self, mode: bool = True) -> "EOTModule":
        self.training = mode  # never reach the inner model's layers (see DefenseModule)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.inner(x) for _ in range(self.samples)]).mean(0)
