"""`dml-attack`: the DML attack of papers/otad.txt V-E (Table VII): untargeted PGD on the deep metric
learning network psi that OTAD-T uses to pick neighbours, maximising ||psi(x + delta) - psi(x)||_2.

Moving the embedding moves the neighbour set, and with it everything OTAD computes from the neighbours;
the paper shows a non-robust DML-net is the weak point even when BPDA fails (3.3% robust accuracy for a
3-block ResNet DML-net at eps = 0.5 on CIFAR10). The defense as a whole need not be differentiable: only
psi is differentiated, which is why this attack declares `surrogate-gradients` (gradients of a declared
differentiable part of the defense, not of its outputs) and checks for a metric network instead.
"""
from __future__ import annotations

from typing import Any

import torch

from ..defense import Defense
from ..errors import OTBenchError
from ..registry import register_attack
from .base import Attack, AttackOutput
from .ascent import input_grad, pgd_ascent


@register_attack("dml-attack")
class DMLAttack(Attack):
    description = ("PGD pushing the defense's metric-learning embedding psi(x+delta) away from psi(x), "
                   "so the neighbours change (papers/otad.txt Table VII)")
    needs = "surrogate-gradients"
    eps_meaning = ("radius of the norm ball around the clean input, inputs in [0, 1]; gradients of the "
                   "defense's metric network only")
    # No `random_start` setting: at delta = 0 the distance has zero gradient, so the start is always random.
    defaults = {"norm": "L2", "steps": 100, "step_ratio": 2.5}
    default_eps = (2.0, 2.5, 3.0)

    def __init__(self, defense: Defense, eps: float, **config: Any) -> None:
        super().__init__(defense, eps, **config)
        self.embed = defense.metric_network()
        if self.embed is None:
            raise OTBenchError(f"attack '{self.name}': defense '{defense.name}' declares a metric network "
                               f"but metric_network() returned None")

    @classmethod
    def check_settings(cls, config: dict, eps: float) -> None:
        cls.require_int(config, "steps")

    @classmethod
    def check_capabilities(cls, defense: type[Defense]) -> None:
        if defense.task not in cls.tasks:
            raise OTBenchError(f"attack '{cls.name}' applies to {'/'.join(cls.tasks)} defenses, but "
                               f"'{defense.name}' is a {defense.task} defense")
        if not defense.has_metric_network:
            raise OTBenchError(
                f"attack '{cls.name}' attacks the metric-learning (DML) network that picks neighbours, and "
                f"defense '{defense.name}' has no metric network; use 'bpda-pgd' or 'square'")

    def run(self, images: torch.Tensor, labels: torch.Tensor, seed: int) -> AttackOutput:
        embed = self.embed.eval()  # BatchNorm on running statistics, as at inference
        x = images.to(self.defense.device)
        samples = self.config.get("eot_samples", 1)  # a generic setting of gradient attacks, where offered
        with torch.no_grad():
            clean = embed(x).flatten(1)

        # the squared distance ascends in the same per-sample direction and has no kink where psi(x+d) = psi(x)
        def grad_fn(adv: torch.Tensor) -> torch.Tensor:
            return input_grad(lambda a: (embed(a).flatten(1) - clean).pow(2).sum(), adv, samples)

        adv = pgd_ascent(grad_fn, x, self.eps, self.norm, self.config["steps"], self.config["step_ratio"],
                         True, torch.Generator().manual_seed(seed))
        # queries of the metric network, none of the defense
        queries = self.config["steps"] * samples
        return AttackOutput(adv.cpu(), torch.full((len(images),), queries, dtype=torch.long))
