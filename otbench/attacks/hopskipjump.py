"""`hopskipjump`: HopSkipJump (Chen, Jordan & Wainwright 2020) through ART, label-only, L2 or Linf.

A decision-based minimum-norm attack: from an adversarial starting point it walks along the decision
boundary toward the clean input, estimating the boundary's normal from the labels of random perturbations.
Needs only labels, so it sees the jumps where a K-NN defense's neighbour set changes, which gradients miss.
The shared machinery (query budget, best-so-far, eps, memo across eps) is in `_label_only.py`.

Starting point (`init`): ART draws it from an unseeded generator, so otbench supplies it, seeded:
`noise` (ART's own choice: uniform random images, one query each, the first misclassified one) or
`train` (the training images nearest to the input among the other classes, nearest first, the first the
defense misclassifies; closer to the input, so fewer queries go to the approach). At most `init_size` tries;
a sample with none misclassified is returned clean.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import OTBenchError
from ..registry import register_attack
from ._training_points import TrainingPoints
from ._label_only import ART_BATCH, LabelOnlyAttack, QueryLog, norm_order

INITS = ("train", "noise")


@register_attack("hopskipjump")
class HopSkipJump(LabelOnlyAttack):
    description = ("HopSkipJump through ART: label-only minimum-norm boundary walk; adversarial if the smallest "
                   "input found is within eps")
    norms = ("L2", "Linf")
    defaults = {"norm": "L2", "max_queries": 5000, "max_iter": 50, "init_eval": 100, "max_eval": 10000,
                "init": "train", "init_size": 100}

    @classmethod
    def check_settings(cls, config: dict, eps: float) -> None:
        super().check_settings(config, eps)
        c = config
        if c["init"] not in INITS:
            raise OTBenchError(f"hopskipjump: unknown init '{c['init']}'; valid: {', '.join(INITS)}")
        cls.require_int(c, "max_iter", "init_eval", "max_eval", "init_size")
        if c["init_eval"] > c["max_eval"]:
            raise OTBenchError(f"hopskipjump: init_eval ({c['init_eval']}) must be <= max_eval ({c['max_eval']})")

    def check_against_defense(self) -> None:
        if self.config["init"] == "train" and getattr(self.defense.data, "y_train", None) is None:
            raise OTBenchError("hopskipjump: init 'train' needs the defense's training data; use init 'noise'")

    def start(self, x: torch.Tensor, y: int, log: QueryLog, rng: np.random.Generator) -> torch.Tensor | None:
        """A misclassified starting point, one query per try; None if `init_size` tries found none."""
        tries = self.config["init_size"]
        if self.config["init"] == "noise":
            cands = (torch.from_numpy(rng.random((1, *x.shape), dtype=np.float32)) for _ in range(tries))
        else:
            points = TrainingPoints.of(self.defense.data)
            order = points.nearest_other(x[None], torch.tensor([y]), min(tries, len(points.y)))[0]
            cands = (points.flat[j].view(1, *x.shape) for j in order.tolist())
        for cand in cands:
            if log.query(cand)[0] != y:
                return cand
        return None

    def run_art(self, est, x: np.ndarray, y: int, log: QueryLog, rng: np.random.Generator) -> None:
        from art.attacks.evasion import HopSkipJump as ArtHopSkipJump

        init = self.start(torch.from_numpy(x[0]), y, log, rng)
        if init is None:
            return
        c = self.config
        attack = ArtHopSkipJump(est, batch_size=ART_BATCH, targeted=False, norm=norm_order(self.norm),
                                max_iter=c["max_iter"], max_eval=c["max_eval"], init_eval=c["init_eval"],
                                init_size=c["init_size"], verbose=False)
        attack.generate(x, np.array([y]), x_adv_init=init.numpy())
