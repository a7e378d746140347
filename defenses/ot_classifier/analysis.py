"""How Gaussian the codes are: the energy distance between codes and N(0, I) samples.

Algorithm 1's critic pushes the marginal of the codes Q_Z toward the prior P_Z = N(0, I) (Theorem 1 needs
Q_Z = P_Z). The energy distance (Szekely & Rizzo 2013) E(P, Q) = 2 E||X - Y|| - E||X - X'|| - E||Y - Y'|| is a
two-sample statistic that is zero exactly when the two distributions agree; it is computed here from samples
(the V-statistic, all pairs).
"""
from __future__ import annotations

import torch


def energy_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(1), b.double().flatten(1)
    return float(2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean() - torch.cdist(b, b).mean())


def gaussian_energy_distance(codes: torch.Tensor, seed: int = 0) -> float:
    """Energy distance between the codes and as many N(0, I) samples of their dimension."""
    gen = torch.Generator().manual_seed(seed)
    prior = torch.randn(codes.shape, generator=gen, dtype=torch.float64)
    return energy_distance(codes, prior)
