"""`regression-l2`: the regression attack of papers/otad.txt V-B (Table V): PGD maximising the l2 distance
||f(x + delta) - y||_2 between the model's output and the label (after Gupta et al., ref. [62]).

The paper calls it non-adaptive: for a non-differentiable defense (OTAD's regression model) it attacks the
underlying network, here the defense's declared surrogate, forward and backward; a differentiable defense is
attacked directly. Labels are floats of shape (n,) or (n, outputs).
"""
from __future__ import annotations


import torch
from torch import nn

from ..defense import Defense
from ..errors import OTBenchError
from ..registry import register_attack
from .base import Attack, AttackOutput
from .ascent import input_grad, pgd_ascent
from .pgd import PGD_DEFAULTS


@register_attack("regression-l2")
class RegressionL2(Attack):
    description = ("PGD maximising ||f(x+delta) - y||_2 on regression defenses; through the surrogate when "
                   "the defense is not differentiable (non-adaptive, papers/otad.txt Table V)")
    needs = "surrogate-gradients"
    tasks = ("regression",)
    defaults = {**PGD_DEFAULTS, "norm": "L2"}
    default_eps = (0.1, 0.2, 0.5)  # OTAD Table V (wine)
    any_domain = True  # clamps to the dataset's domain (none when unbounded)

    @classmethod
    def check_settings(cls, config: dict, eps: float) -> None:
        cls.require_int(config, "steps")

    @classmethod
    def check_capabilities(cls, defense: type[Defense]) -> None:
        # unlike other surrogate attacks, a differentiable defense needs no surrogate: it is its own
        if defense.task not in cls.tasks:
            raise OTBenchError(f"attack '{cls.name}' applies to {'/'.join(cls.tasks)} defenses, but "
                               f"'{defense.name}' is a {defense.task} defense")
        if not defense.differentiable and defense.surrogate_description is None:
            raise OTBenchError(f"attack '{cls.name}' needs gradients or a differentiable surrogate, and "
                               f"defense '{defense.name}' is not differentiable and declares no surrogate")

    def target(self) -> nn.Module:
        if self.defense.differentiable:
            return self.defense.module()
        surrogate = self.defense.surrogate()
        if surrogate is None:
            raise OTBenchError(f"defense '{self.defense.name}' declares a surrogate but surrogate() returned None")
        return surrogate.eval()

    def run(self, images: torch.Tensor, labels: torch.Tensor, seed: int) -> AttackOutput:
        model, device = self.target(), self.defense.device
        x = images.to(device)
        y = labels.to(device, torch.float32).reshape(len(labels), -1)
        samples = self.config.get("eot_samples", 1)  # a generic setting of gradient attacks, where offered

        def grad_fn(adv: torch.Tensor) -> torch.Tensor:
            # squared error: the same ascent direction per sample, and smooth where f(x) = y
            return input_grad(lambda a: (model(a).reshape(len(a), -1) - y).pow(2).sum(), adv, samples)

        torch.manual_seed(seed)  # only a randomized defense's own noise
        adv = pgd_ascent(grad_fn, x, self.eps, self.norm, self.config["steps"], self.config["step_ratio"],
                         self.config["random_start"], torch.Generator().manual_seed(seed), self.domain)
        queries = self.config["steps"] * samples
        return AttackOutput(adv.cpu(), torch.full((len(images),), queries, dtype=torch.long))
