"""The small MNIST CNN behind `rse` and `defense-gan`, with RSE's optional noise layers; training and caching.

The OT-Classifier paper (papers/ot-classifier.txt) compares against RSE and Defense-GAN on MNIST without
naming a classifier, so the classifier is the standard small MNIST CNN of that literature: Madry et al.'s
MNIST challenge model (github.com/MadryLab/mnist_challenge, model.py): conv 5x5 (32) + ReLU + max-pool 2,
conv 5x5 (64) + ReLU + max-pool 2, fc 1024 + ReLU, fc 10. Preset `quick` narrows it (16, 32 channels,
fc 128) so that attacks with EOT over an ensemble stay within CPU minutes.

RSE (Liu et al. 2018) inserts a noise layer before every convolution: x + N(0, sigma^2), sigma = noise_init
before the first, noise_inner before the others, active in training and at test time alike.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from otbench.data import Dataset
from otbench.training import cached_model, checkpoint_path, minibatch_training, steps_per_epoch, test_accuracy

# Classifier settings (train section). Adam at 1e-3 with a cosine schedule is ours: Madry et al. train
# 100k steps of batch 50 at 1e-4, which is too long for CPU presets; 10 epochs reach ~99% clean on MNIST.
CNN_PAPER: dict[str, Any] = {"channels": [32, 64], "hidden": 1024, "epochs": 10, "batch_size": 128, "lr": 1e-3,
                             "train_size": None, "seed": 0}
CNN_QUICK: dict[str, Any] = {**CNN_PAPER, "channels": [16, 32], "hidden": 128, "epochs": 3, "batch_size": 64,
                             "train_size": 10000}
CNN_KEYS = tuple(CNN_PAPER)


class GaussianNoise(nn.Module):
    """RSE's noise layer: adds N(0, std^2) in training and at test time (never switched off by eval())."""

    def __init__(self, std: float) -> None:
        super().__init__()
        self.std = float(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.std * torch.randn_like(x) if self.std > 0 else x


class SmallCNN(nn.Module):
    def __init__(self, in_shape: tuple[int, ...], num_classes: int, channels: list[int], hidden: int,
                 noise_init: float = 0.0, noise_inner: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c, side = in_shape[0], in_shape[1]
        for i, out in enumerate(channels):
            layers += [GaussianNoise(noise_init if i == 0 else noise_inner), nn.Conv2d(c, out, 5, padding=2),
                       nn.ReLU(), nn.MaxPool2d(2)]
            c, side = out, side // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c * side * side, hidden), nn.ReLU(),
                                  nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    @property
    def noise_layers(self) -> list[GaussianNoise]:
        return [m for m in self.modules() if isinstance(m, GaussianNoise)]


def cnn_settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """The classifier's own settings out of a defense's train section (other keys name other models)."""
    return {k: cfg[k] for k in CNN_KEYS}


def build_cnn(data: Dataset, cfg: dict[str, Any], noise: tuple[float, float] = (0.0, 0.0)) -> SmallCNN:
    return SmallCNN(data.input_shape, data.num_classes, list(cfg["channels"]), cfg["hidden"], *noise)


def train_cnn(net: SmallCNN, data: Dataset, cfg: dict[str, Any], device: torch.device) -> SmallCNN:
    """Cross-entropy with Adam on a cosine schedule; noise layers stay on (RSE trains with its noise)."""
    gen = torch.Generator().manual_seed(cfg["seed"])
    torch.manual_seed(cfg["seed"])  # initialisation and the noise layers' draws
    net = net.to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=cfg["lr"])
    x, y = data.x_train, data.y_train
    total = cfg["epochs"] * steps_per_epoch(len(x), cfg["batch_size"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    minibatch_training(x, y, cfg["batch_size"], cfg["epochs"], gen, opt, sched,
                       lambda xb, yb: F.cross_entropy(net(xb), yb), device, f"train cnn on {data.name}",
                       progress=False, net=net)
    return net.eval()


def load_or_train_cnn(data: Dataset, cfg: dict[str, Any], device: torch.device,
                      noise: tuple[float, float] = (0.0, 0.0)) -> tuple[SmallCNN, dict[str, Any]]:
    """The trained CNN for `cfg` (and noise stds), cached by config hash; with its training record."""
    cfg = cnn_settings(cfg)
    data = data.take_train(cfg["train_size"])
    path = checkpoint_path("small-cnn", data.name, train=cfg, noise=list(noise))
    return cached_model(path, build_cnn(data, cfg, noise), {**cfg, "noise": list(noise)}, device,
                        train=lambda: train_cnn(build_cnn(data, cfg, noise), data, cfg, device),
                        evaluate=lambda net: {"test_accuracy": test_accuracy(net, data, device)})
