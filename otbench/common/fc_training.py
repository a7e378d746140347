"""Training and caching of the FC ResNet that OTAD and its baselines share.

A trained model is cached under a hash of everything that determines it (dataset, architecture,
optimiser, epochs, seed), so every defense built on the same training config reuses one checkpoint.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from otbench.data import Dataset
from otbench.defense import describe_preset
from otbench.errors import OTBenchError
from otbench.training import cached_model, checkpoint_path, minibatch_training, steps_per_epoch, test_accuracy

from .adversarial import Perturb
from .fc_resnet import FCResNet

# Settings of papers/otad.txt V-A (SGD, momentum 0.9, weight decay 5e-4, 5 blocks for images, width =
# input dimension). The paper gives no epochs, learning rate, batch size or schedule: these are ours, chosen so
# the ResNet reaches the paper's 98.16% MNIST test accuracy (Table XIII). Schedule: one-cycle (below) with peak
# lr 0.05 over 8 epochs of batch 128, after issue 15 (98.2% reported there); measured on the project's 2-core CPU:
# 98.30% (seed 0) and 98.13% (seed 1), 8-9 minutes each.
TRAIN_PAPER: dict[str, Any] = {
    "blocks": 5, "residual": True, "epochs": 8, "batch_size": 128, "lr": 0.05, "momentum": 0.9,
    "weight_decay": 5e-4, "alpha": 0.0, "train_size": None, "seed": 0, "schedule": "one-cycle",
}
# The paper preset before issue 15 (cosine over 10 epochs: 96.90% MNIST test accuracy). Results made with it are
# kept under preset `paper-v1` (schema v3), so a report can still show them, marked, until they are remade.
TRAIN_PAPER_V1: dict[str, Any] = {**TRAIN_PAPER, "epochs": 10, "schedule": "cosine"}
describe_preset("paper-v1", "`paper-v1` is the paper preset's former FC ResNet (cosine schedule, 10 epochs, 96.9% "
                            "MNIST test accuracy)")
# Minutes on 2 CPU cores: fewer epochs on the first 10,000 training points (they also form the KNN set); the
# training of before issue 15 (cosine, 2 epochs): the same weights as before.
TRAIN_QUICK: dict[str, Any] = {**TRAIN_PAPER, "epochs": 2, "train_size": 10000, "schedule": "cosine"}


def fc_resnet_presets(defense: dict[str, Any], defense_quick: dict[str, Any] | None = None,
                      train: dict[str, Any] | None = None, train_quick: dict[str, Any] | None = None
                      ) -> dict[str, dict[str, dict[str, Any]]]:
    """The presets of a defense on the shared FC ResNet: `paper`, `paper-v1` (the paper network before issue 15)
    and `quick`, each with the defense's own extra train and defense settings."""
    quick_defense = defense if defense_quick is None else defense_quick
    quick_train = train if train_quick is None else train_quick
    return {"paper": {"train": {**TRAIN_PAPER, **(train or {})}, "defense": dict(defense)},
            "paper-v1": {"train": {**TRAIN_PAPER_V1, **(train or {})}, "defense": dict(defense)},
            "quick": {"train": {**TRAIN_QUICK, **(quick_train or {})}, "defense": dict(quick_defense)}}


def _cosine(opt: torch.optim.Optimizer, lr: float, total: int) -> torch.optim.lr_scheduler.LRScheduler:
    """lr anneals from cfg["lr"] (already the optimiser's) to 0 along a half cosine over all steps."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)


def _one_cycle(opt: torch.optim.Optimizer, lr: float, total: int) -> torch.optim.lr_scheduler.LRScheduler:
    """One-cycle (Smith & Topin 2019, "Super-convergence"; torch's OneCycleLR) peaking at cfg["lr"].

    Every parameter is spelled out so that a torch default changing cannot change the weights: warm up from
    lr / div_factor = lr / 25 for pct_start = 30% of the steps, then anneal (cosine) to lr / 25 / 1e4, two
    phases (torch's defaults, Smith & Topin's shape). cycle_momentum=False: the paper fixes SGD's momentum at
    0.9, which OneCycleLR would otherwise cycle between 0.85 and 0.95."""
    return torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=total, pct_start=0.3, anneal_strategy="cos", cycle_momentum=False,
        div_factor=25.0, final_div_factor=1e4, three_phase=False)


# Train setting `schedule`: the learning-rate schedule, stepped once per optimiser step.
SCHEDULES: dict[str, Callable[[torch.optim.Optimizer, float, int], torch.optim.lr_scheduler.LRScheduler]] = {
    "cosine": _cosine, "one-cycle": _one_cycle}


def check_schedule(cfg: dict[str, Any]) -> None:
    if cfg["schedule"] not in SCHEDULES:  # before any work: a typo must not cost a training
        raise OTBenchError(f"unknown schedule '{cfg['schedule']}'; valid: {', '.join(SCHEDULES)}")



def train_fc_resnet(data: Dataset, cfg: dict[str, Any], device: torch.device, progress: bool = True,
                    perturb: Perturb | None = None) -> FCResNet:
    """Algorithm 1: minimise cross-entropy + alpha * transport energy (eq. 14) with SGD.

    `perturb(net, x, y)`, when given, replaces each batch's inputs before the loss (adversarial training,
    otbench/common/adversarial.py); it is called with the network in train mode and must leave it so. Its settings
    must be part of `cfg`, which names the cached checkpoint."""
    check_schedule(cfg)
    gen = torch.Generator().manual_seed(cfg["seed"])
    torch.manual_seed(cfg["seed"])
    net = FCResNet(data.input_dim, data.num_classes, cfg["blocks"], cfg["residual"]).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=cfg["lr"], momentum=cfg["momentum"],
                          weight_decay=cfg["weight_decay"])
    x, y = data.x_train, data.y_train
    total = cfg["epochs"] * steps_per_epoch(len(x), cfg["batch_size"])
    sched = SCHEDULES[cfg["schedule"]](opt, cfg["lr"], total)
    net.train()

    def loss_of(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        if perturb is not None:
            xb = perturb(net, xb, yb)
        logits, energy = net.forward_with_energy(xb)
        return F.cross_entropy(logits, yb) + cfg["alpha"] * energy.mean()

    minibatch_training(x, y, cfg["batch_size"], cfg["epochs"], gen, opt, sched, loss_of, device,
                       f"train fc-resnet on {data.name}", progress, net=net)
    return net.eval()


def model_path(data: Dataset, cfg: dict[str, Any]) -> Path:
    return checkpoint_path("fc-resnet", data.name, train=cfg)


def load_or_train(data: Dataset, cfg: dict[str, Any], device: torch.device,
                  progress: bool = True, perturb: Perturb | None = None) -> tuple[FCResNet, dict[str, Any]]:
    """The trained network for `cfg` (from the cache when present) and its training record."""
    data = data.take_train(cfg["train_size"])
    return cached_model(
        model_path(data, cfg), FCResNet(data.input_dim, data.num_classes, cfg["blocks"], cfg["residual"]), cfg,
        device, train=lambda: train_fc_resnet(data, cfg, device, progress, perturb),
        evaluate=lambda net: {"test_accuracy": test_accuracy(net, data, device)})



@torch.no_grad()
def feature_bank(net: FCResNet, x: torch.Tensor, device: torch.device, batch: int = 4000) -> torch.Tensor:
    """z_i = R(x_i) for the training points (Algorithm 1, line 4)."""
    return torch.cat([net.features(x[i:i + batch].to(device)) for i in range(0, len(x), batch)])
