"""The harness, not the attack, enforces the threat model: every adversarial batch is checked here."""
from __future__ import annotations

import math

import torch

from .errors import ThreatModelViolation

# float32 projections land a hair above eps; anything beyond this slack is a real violation
REL_TOL, ABS_TOL = 1e-5, 1e-6


def perturbation_norms(x: torch.Tensor, adv: torch.Tensor, norm: str) -> torch.Tensor:
    delta = (adv.double() - x.double()).flatten(1)
    if norm == "L2":
        return delta.norm(dim=1)
    if norm == "Linf":
        return delta.abs().amax(dim=1)
    if norm == "RMS":  # the OT-Classifier paper's l2: root-mean-square over the pixels
        return delta.norm(dim=1) / delta.shape[1] ** 0.5
    raise ValueError(f"unknown norm '{norm}'; valid: L2, Linf, RMS")


def check_threat_model(x: torch.Tensor, adv: torch.Tensor, norm: str | None, eps: float,
                       attack: str = "attack", bounded: bool = True,
                       domain: tuple[float, float] | None = (0.0, 1.0)) -> torch.Tensor:
    """Raise ThreatModelViolation unless every adv is within eps of x (in `norm`) and inside `domain`
    (the dataset's (low, high); None = unbounded, not checked).
    An unbounded attack (eps is not a norm bound) is checked only for the domain.
    Returns the perturbation norms (L2 when the attack has no norm of its own)."""
    if bounded and norm and not math.isfinite(eps):  # NaN would let every perturbation through
        raise ThreatModelViolation(f"{attack}: eps must be a finite number, got {eps!r}")
    if adv.shape != x.shape:
        raise ThreatModelViolation(f"{attack} returned shape {tuple(adv.shape)} for inputs {tuple(x.shape)}")
    if not torch.isfinite(adv).all():
        raise ThreatModelViolation(f"{attack} returned non-finite inputs")
    if domain is not None:
        low, high = adv.min().item(), adv.max().item()
        if low < domain[0] or high > domain[1]:
            raise ThreatModelViolation(f"{attack} left the input domain [{domain[0]:g}, {domain[1]:g}] "
                                       f"(min {low:.6g}, max {high:.6g})")
    norms = perturbation_norms(x, adv, norm or "L2")
    if not bounded:
        return norms
    limit = eps * (1 + REL_TOL) + ABS_TOL if norm else ABS_TOL
    over = norms > limit
    if over.any():
        worst = norms.max().item()
        raise ThreatModelViolation(
            f"{attack} overstepped its threat model: {int(over.sum())} of {len(norms)} perturbations exceed "
            f"{norm or 'zero'} eps={eps:g} (largest {worst:.6g})")
    return norms
