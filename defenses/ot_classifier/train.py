"""Algorithm 1 of papers/ot-classifier.txt as the authors' train_ot.py runs it, and the plain CNN trainings.

Per batch (x_i, y_i), i = 1..n, with prior codes z_i ~ N(0, sigma^2 I) and z~_i = Q(x_i); gradients are zeroed
once per batch (train_ot.py:52-54), so later steps add to what earlier ones left, as in the authors' loop:
  1. critic D: one Adam step descending  lambda/n sum_i D(z_i) - D(z~_i) (Q frozen), then clip D to [-c, c];
  2. Q and C:  one Adam step each on lambda0/n sum_i CE(C(Q(x_i)), y_i);
  3. Q alone:  one Adam step on lambda1/n sum_i D(Q(x_i)) (its gradient added to step 2's).
The critic is thus high on the codes and low on the prior, and the encoder lowers it on its codes: Algorithm 1
with D's sign flipped. Without the critic (E-CLA, section 4.2) only step 2 runs. With adversarial training (from
epoch `adv_delay` on) the batch's PGD examples against the predicted labels join each step: a second critic step
and a second encoder step on them, and cross-entropy (clean + adv) / 2 in step 2 (train_ot.py:57-146).

The CNN baselines (`cnn-*`) train as Madry et al.'s MNIST challenge: Adam on cross-entropy of the batch, or of its
PGD examples against the true labels alone. Every training is resumable at its last finished epoch
(otbench.training.minibatch_training) and cached under a hash of its kind, dataset and train settings.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from otbench.common.adversarial import Perturb
from otbench.data import Dataset
from otbench.training import cached_model, checkpoint_path, minibatch_training, test_accuracy

from .networks import BasicCNN, Classifier, Critic, Encoder, EncoderClassifier
from .settings import CNN_WIDTH, resolve_n_z

KINDS = ("ot-cla", "e-cla", "cnn")  # with the critic; without; the plain CNN (no code, no critic)


def build_net(data: Dataset, cfg: dict[str, Any], kind: str) -> nn.Module:
    signed = cfg["input_range"] == "signed"
    shape = data.input_shape
    if kind == "cnn" and cfg["arch"] == "basic-cnn":
        return BasicCNN(shape, data.num_classes, tuple(cfg["channels"]), cfg["hidden"][0], signed)
    if kind == "cnn":  # OT-CLA's convolutions with a wide ReLU layer in place of the code
        return EncoderClassifier(Encoder(shape, CNN_WIDTH, tuple(cfg["channels"]), True, signed=signed),
                                 Classifier(CNN_WIDTH, data.num_classes, tuple(cfg["hidden"])))
    n_z = resolve_n_z(data.name, cfg["n_z"])
    critic = Critic(n_z, cfg["critic_width"], cfg["critic_depth"]) if kind == "ot-cla" else None
    return EncoderClassifier(Encoder(shape, n_z, tuple(cfg["channels"]), first_bn=cfg["first_bn"], signed=signed),
                             Classifier(n_z, data.num_classes, tuple(cfg["hidden"]), cfg["hidden_bn"]), critic)


def _adam(params, lr: float, beta1: float) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=lr, betas=(beta1, 0.999))


class Optimisers:
    """Several optimisers saved and restored as one (the state kept with each finished epoch)."""

    def __init__(self, **opts: torch.optim.Optimizer) -> None:
        self.opts = opts

    def __getitem__(self, name: str) -> torch.optim.Optimizer:
        return self.opts[name]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.opts.values():
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {name: opt.state_dict() for name, opt in self.opts.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != set(self.opts):
            raise KeyError(f"optimisers {sorted(state)} saved, {sorted(self.opts)} expected")
        for name, opt in self.opts.items():
            opt.load_state_dict(state[name])


def build_optimisers(net: EncoderClassifier, cfg: dict[str, Any]) -> Optimisers:
    """Adam for the encoder (lr), the classifier (lr_classifier) and the critic (lr_critic) (train_ot.py:23-25)."""
    opts = {"encoder": _adam(net.encoder.parameters(), cfg["lr"], cfg["beta1"]),
            "classifier": _adam(net.classifier.parameters(), cfg["lr_classifier"], cfg["beta1"])}
    if net.critic is not None:
        opts["critic"] = _adam(net.critic.parameters(), cfg["lr_critic"], cfg["beta1"])
    return Optimisers(**opts)


def _requires_grad(module: nn.Module | None, flag: bool) -> None:
    if module is not None:
        for p in module.parameters():
            p.requires_grad_(flag)


def algorithm_one_step(net: EncoderClassifier, opts: Optimisers, cfg: dict[str, Any], gen: torch.Generator,
                       perturb: Perturb | None = None):
    """The per-batch update of OT-CLA / E-CLA (module docstring) as `train_step(xb, yb, epoch) -> loss`."""
    q, c, d = net.encoder, net.classifier, net.critic

    def critic_step(xs: torch.Tensor) -> None:  # train_ot.py:62-83 (clean), 87-104 (adversarial)
        _requires_grad(q, False), _requires_grad(c, False), _requires_grad(d, True)
        prior = cfg["sigma"] * torch.randn(len(xs), q.code.out_features, generator=gen).to(xs.device)
        (cfg["lam"] * (d(prior).mean() - d(q(xs)).mean())).backward()
        opts["critic"].step()
        d.clip_(cfg["clip"])

    def encoder_step(xs: torch.Tensor) -> None:  # train_ot.py:126-137 (clean), 139-146 (adversarial)
        _requires_grad(q, True), _requires_grad(c, False), _requires_grad(d, False)
        (cfg["lam_encoder"] * d(q(xs)).mean()).backward()
        opts["encoder"].step()

    def step(xb: torch.Tensor, yb: torch.Tensor, epoch: int) -> torch.Tensor:
        opts.zero_grad(set_to_none=True)  # once per batch (train_ot.py:52-54)
        adv = None
        if perturb is not None and epoch >= cfg["adv_delay"]:
            with torch.no_grad():  # the labels the authors attack: the network's own (train_ot.py:58)
                predicted = net(xb).argmax(1)
            adv = perturb(net, xb, predicted).detach()
        if d is not None:
            critic_step(xb)
            if adv is not None:
                critic_step(adv)
        _requires_grad(q, True), _requires_grad(c, True), _requires_grad(d, False)
        loss = cfg["lam_class"] * F.cross_entropy(c(q(xb)), yb)  # train_ot.py:109-118
        if adv is not None:
            loss = (loss + cfg["lam_class"] * F.cross_entropy(c(q(adv)), yb)) / 2
        loss.backward()
        opts["classifier"].step()
        opts["encoder"].step()
        if d is not None:
            encoder_step(xb)
            if adv is not None:
                encoder_step(adv)
        _requires_grad(net, True)
        return loss.detach()

    return step


def train_net(data: Dataset, cfg: dict[str, Any], device: torch.device, kind: str,
              perturb: Perturb | None = None, progress: bool = True) -> nn.Module:
    gen = torch.Generator().manual_seed(cfg["seed"])
    torch.manual_seed(cfg["seed"])
    net = build_net(data, cfg, kind).to(device)
    net.train()
    desc = f"train {kind} on {data.name}"
    if kind == "cnn":  # Madry et al.: Adam on the batch, or on its PGD examples alone (true labels)
        opt = _adam(net.parameters(), cfg["lr"], cfg["beta1"])

        def loss_of(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(net(perturb(net, xb, yb) if perturb is not None else xb), yb)

        minibatch_training(data.x_train, data.y_train, cfg["batch_size"], cfg["epochs"], gen, opt, None, loss_of,
                           device, desc, progress, net=net)
        return net.eval()
    if net.critic is not None:
        net.critic.clip_(cfg["clip"])  # the critic starts inside the clip box too
    opts = build_optimisers(net, cfg)
    minibatch_training(data.x_train, data.y_train, cfg["batch_size"], cfg["epochs"], gen, opts, None, None,
                       device, desc, progress, net=net, train_step=algorithm_one_step(net, opts, cfg, gen, perturb))
    return net.eval()


def model_path(data: Dataset, cfg: dict[str, Any], kind: str) -> Path:
    return checkpoint_path(kind, data.name, train=cfg)


def load_or_train(data: Dataset, cfg: dict[str, Any], device: torch.device, kind: str,
                  perturb: Perturb | None = None, progress: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """The trained network for (kind, cfg), from the cache when present, and its training record."""
    data = data.take_train(cfg["train_size"])
    return cached_model(model_path(data, cfg, kind), build_net(data, cfg, kind), cfg, device,
                        train=lambda: train_net(data, cfg, device, kind, perturb, progress),
                        evaluate=lambda net: {"test_accuracy": test_accuracy(net, data, device)})
