"""What the tests share besides fixtures (conftest.py holds those): settings for tiny models, markers, data the
tests write, and small purpose-built defenses and attacks."""
from __future__ import annotations

import csv
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from otbench.attacks import Attack, AttackOutput
from otbench.defense import Defense

DATA = Path(os.environ.get("OTBENCH_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
# A small, fast stand-in for the quick preset: 2 blocks, 1 epoch, 3000 real MNIST training points.
TINY_TRAIN = {"blocks": 2, "residual": True, "epochs": 1, "batch_size": 64, "lr": 0.05, "momentum": 0.9,
              "weight_decay": 5e-4, "alpha": 0.0, "train_size": 3000, "seed": 0}
# 2 blocks, 15 epochs on the 1279 training wines: about a second, test MSE near 0.45
TINY_REG = {"blocks": 2, "residual": True, "epochs": 15, "batch_size": 64, "lr": 0.01, "momentum": 0.9,
            "weight_decay": 5e-4, "train_size": None, "seed": 0}
# OT-Classifier: 8-16 channels, 2 epochs on 2000 real MNIST training points.
TINY_OTC = {"channels": [8, 16], "hidden": [64], "epochs": 2, "batch_size": 50, "train_size": 2000, "lr": 3e-3,
            "lr_classifier": 3e-3}
TINY_STL = {"stl_atoms": 8, "stl_learn_images": 300, "stl_learn_steps": 8, "stl_learn_batch": 32,
            "stl_learn_iterations": 10}
DIFFPURE_TINY = {"train": {**TINY_TRAIN, "score_channels": 8, "score_epochs": 3, "score_lr": 3e-3,
                           "score_train_size": 1000},
                 "defense": {"steps": 4}}


def mnist_available() -> bool:
    return (DATA / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").exists()


needs_mnist = pytest.mark.skipif(not mnist_available(), reason=f"real MNIST not found under {DATA}/MNIST/raw")


def tiny_overrides(**defense) -> dict:
    return {"train": dict(TINY_TRAIN), "defense": dict(defense)}


def accuracy(defense: Defense, x, y) -> float:
    return (defense.predict(torch.as_tensor(x)) == y).float().mean().item()


def noise_like(delta: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Gaussian directions with the same per-sample L2 norms as `delta`."""
    noise = torch.randn(delta.shape, generator=torch.Generator().manual_seed(seed))
    scale = delta.flatten(1).norm(dim=1) / noise.flatten(1).norm(dim=1)
    return noise * scale.view(-1, *([1] * (delta.dim() - 1)))


# -- data the tests write or read raw -----------------------------------------------------------------------
CIFAR_FILES = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]


def write_cifar10(root: Path, per_batch: int = 40, n_test: int = 40, seed: int = 0) -> dict:
    """The python batches torchvision reads: dicts of uint8 `data` (N, 3072), `labels`, `filenames`."""
    rng = np.random.default_rng(seed)
    # faint 8x8-block colour patterns: learnable in a second, and (like real CIFAR-10 models) not robust
    patterns = np.kron(rng.choice([-1.0, 1.0], size=(10, 3, 4, 4)), np.ones((1, 1, 8, 8))).reshape(10, 3072)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    made = {}
    for name in CIFAR_FILES:
        y = rng.integers(0, 10, n_test if name == "test_batch" else per_batch)
        x = np.clip(0.5 + 0.03 * patterns[y] + 0.1 * rng.standard_normal((len(y), 3072)), 0, 1)
        if name == "test_batch":  # two wrong labels among the first 8, so clean accuracy there is 6/8:
            y[[1, 4]] = (y[[1, 4]] + 1) % 10  # a benchmark that read other images would show another number
        made[name] = ((x * 255).round().astype(np.uint8), y)
        entry = {"batch_label": name, "labels": y.tolist(), "data": made[name][0],
                 "filenames": [f"{name}_{i}.png" for i in range(len(y))]}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    meta = {"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": per_batch, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return made


def red_wine() -> tuple[torch.Tensor, torch.Tensor]:
    """UCI red wine quality read raw: 11 features min-max scaled to [0, 1], target quality (3..8)."""
    path = DATA / "winequality" / "winequality-red.csv"
    if not path.exists():
        pytest.skip(f"wine quality data not found at {path}")
    with open(path) as f:
        rows = [[float(v) for v in row] for row in list(csv.reader(f, delimiter=";"))[1:]]
    data = torch.tensor(rows)
    x, y = data[:, :11], data[:, 11]
    x = (x - x.min(0).values) / (x.max(0).values - x.min(0).values)
    return x, y


# -- purpose-built defenses and attacks ---------------------------------------------------------------------
class Bare(Defense):
    """A defense built around given modules instead of a preset and a training run."""

    name = "test-bare"

    def __init__(self) -> None:
        super().__init__(None, {}, torch.device("cpu"))


class Embedding(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)


class MetricNN(Bare):
    """1-nearest-neighbour among 500 real training images in the embedding of the standard network's body:
    a non-differentiable defense whose neighbours are picked by a metric network."""

    differentiable = False
    has_metric_network = True

    def __init__(self, net: nn.Module, bank_x: torch.Tensor, bank_y: torch.Tensor) -> None:
        super().__init__()
        self.embed = Embedding(net).eval()
        with torch.no_grad():
            self.bank = self.embed(bank_x)
        self.bank_y = bank_y

    def metric_network(self) -> nn.Module:
        return self.embed

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            dist = torch.cdist(self.embed(x), self.bank)
        scores = torch.full((len(x), int(self.bank_y.max()) + 1), -float("inf"))
        return scores.scatter_reduce(1, self.bank_y.expand(len(x), -1), -dist, "amax")  # -distance per class


class Regressor(Bare):
    task = "regression"
    surrogate_description = None

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Overstep(Attack):
    """A purpose-built cheating attack: steps 1.5 eps in L2. The harness's guard must refuse it, in a Ray
    worker as in this process."""

    name = "overstep"
    needs = "scores"
    defaults = {"norm": "L2"}

    def run(self, images, labels, seed):
        d = torch.randn_like(images)
        d = d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        return AttackOutput((images + 1.5 * self.eps * d).clamp(0, 1))


def evaluate_cell(defense, attack: str, eps: float, subset, store, config: dict | None = None, seed: int = 0,
                  chunk_size: int = 100, progress: bool = False):
    """One cell's summary, computed through the path the CLI takes (a run plan's executor, chunks committed by
    the driver), with the settings exactly as given: no checks, no EOT added."""
    from otbench.plan import evaluate_defense

    return evaluate_defense(defense, {attack: [eps]}, subset, store, {attack: dict(config or {})}, seed=seed,
                            chunk=chunk_size, checks=False, auto_eot=False, progress=progress).cells[0]
