"""`pgd-at`: PGD adversarial training (Madry et al. 2018) of the same FC ResNet + H that OTAD uses.

The training loop is OTAD's (defenses/otad/model.py, Algorithm 1 with alpha = 0) with each batch replaced
by its PGD adversarial examples: min_theta E max_{||delta|| <= eps} CE(f(x + delta), y), inner maximisation
by `adv_steps` steps of size adv_step_ratio * eps / adv_steps from a random start in the ball, projected on
the ball and on [0, 1]. The examples are made with the network in eval mode (BatchNorm on running
statistics, which the attack's forward passes therefore do not disturb), then the network is trained on them
in train mode. Norm and eps are train settings, so they name the cached checkpoint (by config hash):

- preset `paper`: papers/otad.txt V-C: "l-inf adversarial training ... eps = 0.1 on MNIST"; the paper keeps
  "the hyperparameters of the original papers": Madry et al.'s 40 steps on MNIST. The network and optimiser
  are TRAIN_PAPER's (the paper gives nothing else for this baseline).
- preset `quick`: TRAIN_QUICK's network and schedule, 10 PGD steps.
- Table IV (MERFISH): `--set train.adv_norm=L2 --set train.adv_eps=1 --set train.blocks=4` (the paper uses
  l-inf training "except for industrial data" but gives no eps for MERFISH; L2 eps 1 matches the attack).

The two MNIST configurations the papers compare with:
- OTAD (Tables I-III): Linf eps 0.1, the presets' default.
- OT-Classifier ("Madry's Adv", papers/ot-classifier.txt Fig. 6: "we use eps = 0.3 ... on MNIST"): Madry et
  al.'s MNIST setting, Linf eps 0.3 with 40 steps of 0.01, i.e. `MADRY_MNIST` below. On the command line
  `--set train.adv_eps=0.3 --set train.adv_step_ratio=1.3333333333333335`; in a report table
  `Row("Madry's Adv", "pgd-at", "Adv. Training", MADRY_MNIST)`.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from defenses.otad.model import TRAIN_PAPER, TRAIN_QUICK, Perturb, load_or_train
from defenses.otad.network import FCResNet
from otbench.defense import Defense
from otbench.errors import OTBenchError
from otbench.registry import register_defense

ADV_PAPER: dict[str, Any] = {"adv_norm": "Linf", "adv_eps": 0.1, "adv_steps": 40, "adv_step_ratio": 2.5,
                             "adv_random_start": True}
ADV_QUICK: dict[str, Any] = {**ADV_PAPER, "adv_steps": 10}
# Madry et al. 2018 on MNIST: eps 0.3, 40 steps of size 0.01 (step = adv_step_ratio * eps / adv_steps):
# overrides of either preset (the quick preset's 10 steps then take steps of 0.04)
MADRY_MNIST: dict[str, dict[str, Any]] = {"train": {"adv_eps": 0.3, "adv_step_ratio": 0.01 * 40 / 0.3}}
NORMS = ("L2", "Linf")


def _per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def pgd_examples(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float, steps: int,
                 step_ratio: float = 2.5, random_start: bool = True) -> torch.Tensor:
    """PGD adversarial examples of `net` (used as it is: the caller sets train/eval) within eps in [0, 1]."""
    x = x.detach()
    if eps == 0 or steps == 0:
        return x
    alpha = step_ratio * eps / steps
    if not random_start:
        delta = torch.zeros_like(x)
    elif norm == "Linf":
        delta = torch.empty_like(x).uniform_(-eps, eps)
    else:  # uniform radius in the L2 ball along a uniform direction (as torchattacks' PGDL2)
        g = torch.randn_like(x)
        r = torch.rand(len(x), *([1] * (x.dim() - 1)), device=x.device)
        delta = g / _per_sample_norm(g).clamp_min(1e-12) * r * eps
    delta = (x + delta).clamp(0, 1) - x
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(net(x + delta), y)
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            if norm == "Linf":
                delta = (delta + alpha * grad.sign()).clamp(-eps, eps)
            else:
                delta = delta + alpha * grad / _per_sample_norm(grad).clamp_min(1e-12)
                delta = delta * (eps / _per_sample_norm(delta).clamp_min(1e-12)).clamp(max=1.0)
            delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()


def pgd_perturbation(cfg: dict[str, Any]) -> Perturb:
    """The training hook: each batch -> its PGD examples, made in eval mode, the network left in train mode."""
    if cfg["adv_norm"] not in NORMS:
        raise OTBenchError(f"pgd-at: unknown adv_norm '{cfg['adv_norm']}'; valid: {', '.join(NORMS)}")
    if cfg["adv_eps"] < 0 or cfg["adv_steps"] < 0:
        raise OTBenchError(f"pgd-at: adv_eps and adv_steps must be >= 0, got {cfg['adv_eps']}, {cfg['adv_steps']}")

    def perturb(net: FCResNet, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        net.eval()
        try:
            return pgd_examples(net, x, y, cfg["adv_norm"], cfg["adv_eps"], cfg["adv_steps"],
                                cfg["adv_step_ratio"], cfg["adv_random_start"])
        finally:
            net.train()

    return perturb


@register_defense("pgd-at")
class PGDAdversarialTraining(Defense):
    description = "PGD adversarial training (Madry et al. 2018) of OTAD's FC ResNet + H; norm/eps are train settings"
    differentiable = True
    surrogate_description = "itself"  # BPDA + PGD on it is plain PGD (papers/otad.txt V-C)
    presets = {"paper": {"train": {**TRAIN_PAPER, **ADV_PAPER}, "defense": {}},
               "quick": {"train": {**TRAIN_QUICK, **ADV_QUICK}, "defense": {}}}

    def __init__(self, data, config, device) -> None:
        super().__init__(data, config, device)
        cfg = config["train"]
        self.net, self.train_record = load_or_train(data, cfg, device, perturb=pgd_perturbation(cfg))
        self.train_x = data.take_train(cfg["train_size"]).x_train

    def surrogate(self) -> torch.nn.Module:
        return self.net

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.to(self.device))
