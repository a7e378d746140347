"""EOT-PGD: PGD with Expectation over Transformation (Athalye et al. 2018, "Obfuscated Gradients Give a
False Sense of Security", Sec. 4.3) for randomized defenses, in L2 and Linf.

A randomized defense gives a different gradient on every call; one draw is a noisy estimate of the
direction that raises the *expected* loss, which is what the harness's (fresh-noise) evaluation measures.
Each step therefore averages the gradient over `eot_samples` separate calls of the defense.

This module also holds the projected-ascent loop (`pgd_ascent`, `ascent_step`) that fgsm, dml-attack and
regression-l2 reuse with their own gradients.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ..defense import Defense
from ..errors import OTBenchError
from ..registry import register_attack
from .base import Attack, AttackOutput
from .pgd import PGD_DEFAULTS

GradFn = Callable[[torch.Tensor], torch.Tensor]  # adversarial batch -> gradient of the loss to maximise
Domain = tuple[float, float] | None  # a dataset's input domain (otbench/data/base.py); None = unbounded
UNIT: Domain = (0.0, 1.0)


def _per_sample_l2(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def project(x: torch.Tensor, adv: torch.Tensor, eps: float, norm: str, domain: Domain = UNIT) -> torch.Tensor:
    """Onto the eps-ball around x, then into `domain` (clamping only shrinks the perturbation; None: no clamp)."""
    delta = adv - x
    if norm == "Linf":
        delta = delta.clamp(-eps, eps)
    else:
        delta = delta * (eps / (_per_sample_l2(delta) + 1e-12)).clamp(max=1.0)
    return x + delta if domain is None else (x + delta).clamp(*domain)


def ascent_step(x: torch.Tensor, adv: torch.Tensor, grad: torch.Tensor, alpha: float, eps: float,
                norm: str, domain: Domain = UNIT) -> torch.Tensor:
    """One steepest-ascent step of length alpha in `norm`, projected back."""
    direction = grad.sign() if norm == "Linf" else grad / (_per_sample_l2(grad) + 1e-12)
    return project(x, adv + alpha * direction, eps, norm, domain)


def random_start(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator,
                 domain: Domain = UNIT) -> torch.Tensor:
    """Uniform in the Linf box; for L2 a random direction at a uniform radius (as torchattacks' PGDL2)."""
    if norm == "Linf":
        noise = (torch.rand(x.shape, generator=generator) * 2 - 1) * eps
    else:
        noise = torch.randn(x.shape, generator=generator)
        radius = torch.rand(len(x), generator=generator).view(-1, *([1] * (x.dim() - 1)))
        noise = noise / (_per_sample_l2(noise) + 1e-12) * radius * eps
    return project(x, x + noise.to(x.device), eps, norm, domain)


def pgd_ascent(grad_fn: GradFn, x: torch.Tensor, eps: float, norm: str, steps: int, step_ratio: float,
               start: bool, seed: int, domain: Domain = UNIT) -> torch.Tensor:
    """Projected gradient ascent; step alpha = step_ratio * eps / steps, as in pgd.py. Returns the last
    iterate: picking a 'best' one would need extra (for randomized defenses, noisy) evaluations.
    Iterates are clamped into `domain` (the dataset's; None = unbounded)."""
    alpha = step_ratio * eps / steps
    x = x.detach()
    adv = random_start(x, eps, norm, torch.Generator().manual_seed(seed), domain) if start else x.clone()
    for _ in range(steps):
        adv = ascent_step(x, adv, grad_fn(adv).detach(), alpha, eps, norm, domain).detach()
    return adv


def check_positive(attack: Attack, *keys: str) -> None:
    for key in keys:
        if attack.config[key] < 1:
            raise OTBenchError(f"{attack.name}: {key} must be at least 1, got {attack.config[key]}")


def input_grad(loss_fn: Callable[[torch.Tensor], torch.Tensor], adv: torch.Tensor,
               samples: int = 1) -> torch.Tensor:
    """Gradient of a scalar loss with respect to the inputs only (no parameter .grad is touched), averaged
    over `samples` separate calls: E[grad L], not grad of the mean output, so a defense drawing its
    randomness once per call gets fresh draws."""
    total = torch.zeros_like(adv)
    for _ in range(samples):
        a = adv.detach().clone().requires_grad_(True)
        total += torch.autograd.grad(loss_fn(a), a)[0]
    return total / samples


@register_attack("eot-pgd")
class EOTPGD(Attack):
    description = ("PGD whose every step averages the gradient over eot_samples calls of a randomized "
                   "defense (EOT, Athalye et al. 2018)")
    needs = "gradients"
    defaults = {**PGD_DEFAULTS, "eot_samples": 20}

    def __init__(self, defense: Defense, eps: float, **config: Any) -> None:
        samples = config.get("eot_samples", self.defaults["eot_samples"])
        super().__init__(defense, eps, **config)
        # Attack.__init__ may treat eot_samples as a generic setting with default 1; ours defaults to 20
        self.config["eot_samples"] = samples
        check_positive(self, "steps", "eot_samples")

    def run(self, images: torch.Tensor, labels: torch.Tensor, seed: int) -> AttackOutput:
        model, device = self.defense.module(), self.defense.device
        x, y = images.to(device), labels.to(device)
        samples = self.config["eot_samples"]

        def grad_fn(adv: torch.Tensor) -> torch.Tensor:
            return input_grad(lambda a: F.cross_entropy(model(a), y, reduction="sum"), adv, samples)

        torch.manual_seed(seed)  # the defense's own noise, so a cell is reproducible
        adv = pgd_ascent(grad_fn, x, self.eps, self.norm, self.config["steps"], self.config["step_ratio"],
                         self.config["random_start"], seed)
        queries = self.config["steps"] * samples
        return AttackOutput(adv.cpu(), torch.full((len(images),), queries, dtype=torch.long))
