"""Training and caching of the FC ResNet that OTAD and its baselines share.

A trained model is cached under a hash of everything that determines it (dataset, architecture,
optimiser, epochs, seed), so every defense built on the same training config reuses one checkpoint.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from otbench.data import Dataset
from otbench.training import cached_model, checkpoint_path, minibatch_training, steps_per_epoch, test_accuracy

from .adversarial import Perturb
from .fc_resnet import FCResNet

# Settings of papers/otad.txt V-A (SGD, momentum 0.9, weight decay 5e-4, 5 blocks for images, width =
# input dimension). The paper gives no epochs, learning rate or batch size: these are ours, chosen so the
# ResNet reaches the paper's 98.2% MNIST test accuracy (Table XIII).
TRAIN_PAPER: dict[str, Any] = {
    "blocks": 5, "residual": True, "epochs": 10, "batch_size": 128, "lr": 0.05, "momentum": 0.9,
    "weight_decay": 5e-4, "alpha": 0.0, "train_size": None, "seed": 0,
}
# Minutes on 2 CPU cores: fewer epochs on the first 10,000 training points (they also form the KNN set).
TRAIN_QUICK: dict[str, Any] = {**TRAIN_PAPER, "epochs": 2, "train_size": 10000}



def train_fc_resnet(data: Dataset, cfg: dict[str, Any], device: torch.device, progress: bool = True,
                    perturb: Perturb | None = None) -> FCResNet:
    """Algorithm 1: minimise cross-entropy + alpha * transport energy (eq. 14) with SGD.

    `perturb(net, x, y)`, when given, replaces each batch's inputs before the loss (adversarial training,
    otbench/common/adversarial.py); it is called with the network in train mode and must leave it so. Its settings
    must be part of `cfg`, which names the cached checkpoint."""
    gen = torch.Generator().manual_seed(cfg["seed"])
    torch.manual_seed(cfg["seed"])
    net = FCResNet(data.input_dim, data.num_classes, cfg["blocks"], cfg["residual"]).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=cfg["lr"], momentum=cfg["momentum"],
                          weight_decay=cfg["weight_decay"])
    x, y = data.x_train, data.y_train
    total = cfg["epochs"] * steps_per_epoch(len(x), cfg["batch_size"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    net.train()

    def loss_of(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        if perturb is not None:
            xb = perturb(net, xb, yb)
        logits, energy = net.forward_with_energy(xb)
        return F.cross_entropy(logits, yb) + cfg["alpha"] * energy.mean()

    minibatch_training(x, y, cfg["batch_size"], cfg["epochs"], gen, opt, sched, loss_of, device,
                       f"train fc-resnet on {data.name}", progress)
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
