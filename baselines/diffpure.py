"""`diffpure`: diffusion purification (Nie et al. 2022, "Diffusion models for adversarial purification"; OTAD's
reference [42], a baseline of OTAD Tables VI-X), here with a score model the harness trains itself.

Purification: the input (scaled to [-1, 1]) is diffused to time t* of the VP-SDE (beta(t) = beta_min +
t (beta_max - beta_min), Song et al. 2021), x_t* = sqrt(abar) x + sqrt(1 - abar) noise, then the reverse SDE
dx = [-beta(t) x / 2 - beta(t) score(x, t)] dt + sqrt(beta(t)) dw is integrated from t* back to 0 by
Euler-Maruyama with `steps` steps; the classifier then sees the result. Every call draws new noise: the defense
is randomized (gradient attacks get EOT).

The score model is a small U-Net predicting the noise (score = -eps_hat / sqrt(1 - abar)), trained by
denoising score matching on the same training data (Ho et al. 2020's simple loss, t ~ U(t_min, score_t_max)).
The classifier is the shared FC ResNet of `standard` (same training config, same cached checkpoint).

Gradients: `exact_module()` backpropagates through every solver step (plain backprop, not the adjoint: the
solver has few steps at preset `quick`, and the noise of the call is part of the graph). BPDA's surrogate is
the identity purification followed by the classifier (papers/otad.txt V-C: "we approximate the purification
process using the identity map").

- preset `paper`: Nie et al.'s CIFAR-10 settings: VP-SDE beta in [0.1, 20], t* = 0.1, step 1e-3 (100 steps);
  score U-Net trained 30 epochs on all of MNIST (Adam, lr 2e-4, Score SDE's), t ~ U(1e-3, 1). DiffPure's score
  models are pretrained ones (NCSN++ for CIFAR-10); none exists for MNIST, so this U-Net is ours.
- preset `quick`: the same SDE and t*, 10 solver steps, a narrower U-Net trained 3 epochs on 10,000 points (lr 1e-3)
  on t ~ U(1e-3, 0.3) only (purification never leaves [0, t*]).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from otbench.common.fc_training import TRAIN_PAPER as CLS_PAPER
from otbench.common.fc_training import check_schedule, fc_resnet_presets, load_or_train
from otbench.data import Dataset
from otbench.defense import Defense
from otbench.errors import OTBenchError
from otbench.registry import register_defense
from otbench.training import cached_model, checkpoint_path, progress_bar

SCORE_PAPER: dict[str, Any] = {"score_channels": 32, "score_epochs": 30, "score_batch_size": 128, "score_lr": 2e-4,
                               "score_t_max": 1.0, "score_train_size": None, "score_seed": 0}
# quick: lr 1e-3, above Score SDE's 2e-4, so that a few hundred steps learn a usable score
SCORE_QUICK: dict[str, Any] = {**SCORE_PAPER, "score_channels": 16, "score_epochs": 3, "score_lr": 1e-3,
                               "score_t_max": 0.3, "score_train_size": 10000}
PURIFY_PAPER: dict[str, Any] = {"t_star": 0.1, "steps": 100, "beta_min": 0.1, "beta_max": 20.0}
PURIFY_QUICK: dict[str, Any] = {**PURIFY_PAPER, "steps": 10}
T_MIN = 1e-3


def alpha_bar(t: torch.Tensor, beta_min: float, beta_max: float) -> torch.Tensor:
    """exp(-int_0^t beta) of the VP-SDE with linear beta."""
    return torch.exp(-(beta_min * t + 0.5 * (beta_max - beta_min) * t ** 2))


def time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    angles = 1000.0 * t[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, t_dim: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(min(8, c_in), c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2, self.conv2 = nn.GroupNorm(min(8, c_out), c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.t_proj = nn.Linear(t_dim, c_out)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x))) + self.t_proj(temb)[:, :, None, None]
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class SmallUNet(nn.Module):
    """A two-level U-Net (28 -> 14 -> 7 and back) predicting the noise of x_t."""

    def __init__(self, in_channels: int = 1, c: int = 32) -> None:
        super().__init__()
        self.t_dim = 4 * c
        self.t_mlp = nn.Sequential(nn.Linear(c, self.t_dim), nn.SiLU(), nn.Linear(self.t_dim, self.t_dim))
        self.c = c
        self.inp = nn.Conv2d(in_channels, c, 3, padding=1)
        self.down1, self.down2 = ResBlock(c, c, self.t_dim), ResBlock(c, 2 * c, self.t_dim)
        self.mid = ResBlock(2 * c, 2 * c, self.t_dim)
        self.up2, self.up1 = ResBlock(4 * c, c, self.t_dim), ResBlock(2 * c, c, self.t_dim)
        self.out = nn.Sequential(nn.GroupNorm(min(8, c), c), nn.SiLU(), nn.Conv2d(c, in_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = self.t_mlp(time_embedding(t, self.c))
        h1 = self.down1(self.inp(x), temb)                      # 28
        h2 = self.down2(F.avg_pool2d(h1, 2), temb)             # 14
        m = self.mid(F.avg_pool2d(h2, 2), temb)                # 7
        u2 = self.up2(torch.cat([F.interpolate(m, scale_factor=2.0), h2], 1), temb)
        u1 = self.up1(torch.cat([F.interpolate(u2, scale_factor=2.0), h1], 1), temb)
        return self.out(u1)


def train_score(data: Dataset, cfg: dict[str, Any], sde: dict[str, Any], device: torch.device,
                history: list[float], progress: bool = True) -> SmallUNet:
    """Denoising score matching (noise prediction); appends each epoch's mean loss to `history`."""
    gen = torch.Generator().manual_seed(cfg["score_seed"])
    torch.manual_seed(cfg["score_seed"])
    net = SmallUNet(data.input_shape[0], cfg["score_channels"]).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg["score_lr"])
    x_all = data.x_train * 2 - 1
    steps = math.ceil(len(x_all) / cfg["score_batch_size"])
    net.train()
    bar = progress_bar(cfg["score_epochs"] * steps, f"train diffpure score model on {data.name}", progress, unit="step")
    for _ in range(cfg["score_epochs"]):
        order, total = torch.randperm(len(x_all), generator=gen), 0.0
        for i in range(steps):
            x0 = x_all[order[i * cfg["score_batch_size"]:(i + 1) * cfg["score_batch_size"]]].to(device)
            t = T_MIN + (cfg["score_t_max"] - T_MIN) * torch.rand(len(x0), generator=gen).to(device)
            ab = alpha_bar(t, sde["beta_min"], sde["beta_max"]).view(-1, 1, 1, 1)
            noise = torch.randn(x0.shape, generator=gen).to(device)
            loss = F.mse_loss(net(ab.sqrt() * x0 + (1 - ab).sqrt() * noise, t), noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(x0)
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        history.append(total / len(x_all))
    bar.close()
    return net.eval()


def purify(score: nn.Module, x: torch.Tensor, cfg: dict[str, Any], generator: torch.Generator | None = None
           ) -> torch.Tensor:
    """DiffPure on x in [0, 1]: diffuse to t*, Euler-Maruyama on the reverse VP-SDE back to 0; differentiable."""
    bmin, bmax, t_star, n = cfg["beta_min"], cfg["beta_max"], cfg["t_star"], cfg["steps"]

    def randn(like: torch.Tensor) -> torch.Tensor:
        return torch.randn(like.shape, generator=generator, device="cpu").to(like.device, like.dtype)

    ab = alpha_bar(torch.tensor(t_star), bmin, bmax).item()
    z = math.sqrt(ab) * (2 * x - 1) + math.sqrt(1 - ab) * randn(x)
    dt = t_star / n
    for k in range(n):
        t = t_star - k * dt
        tt = torch.full((len(x),), t, device=x.device)
        beta = bmin + t * (bmax - bmin)
        eps_hat = score(z, tt)
        score_val = -eps_hat / math.sqrt(1 - alpha_bar(torch.tensor(t), bmin, bmax).item())
        drift = -0.5 * beta * z - beta * score_val  # f - g^2 score, integrated backwards in time
        z = z - drift * dt
        if k < n - 1:  # no noise on the last step (the usual denoising final step)
            z = z + math.sqrt(beta * dt) * randn(z)
    return ((z + 1) / 2).clamp(0, 1)


class PurifiedClassifier(nn.Module):
    """classifier(purify(x)); `identity=True` is BPDA's surrogate (purification replaced by the identity)."""

    def __init__(self, score: nn.Module, classifier: nn.Module, cfg: dict[str, Any], identity: bool = False) -> None:
        super().__init__()
        self.score, self.classifier, self.cfg, self.identity = score, classifier, cfg, identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x if self.identity else purify(self.score, x, self.cfg))


