"""CIP-net (papers/otad.txt IV-C, V-F): a Transformer encoder over 2K + 1 tokens (the test point x~, the K
neighbour inputs X~_j, the K neighbour features Z~_j) trained by MSE on exact CIP solutions (eq. 19), with the
alpha mix of eq. 24 between the solutions and the ViT's own features z~ (Table XI).

Each token is a linear projection of a centred d-dimensional vector (inputs centred on the neighbours' mean
input, features on their mean feature) plus a type and a neighbour-rank embedding. The paper does not give the
read-out; ours follows the solution's form: with l = 0 the QCP's answer is a convex combination of the Z~_j
(shared/design/cip.md), so the net outputs softmax weights over the K feature tokens times Z~, plus a linear
correction from the test token (initialised to zero). Everything is differentiable in x~, X~ and Z~.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from otbench.training import progress_bar, shuffled_batches


class CIPNet(nn.Module):
    def __init__(self, d: int, K: int, width: int, depth: int, heads: int) -> None:
        super().__init__()
        self.inp, self.feat = nn.Linear(d, width), nn.Linear(d, width)
        self.role = nn.Parameter(torch.randn(3, width) * 0.02)
        self.rank = nn.Parameter(torch.randn(K, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.score = nn.Linear(width, 1)
        self.correction = nn.Linear(width, d)
        nn.init.zeros_(self.correction.weight)
        nn.init.zeros_(self.correction.bias)
        # scales of the centred inputs and features, set from the training set (part of the state dict)
        self.register_buffer("sx", torch.ones(()))
        self.register_buffer("sz", torch.ones(()))

    def forward(self, x: torch.Tensor, X: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
        """x (B, d), X and Z (B, K, d) -> the estimated feature z~ (B, d)."""
        xbar, zbar = X.mean(1, keepdim=True), Z.mean(1, keepdim=True)
        tokens = torch.cat([self.inp((x[:, None] - xbar) / self.sx) + self.role[0],
                            self.inp((X - xbar) / self.sx) + self.role[1] + self.rank,
                            self.feat((Z - zbar) / self.sz) + self.role[2] + self.rank], 1)
        h = self.norm(self.encoder(tokens))
        K = X.shape[1]
        w = self.score(h[:, 1 + K:]).squeeze(-1).softmax(1)
        return (w[:, :, None] * Z).sum(1) + self.sz * self.correction(h[:, 0])


def set_scales(net: CIPNet, x: torch.Tensor, X: torch.Tensor, Z: torch.Tensor) -> None:
    """RMS per coordinate of the centred inputs and features: tokens of unit scale whatever the ViT's."""
    with torch.no_grad():
        net.sx.fill_((X - X.mean(1, keepdim=True)).pow(2).mean().sqrt().clamp_min(1e-8).item())
        net.sz.fill_((Z - Z.mean(1, keepdim=True)).pow(2).mean().sqrt().clamp_min(1e-8).item())


def relative_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B,) ||pred - target|| / ||target||."""
    return (pred - target).norm(dim=1) / target.norm(dim=1).clamp_min(1e-12)


def train_cipnet(net: CIPNet, batch: Callable[[torch.Tensor], tuple[torch.Tensor, ...]], n: int,
                 targets: torch.Tensor, own: torch.Tensor, cfg: dict[str, Any], seed: int,
                 progress: bool = True, history: list[float] | None = None) -> CIPNet:
    """Eq. 24: alpha ||CIP-net - QCP||^2 + (1 - alpha) ||CIP-net - z~||^2 (per coordinate), Adam + cosine.
    `batch(ids)` returns (x~, X~, Z~) for training points ids; `targets` the exact CIP solutions, `own` z~."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=cfg["lr"])
    steps = math.ceil(n / cfg["batch_size"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg["epochs"] * steps)
    alpha, scale = cfg["alpha"], net.sz.item() ** 2
    net.train()
    bar = progress_bar(cfg["epochs"] * steps, "train CIP-net", progress)
    for _, _, ids in shuffled_batches(n, cfg["batch_size"], cfg["epochs"], gen):
        out = net(*batch(ids))
        loss = (alpha * F.mse_loss(out, targets[ids]) + (1 - alpha) * F.mse_loss(out, own[ids])) / scale
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if history is not None:
            history.append(loss.item())
        bar.update()
    bar.close()
    return net.eval()
