"""`gaussian-noise`: random Gaussian noise of a given L2 norm, the "Random noise" row of OTAD's Table V
("the Gaussian random noise added to the clean data", papers/otad.txt V-D3).

Per sample, delta ~ N(0, I) is rescaled to L2 norm exactly eps, added, and the result clipped to the
dataset's input domain ([0, 1] for images; no clipping when the domain is unbounded, e.g. standardised
tabular features). Clipping can only shrink the norm, so the stored norm may be below eps. Not an attack: a baseline that
shows how much a perturbation of the same size costs when nobody aims it. Seeded, so reruns agree.
"""
from __future__ import annotations

import torch

from ..registry import register_attack
from .base import Attack, AttackOutput


@register_attack("gaussian-noise")
class GaussianNoise(Attack):
    description = ("Gaussian noise rescaled to L2 norm eps, then clipped to the input domain (OTAD Table V, "
                   "Random noise)")
    needs = "nothing"
    norms = ("L2",)
    eps_meaning = "L2 norm of the noise before clipping to the input domain"
    tasks = ("classification", "regression")
    defaults = {"norm": "L2"}
    any_domain = True
    default_eps = (0.1, 0.2, 0.5)  # OTAD Table V (wine)

    def run(self, images: torch.Tensor, labels: torch.Tensor, seed: int) -> AttackOutput:
        noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        norms = noise.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (images.dim() - 1)))
        adv = images.double() + noise * (self.eps / norms)
        domain = self.domain  # the dataset's
        if domain is not None:
            adv = adv.clamp(*domain)
        # rounding to float32 may put the norm a hair above eps: within the guard's slack (guard.py)
        return AttackOutput(adv.to(images.dtype), torch.zeros(len(images), dtype=torch.long))
