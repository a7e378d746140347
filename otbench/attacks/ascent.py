"""Projected gradient ascent in L2 or Linf: the one PGD loop that `eot-pgd`, `fgsm`, `dml-attack`,
`regression-l2` and adversarial training (otbench/common/adversarial.py) share, each with its own loss.

The iterate is the perturbation delta, kept inside the eps ball and, through x + delta, inside the input
domain; the step is alpha = step_ratio * eps / steps (Madry et al.'s 2.5 eps / steps rule by default).
Random starts draw from `generator`, or from torch's global generator when it is None (adversarial training
seeds that once per training, so its examples follow the training's own random stream)."""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import OTBenchError

GradFn = Callable[[torch.Tensor], torch.Tensor]  # adversarial batch -> gradient of the loss to maximise
Domain = tuple[float, float] | None  # a dataset's input domain (otbench/data/base.py); None = unbounded
UNIT: Domain = (0.0, 1.0)
NORMS = ("L2", "Linf")


def per_sample_l2(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def into_domain(x: torch.Tensor, delta: torch.Tensor, domain: Domain) -> torch.Tensor:
    """delta shrunk so that x + delta lies in `domain` (clamping only shrinks a perturbation)."""
    return delta if domain is None else (x + delta).clamp(*domain) - x


def random_delta(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None) -> torch.Tensor:
    """Uniform in the Linf box; for L2 a uniform direction at a uniform radius (as torchattacks' PGDL2)."""
    device = x.device if generator is None else "cpu"  # a seeded generator lives on the CPU
    if norm == "Linf":
        return torch.empty(x.shape, dtype=x.dtype, device=device).uniform_(-eps, eps, generator=generator).to(x.device)
    g = torch.randn(x.shape, dtype=x.dtype, device=device, generator=generator)
    r = torch.rand(len(x), *([1] * (x.dim() - 1)), device=device, generator=generator)
    return (g / per_sample_l2(g).clamp_min(1e-12) * r * eps).to(x.device)


def ascent_step(delta: torch.Tensor, grad: torch.Tensor, alpha: float, eps: float, norm: str) -> torch.Tensor:
    """One steepest-ascent step of length alpha in `norm`, projected back onto the eps ball."""
    if norm == "Linf":
        return (delta + alpha * grad.sign()).clamp(-eps, eps)
    delta = delta + alpha * grad / per_sample_l2(grad).clamp_min(1e-12)
    return delta * (eps / per_sample_l2(delta).clamp_min(1e-12)).clamp(max=1.0)


def pgd_ascent(grad_fn: GradFn, x: torch.Tensor, eps: float, norm: str, steps: int, step_ratio: float = 2.5,
               random_start: bool = True, generator: torch.Generator | None = None,
               domain: Domain = UNIT) -> torch.Tensor:
    """Projected gradient ascent from x (or a random point of the ball), returning the last iterate: picking
    a 'best' one would need extra (for randomized defenses, noisy) evaluations."""
    if norm not in NORMS:
        raise OTBenchError(f"unknown norm '{norm}'; valid: {', '.join(NORMS)}")
    x = x.detach()
    if eps == 0 or steps == 0:
        return x
    alpha = step_ratio * eps / steps
    delta = random_delta(x, eps, norm, generator) if random_start else torch.zeros_like(x)
    delta = into_domain(x, delta, domain)
    for _ in range(steps):
        grad = grad_fn(x + delta).detach()
        delta = into_domain(x, ascent_step(delta, grad, alpha, eps, norm), domain)
    return (x + delta).detach()


def input_grad(loss_fn: Callable[[torch.Tensor], torch.Tensor], adv: torch.Tensor,
               samples: int = 1) -> torch.Tensor:
    """Gradient of a scalar loss with respect to the inputs only (no parameter .grad is touched), averaged
    over `samples` separate calls: E[grad L], not grad of the mean output, so a defense drawing its
    randomness once per call gets fresh draws."""
    if samples == 1:
        a = adv.detach().clone().requires_grad_(True)
        return torch.autograd.grad(loss_fn(a), a)[0]
    total = torch.zeros_like(adv)
    for _ in range(samples):
        a = adv.detach().clone().requires_grad_(True)
        total += torch.autograd.grad(loss_fn(a), a)[0]
    return total / samples
