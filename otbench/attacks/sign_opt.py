"""`sign-opt`: Sign-OPT (Cheng et al. 2020) through ART, label-only, L2.

A decision-based minimum-norm attack: it optimises the direction theta of the perturbation, where
g(theta) is the distance to the decision boundary along theta (found by binary search), with the sign of
g's directional derivative estimated from one label query per random direction (`k` of them per step).
ART's untargeted version starts from the best of `num_trial` random Gaussian directions. Its queries are
single inputs, so it is slower per query than HopSkipJump on defenses that batch well.
The shared machinery (query budget, best-so-far, eps, memo across eps) is in `_label_only.py`.
"""
from __future__ import annotations

import numpy as np

from ..registry import register_attack
from ._label_only import ART_BATCH, LabelOnlyAttack, QueryLog


@register_attack("sign-opt")
class SignOPT(LabelOnlyAttack):
    description = "Sign-OPT through ART: label-only minimum-norm direction search; adversarial if within eps"
    norms = ("L2",)
    defaults = {"norm": "L2", "max_queries": 5000, "num_trial": 100, "k": 200, "max_iter": 1000}

    @classmethod
    def check_settings(cls, config: dict, eps: float) -> None:
        super().check_settings(config, eps)
        cls.require_int(config, "num_trial", "k", "max_iter")

    def run_art(self, est, x: np.ndarray, y: int, log: QueryLog, rng: np.random.Generator) -> None:
        from art.attacks.evasion import SignOPTAttack

        c = self.config
        attack = SignOPTAttack(est, targeted=False, num_trial=c["num_trial"], max_iter=c["max_iter"],
                               query_limit=c["max_queries"], k=c["k"], batch_size=ART_BATCH, verbose=False)
        attack.generate(x, np.array([y]))
