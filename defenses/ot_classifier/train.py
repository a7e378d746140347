"""Algorithm 1 of papers/ot-classifier.txt, and the same loop without the critic (E-CLA, the plain CNN).

Per batch (x_i, y_i), i = 1..n, with prior codes z_i ~ N(0, I) and z~_i = Q(x_i):
  1. critic D: one Adam step ascending  lambda/n sum_i D(z_i) - D(z~_i), then clip D's weights to [-c, c];
  2. Q and C:  one Adam step descending 1/n sum_i CE(C(Q(x_i)), y_i);
  3. Q alone:  one Adam step ascending  lambda/n sum_i D(Q(x_i)).
Without the critic (E-CLA, section 4.2; the CNN baselines) only step 2 runs. With adversarial training each batch
is first replaced by its PGD examples against C(Q(.)) (otbench/common/adversarial.py, Madry et al.).
A trained network is cached under a hash of its kind, dataset and train settings (otbench/training.py).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from otbench.common.adversarial import Perturb
from otbench.data import Dataset
from otbench.training import cached_model, checkpoint_path, progress_bar, shuffled_batches, test_accuracy

from .networks import EncoderClassifier
from .settings import CNN_WIDTH, resolve_n_z

KINDS = ("ot-cla", "e-cla", "cnn")  # with the critic; without; the plain CNN (no code, no critic)


def build_net(data: Dataset, cfg: dict[str, Any], kind: str) -> EncoderClassifier:
    if kind == "cnn":
        return EncoderClassifier(data.input_shape, data.num_classes, CNN_WIDTH, tuple(cfg["channels"]),
                                 cfg["hidden"], critic=False, code_relu=True)
    return EncoderClassifier(data.input_shape, data.num_classes, resolve_n_z(data.name, cfg["n_z"]),
                             tuple(cfg["channels"]), cfg["hidden"], critic=kind == "ot-cla")


def _adam(params, lr: float, beta1: float) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=lr, betas=(beta1, 0.999))


def train_net(data: Dataset, cfg: dict[str, Any], device: torch.device, kind: str,
              perturb: Perturb | None = None, progress: bool = True) -> EncoderClassifier:
    gen = torch.Generator().manual_seed(cfg["seed"])
    torch.manual_seed(cfg["seed"])
    net = build_net(data, cfg, kind).to(device)
    q, c, d = net.encoder, net.classifier, net.critic
    opt_qc = _adam([*q.parameters(), *c.parameters()], cfg["lr"], cfg["beta1"])
    opt_q = _adam(q.parameters(), cfg["lr"], cfg["beta1"]) if d is not None else None
    opt_d = _adam(d.parameters(), cfg["lr_critic"], cfg["beta1"]) if d is not None else None
    if d is not None:
        d.clip_(cfg["clip"])  # the critic starts inside the clip box too
    x, y = data.x_train, data.y_train
    steps = math.ceil(len(x) / cfg["batch_size"])
    net.train()
    bar = progress_bar(cfg["epochs"] * steps, f"train {kind} on {data.name}", progress, unit="step")
    for _, _, idx in shuffled_batches(len(x), cfg["batch_size"], cfg["epochs"], gen):
        xb, yb = x[idx].to(device), y[idx].to(device)
        if perturb is not None:
            xb = perturb(net, xb, yb)
        if d is not None:  # step 1: the critic (ascent = descent on the negated objective)
            prior = torch.randn(len(xb), q.code.out_features, generator=gen).to(device)
            gap = d(prior).mean() - d(q(xb).detach()).mean()
            opt_d.zero_grad(set_to_none=True)
            (-cfg["lam"] * gap).backward()
            opt_d.step()
            d.clip_(cfg["clip"])
        loss = F.cross_entropy(c(q(xb)), yb)  # step 2: encoder and classifier on the labels
        opt_qc.zero_grad(set_to_none=True)
        loss.backward()
        opt_qc.step()
        if d is not None:  # step 3: the encoder fools the critic
            fool = -cfg["lam"] * d(q(xb)).mean()
            opt_q.zero_grad(set_to_none=True)
            fool.backward()
            opt_q.step()
        bar.update()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    return net.eval()


def model_path(data: Dataset, cfg: dict[str, Any], kind: str) -> Path:
    return checkpoint_path(kind, data.name, train=cfg)


def load_or_train(data: Dataset, cfg: dict[str, Any], device: torch.device, kind: str,
                  perturb: Perturb | None = None, progress: bool = True) -> tuple[EncoderClassifier, dict[str, Any]]:
    """The trained network for (kind, cfg), from the cache when present, and its training record."""
    data = data.take_train(cfg["train_size"])
    return cached_model(model_path(data, cfg, kind), build_net(data, cfg, kind), cfg, device,
                        train=lambda: train_net(data, cfg, device, kind, perturb, progress),
                        evaluate=lambda net: {"test_accuracy": test_accuracy(net, data, device)})
