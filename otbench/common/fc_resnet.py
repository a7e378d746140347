"""The dimension-invariant fully connected pre-activation ResNet R and the linear classifier H (OTAD IV-A).

Each block maps x -> x + R_k(x) with R_k = (BN-ReLU-Linear) twice at width = input dimension, so the
forward pass is a discretised transport map from inputs to features z = R(x). `residual=False` gives the
plain network of Table XIII (same layers, no identity path).
"""
from __future__ import annotations

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm1d(dim), nn.ReLU(), nn.Linear(dim, dim),
                                  nn.BatchNorm1d(dim), nn.ReLU(), nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class FCResNet(nn.Module):
    """Returns logits; `features(x)` gives z = R(x) and `forward_with_energy` the eq. 14 regulariser."""

    def __init__(self, dim: int, num_classes: int, blocks: int = 5, residual: bool = True) -> None:
        super().__init__()
        self.dim, self.residual = dim, residual
        self.blocks = nn.ModuleList(Block(dim) for _ in range(blocks))
        self.head = nn.Linear(dim, num_classes)  # H

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = x.flatten(1)
        energy = z.new_zeros(z.shape[0])
        for block in self.blocks:
            step = block(z)
            energy = energy + step.pow(2).sum(1)  # ||R_k(x^{k-1})||^2, the transport energy of eq. 13
            z = z + step if self.residual else step
        return z, energy

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x)[0]

    def forward_with_energy(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z, energy = self._run(x)
        return self.head(z), energy

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
