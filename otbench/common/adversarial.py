"""Adversarial training (Madry et al. 2018), the one hook every adversarially trained method uses: each
training batch is replaced by PGD examples of the network being trained, made in eval mode (BatchNorm on its
running statistics, which the attack's forward passes then leave alone) and handed back with the network in
train mode. The ascent loop is the attacks' own (otbench/attacks/ascent.py); only the loss depends on the task.

The settings are train settings, so they name the cached checkpoint: `adv_norm` (L2 | Linf), `adv_eps`,
`adv_steps`, `adv_step_ratio` (step = ratio * eps / steps) and `adv_random_start`.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from otbench.attacks.ascent import NORMS, UNIT, Domain, input_grad, pgd_ascent
from otbench.errors import OTBenchError

# A training-time perturbation: (network, batch inputs, batch targets) -> the inputs to train on
Perturb = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
ADV_KEYS = ("adv_norm", "adv_eps", "adv_steps", "adv_step_ratio", "adv_random_start")
TASK_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "classification": lambda out, y: F.cross_entropy(out, y),
    # the loss regression-l2 maximises at test time: the squared error to the target
    "regression": lambda out, y: (out.reshape(len(out), -1) - y.reshape(len(y), -1)).pow(2).sum(),
}


def pgd_examples(net: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float, steps: int,
                 step_ratio: float = 2.5, random_start: bool = True, task: str = "classification",
                 domain: Domain = UNIT) -> torch.Tensor:
    """PGD examples of `net` (used as it is: the caller sets train/eval) within eps, inside `domain`; random
    starts come from torch's global generator, which the training seeded."""
    loss = TASK_LOSSES[task]

    def grad_fn(adv: torch.Tensor) -> torch.Tensor:
        return input_grad(lambda a: loss(net(a), y), adv)

    return pgd_ascent(grad_fn, x, eps, norm, steps, step_ratio, random_start, None, domain)


def check_adversarial_settings(cfg: dict[str, Any], who: str) -> None:
    """One-line errors naming the valid values, before any training starts."""
    if cfg["adv_norm"] not in NORMS:
        raise OTBenchError(f"{who}: unknown adv_norm '{cfg['adv_norm']}'; valid: {', '.join(NORMS)}")
    if not cfg["adv_eps"] >= 0 or not cfg["adv_steps"] >= 0:  # `not >=` also refuses NaN
        raise OTBenchError(f"{who}: adv_eps and adv_steps must be >= 0, got {cfg['adv_eps']}, {cfg['adv_steps']}")


def pgd_perturbation(cfg: dict[str, Any], task: str = "classification", domain: Domain = UNIT,
                     who: str = "adversarial training") -> Perturb:
    """The training hook: each batch -> its PGD examples under the `adv_*` settings of `cfg`."""
    check_adversarial_settings(cfg, who)

    def perturb(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        net.eval()
        try:
            return pgd_examples(net, x, y, cfg["adv_norm"], cfg["adv_eps"], cfg["adv_steps"], cfg["adv_step_ratio"],
                                cfg["adv_random_start"], task, domain)
        finally:
            net.train()

    return perturb