def check_config(cfg: dict[str, Any]) -> None:
    if not 0 < cfg["t_star"] <= 1 or cfg["steps"] < 1:
        raise OTBenchError(f"diffpure: need 0 < t_star <= 1 and steps >= 1, got t_star={cfg['t_star']}, "
                           f"steps={cfg['steps']}")


@register_defense("diffpure")
class DiffPure(Defense):
    description = "DiffPure (Nie et al. 2022): VP-SDE diffusion to t* and reverse SDE with a trained score U-Net"
    differentiable = True  # through every solver step (of a random function: EOT)
    randomized = True
    surrogate_description = "identity purification + the classifier (papers/otad.txt V-C)"
    presets = fc_resnet_presets(PURIFY_PAPER, PURIFY_QUICK, SCORE_PAPER, SCORE_QUICK)

    @classmethod
    def check_config(cls, config: dict[str, Any]) -> None:
        check_schedule(config["train"])

    def __init__(self, data: Dataset, config: dict[str, Any], device: torch.device) -> None:
        super().__init__(data, config, device)
        cfg, self.purify_cfg = config["train"], config["defense"]
        check_config(self.purify_cfg)
        cls_cfg = {k: cfg[k] for k in CLS_PAPER}
        score_cfg = {k: cfg[k] for k in SCORE_PAPER}
        self.classifier, cls_record = load_or_train(data, cls_cfg, device)
        sde = {k: self.purify_cfg[k] for k in ("beta_min", "beta_max")}  # the SDE the score is trained for
        sdata = data.take_train(score_cfg["score_train_size"])
        history: list[float] = []
        self.score, score_record = cached_model(
            checkpoint_path("diffpure-score", data.name, train=score_cfg, sde=sde),
            SmallUNet(data.input_shape[0], score_cfg["score_channels"]), score_cfg, device,
            train=lambda: train_score(sdata, score_cfg, sde, device, history),
            evaluate=lambda net: {"dsm_loss_per_epoch": [round(v, 5) for v in history]})
        for p in (*self.score.parameters(), *self.classifier.parameters()):
            p.requires_grad_(False)
        self.train_record = {"classifier": cls_record, "score": score_record}
        self.model = PurifiedClassifier(self.score, self.classifier, self.purify_cfg).eval()

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        return purify(self.score, x.to(self.device), self.purify_cfg)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.device))

    def surrogate(self) -> nn.Module:
        return PurifiedClassifier(self.score, self.classifier, self.purify_cfg, identity=True).eval()
