"""Square attack (Andriushchenko et al. 2020) through torchattacks: score-based, gradient-free."""
from __future__ import annotations

from functools import lru_cache

import torch

from ..registry import register_attack
from .base import Attack, AttackOutput


@lru_cache(maxsize=1)
def _counting_square() -> type:
    """torchattacks' Square, keeping the per-sample query counts it drops (built on first use: loading
    torchattacks costs most of a second that listing and validating need not pay)."""
    import torchattacks

    class CountingSquare(torchattacks.Square):
        last_queries: torch.Tensor | None = None

        def attack_single_run(self, x, y):
            n_queries, x_best = super().attack_single_run(x, y)
            self.last_queries = n_queries
            return n_queries, x_best

    return CountingSquare


@register_attack("square")
class Square(Attack):
    description = "Square attack, random search on the margin loss (torchattacks); papers/otad.txt Table III"
    needs = "scores"
    defaults = {"norm": "L2", "n_queries": 2000, "p_init": 0.8, "n_restarts": 1, "loss": "margin"}
    default_eps = (2.0, 3.0)  # OTAD Table III (L2, MNIST)

    def run(self, images: torch.Tensor, labels: torch.Tensor, seed: int) -> AttackOutput:
        model = self.defense.module()
        atk = _counting_square()(model, norm=self.norm, eps=self.eps, n_queries=self.config["n_queries"],
                              n_restarts=self.config["n_restarts"], p_init=self.config["p_init"],
                              loss=self.config["loss"], resc_schedule=True, seed=seed, verbose=False)
        atk.set_device(self.defense.device)
        images, labels = images.to(self.defense.device), labels.to(self.defense.device)
        adv = atk(images, labels)
        queries = None
        if self.config["n_restarts"] == 1:
            # Square attacks only the correctly classified points; their counts come in that order
            with torch.no_grad():
                correct = model(images).argmax(1) == labels
            queries = torch.zeros(len(images), dtype=torch.long)
            if atk.last_queries is not None and correct.any():
                queries[correct.cpu()] = atk.last_queries.long().cpu()
        return AttackOutput(adv.detach().cpu(), queries)
