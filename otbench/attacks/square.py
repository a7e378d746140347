"""Square attack (Andriushchenko et al. 2020) through torchattacks: score-based, gradient-free.

Settings beyond torchattacks' own (their defaults keep the meaning of cells stored before they existed):
- `schedule`: how the window size p shrinks with the query number. `rescaled` (default) is the schedule of
  the authors' code (`p_selection(p_init, it, n_iters)`: the piecewise constant schedule laid over the
  budget) and torchattacks' `resc_schedule=True`; `fixed` is AutoAttack's `resc_schedule=False` (the
  schedule's query numbers taken as they are: at 2000 queries on MNIST the side stays 9 / 7 / 5 px where
  `rescaled` is at 3 px from query 401; shared/design/table3-gap.md). `p_init` (default 0.8, AutoAttack's
  and torchattacks' value) is the fraction of the image the first window covers; the authors' code
  suggests 0.1 for L2 on standard models and "higher p" for robust ones.
- `init`: `paper` (default): the paper's starting point (Linf: vertical stripes of +-eps; L2: a grid of
  pseudo-Gaussian squares scaled to norm eps). `neighbour` (L2): start from the best point of
  `neighbour-shift`'s sweep (toward other classes' nearest training points; its queries are added), which
  the random search then takes to norm eps and refines. The paper's starting point is still drawn, so the
  random stream afterwards is the same as with `paper`.
- `n_restarts`: restarts on the points still robust, each with `n_queries`.
Queries: Square's own count (1 for the starting point + 1 per iteration) summed over the restarts that
attacked the sample (0 for a sample misclassified before the attack), plus the sweep's for `neighbour`.
"""
from __future__ import annotations

from functools import lru_cache

import torch

from ..errors import OTBenchError
from ..registry import register_attack
from .base import Attack, AttackOutput
from ._neighbour_sweep import SWEEP_DEFAULTS, check_sweep_data, sweep

SCHEDULES = {"rescaled": True, "fixed": False}  # -> torchattacks' resc_schedule
INITS = ("paper", "neighbour")
LOSSES = ("margin", "ce")


@lru_cache(maxsize=1)
def _counting_square() -> type:
    """The Square subclass below, built on first use: loading torchattacks costs most of a second that listing
    and validating need not pay."""
    import torchattacks

    class CountingSquare(torchattacks.Square):
        """torchattacks' Square, keeping its per-sample query counts over restarts and taking a starting point.

        `perturb` attacks the points its first forward pass finds correct, then, per restart, those its
        forward pass on the restart's output finds still correct, in index order; the two hooks below follow
        the same forward passes, so the counts land on the right samples."""

        start: torch.Tensor | None = None  # (n, C, H, W) starting points (L2), else the paper's

        def perturb(self, x, y=None):
            self.queries = torch.zeros(len(x), dtype=torch.long)
            self._labels, self._phase, self._inject = y, "first", None
            return super().perturb(x, y)

        def get_logits(self, inputs, labels=None, *args, **kwargs):
            out = super().get_logits(inputs, labels, *args, **kwargs)
            if self._phase == "first":  # perturb's accuracy check: the points the first restart attacks
                self._active = (out.argmax(1) == self._labels).nonzero().flatten()
            elif self._phase == "verify":  # perturb's check of a restart's output: who stays for the next
                self._active = self._active[out.argmax(1) == self._labels[self._active]]
            self._phase = "idle"
            return out

        def attack_single_run(self, x, y):
            self._phase = "run"
            if self.start is not None:
                self._x_run, self._inject = x, self.start[self._active]
            n_queries, x_best = super().attack_single_run(x, y)
            self.queries[self._active.cpu()] += n_queries.long().cpu()
            self._phase = "verify"
            return n_queries, x_best

        def normalize_delta(self, x):
            # the L2 starting point is x + normalize_delta(delta_init) * eps: the first call sets the start
            if self._inject is not None:
                start, self._inject = self._inject, None
                return (start - self._x_run) / self.eps
            return super().normalize_delta(x)

    return CountingSquare


@register_attack("square")
class Square(Attack):
    description = "Square attack, random search on the margin loss (torchattacks); papers/otad.txt Table III"
    needs = "scores"
    defaults = {"norm": "L2", "n_queries": 2000, "p_init": 0.8, "n_restarts": 1, "loss": "margin",
                "schedule": "rescaled", "init": "paper"}
    default_eps = (2.0, 3.0)  # OTAD Table III (L2, MNIST)

    @classmethod
    def check_settings(cls, config: dict, eps: float) -> None:
        for key, valid in (("schedule", tuple(SCHEDULES)), ("init", INITS), ("loss", LOSSES)):
            if config[key] not in valid:
                raise OTBenchError(f"square: unknown {key} '{config[key]}'; valid: {', '.join(valid)}")
        cls.require_int(config, "n_queries", "n_restarts")
        if not 0 < config["p_init"] <= 1:
            raise OTBenchError(f"square: p_init must be in (0, 1], got {config['p_init']!r}")
        if config["init"] == "neighbour" and config["norm"] != "L2":
            raise OTBenchError("square: init 'neighbour' moves in L2; use norm L2 or init 'paper'")

    def __init__(self, defense, eps: float, **config) -> None:
        super().__init__(defense, eps, **config)
        if self.config["init"] == "neighbour":  # needs the defense's training data
            check_sweep_data("square (init 'neighbour')", SWEEP_DEFAULTS, defense)

    def run(self, images: torch.Tensor, labels: torch.Tensor, seed: int) -> AttackOutput:
        c, device = self.config, self.defense.device
        atk = _counting_square()(self.defense.module(), norm=self.norm, eps=self.eps, n_queries=c["n_queries"],
                              n_restarts=c["n_restarts"], p_init=c["p_init"], loss=c["loss"],
                              resc_schedule=SCHEDULES[c["schedule"]], seed=seed, verbose=False)
        atk.set_device(device)
        extra = torch.zeros(len(images), dtype=torch.long)
        if c["init"] == "neighbour":
            first = sweep(self.defense, images, labels, self.eps, SWEEP_DEFAULTS)
            atk.start, extra = first.adv.to(device), first.queries
        adv = atk(images.to(device), labels.to(device))
        return AttackOutput(adv.detach().cpu(), atk.queries + extra)
