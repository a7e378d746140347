"""`ngopt-cw`: the adaptive CW attack with a gradient-free solver of the OTAD paper (papers/otad.txt,
Section V-B and Table I): the Carlini-Wagner objective (Carlini & Wagner 2017)

    minimise  ||x' - x||_2^2 + c * max(Z_y(x') - max_{i != y} Z_i(x'), -kappa)

on the real defense's scores Z (the defense is inside the loss, hence "adaptive"), solved by nevergrad's
NGOpt with budget 850 and mutation sigma 0.1 / 0.15 / 0.2. Here eps IS that sigma; the attack is
unbounded and the harness records the L2 norms it reached.

No public code of the OTAD authors was found, so the parametrisation follows nevergrad's own adversarial
benchmark (`nevergrad.functions.images.ImageAdversarial`): a perturbation variable
`ng.p.Array(init=0).set_mutation(sigma=eps)` added to the image and clipped to [0, 1]. It is left without
nevergrad bounds on purpose: with bounds NGOpt (nevergrad 1.0) picks Cobyla, which ignores the mutation
sigma, whereas the paper's accuracies depend on sigma; unbounded, NGOpt picks MetaModelOnePlusOne, a
(1+1)-ES whose initial step is sigma (one-fifth rule). c = 1 (torchattacks' CW default) and kappa = 0
(Carlini & Wagner's default confidence) can be changed with --set attack.c=... / attack.kappa=...

One optimizer per sample, but every step asks one candidate of each and evaluates them all in one batched
forward pass, so n samples cost `budget` batched defense calls (queries = budget per sample). Per sample it
returns the misclassified candidate of smallest L2 (a correctly classified candidate of lower loss never
replaces it); if none was misclassified, the lowest-loss candidate, which is what NGOpt recommends.
Cost besides the defense: ~1 ms of nevergrad bookkeeping per sample and step, and ~20 MB per sample
(nevergrad keeps every candidate; 850 x 784 values), so keep chunks at a few hundred samples.

Across workers (`--executor ray`): the per-sample optimizers are spread by chunk, like every attack's work:
each chunk is one task on one worker, whose optimizers step together with one batched forward of the defense
per step. Both the nevergrad bookkeeping and the forwards then run on as many workers as there are chunks in
flight, so give a cell at least as many chunks as workers (`--chunk` <= n / workers). Each optimizer is
seeded by (chunk seed, position in the chunk), so the result does not depend on the worker or their number.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import OTBenchError
from ..registry import register_attack
from .base import Attack, AttackOutput


def cw_margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Z_y - max_{i != y} Z_i: positive while the true class still wins."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.scatter(1, labels[:, None], float("-inf")).amax(1)
    return true - other


def make_optimizer(name: str, dim: int, sigma: float, budget: int, seed: int,
                   index: int) -> Any:
    """Sample `index`'s optimizer over a perturbation of `dim` values, mutation sigma `sigma`."""
    import nevergrad as ng  # here, not at import: nevergrad takes most of a second to load

    param = ng.p.Array(init=np.zeros(dim)).set_mutation(sigma=sigma)
    # one stream per (call seed, sample): the same call always gives the same result
    param.random_state = np.random.RandomState(np.random.SeedSequence([seed, index]).generate_state(4))
    opt = ng.optimizers.registry[name](parametrization=param, budget=budget)
    # NGOpt only selects and delegates; asking its choice directly gives the same candidates with one less
    # layer of bookkeeping per ask/tell (about 20% of the Python overhead)
    return opt.optim if isinstance(opt, ng.optimizers.NGOptBase) else opt


@register_attack("ngopt-cw")
class NGOptCW(Attack):
    description = ("adaptive CW objective on the real defense's scores, solved gradient-free by nevergrad "
                   "NGOpt (papers/otad.txt Table I)")
    needs = "scores"
    norms = ("L2",)
    bounded = False
    eps_meaning = ("NGOpt's mutation sigma (initial per-pixel std of its Gaussian mutation), not a norm bound; "
                   "the L2 norms reached are recorded")
    defaults = {"norm": "L2", "budget": 850, "c": 1.0, "kappa": 0.0, "optimizer": "NGOpt"}
    default_eps = (0.1, 0.15, 0.2)  # OTAD Table I: NGOpt's mutation sigma

    @classmethod
    def check_settings(cls, config: dict, eps: float) -> None:
        import nevergrad as ng

        if config["optimizer"] not in ng.optimizers.registry:
            raise OTBenchError(f"ngopt-cw: unknown nevergrad optimizer '{config['optimizer']}' (e.g. NGOpt, "
                               f"OnePlusOne, CMA; nevergrad.optimizers.registry lists them)")
        cls.require_int(config, "budget")
        if eps <= 0:
            raise OTBenchError(f"ngopt-cw: eps is NGOpt's mutation sigma and must be > 0, got {eps:g}")

    def run(self, images: torch.Tensor, labels: torch.Tensor, seed: int) -> AttackOutput:
        n, budget, c, kappa = len(images), self.config["budget"], self.config["c"], self.config["kappa"]
        x, labels = images.flatten(1).float().cpu(), labels.cpu()
        opts = [make_optimizer(self.config["optimizer"], x.shape[1], self.eps, budget, seed, i) for i in range(n)]
        best = images.clone().flatten(1)  # misclassified with the smallest L2, else the lowest loss
        best_dist = torch.full((n,), float("inf"))
        best_loss = torch.full((n,), float("inf"))
        found = torch.zeros(n, dtype=torch.bool)
        for _ in range(budget):
            cands = [opt.ask() for opt in opts]
            delta = torch.from_numpy(np.stack([cand.value for cand in cands])).float()
            adv = (x + delta).clamp(0.0, 1.0)
            with torch.no_grad():
                logits = self.defense.logits(adv.view_as(images).to(self.defense.device)).float().cpu()
            dist = (adv - x).pow(2).sum(1)
            loss = dist + c * cw_margin(logits, labels).clamp(min=-kappa)
            for opt, cand, value in zip(opts, cands, loss.tolist()):
                opt.tell(cand, value)
            # keep a misclassifying candidate once one is found, even if a correct one has lower loss
            wrong = logits.argmax(1) != labels
            take = (wrong & (dist < best_dist)) | (~found & ~wrong & (loss < best_loss))
            best[take] = adv[take]
            best_dist = torch.where(wrong & take, dist, best_dist)
            best_loss = torch.where(~found & ~wrong & take, loss, best_loss)
            found |= wrong
        return AttackOutput(best.view_as(images), torch.full((n,), budget, dtype=torch.long))
