"""What the label-only (decision-based) attacks run through ART share: HopSkipJump, Sign-OPT, GeoDA.

These are minimum-norm attacks: they look for the smallest adversarial perturbation they can find, not for
one within eps. ART runs them one sample at a time on a query-only estimator (`DefenseBlackBox`, also for a
differentiable defense: label-only attacks never see gradients), and every query passes through a
`QueryLog`, which
  - counts the rows the defense is asked about, and stops the attack (`BudgetSpent`) once the sample's
    `max_queries` are spent: ART's own limits are per iteration, and some of its loops are unbounded;
  - keeps the misclassified input (in the input domain) of smallest norm among everything queried, and
    the query at which each improvement came. ART's own output is one of the inputs it queried, so this is
    never worse, and it survives a stop on the budget.
At eps the attack returns that input where its norm is <= eps, else the clean input (so a cell's robust
accuracy is the share of samples whose smallest adversarial found is larger than eps). Its queries are
those spent up to the first misclassified input within eps (Square's "queries to success"), else all spent.

The search never reads eps, so one search serves every eps: `MEMO` returns a sample's search to the next
cell that asks for the same (defense identity, attack, settings, seed, position, sample, label). It is
exact: every sample's search draws from its own random stream seeded by (seed, position in the batch),
so a fresh run computes the same thing.
"""
from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from ..config import config_hash
from ..errors import OTBenchError
from ..guard import perturbation_norms
from .base import Attack, AttackOutput

ART_BATCH = 256  # rows per estimator call; the rows queried, and so the results, do not depend on it
MEMO_FLOATS = 20_000_000  # the memo holds at most this many input values (80 MB), oldest dropped first


class BudgetSpent(Exception):
    """Raised through ART when a sample's query budget is spent."""


@dataclass
class Search:
    """One sample's minimum-norm search: the best input found and when each improvement came."""

    best: torch.Tensor | None  # smallest-norm misclassified input queried (C, H, W); None if none
    trajectory: list[tuple[int, float]] = field(default_factory=list)  # (query number, norm), norms falling
    used: int = 0  # queries spent in all

    def at(self, x: torch.Tensor, eps: float) -> tuple[torch.Tensor, int]:
        """The input to return at eps and the queries it took."""
        for query, norm in self.trajectory:
            if norm <= eps:
                return self.best, query  # the best has the smallest norm, so it is within eps too
        return x, self.used


class QueryLog:
    """The score function ART queries for one sample: counts rows, enforces the budget, keeps the best."""

    def __init__(self, defense, x: torch.Tensor, label: int, norm: str, budget: int) -> None:
        self.defense, self.x, self.label, self.norm, self.budget = defense, x, label, norm, budget
        self.domain = defense.data.domain
        self.search = Search(None)

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        s = self.search
        if s.used >= self.budget:
            raise BudgetSpent
        take = rows[: self.budget - s.used]
        with torch.no_grad():
            logits = self.defense.logits(take.to(self.defense.device))
        self.record(take.detach().float().cpu(), logits.argmax(1).cpu())
        if len(take) < len(rows):
            raise BudgetSpent
        return logits

    def record(self, rows: torch.Tensor, pred: torch.Tensor) -> None:
        s, start = self.search, self.search.used
        s.used += len(rows)
        ok = pred != self.label
        if self.domain is not None:
            flat = rows.flatten(1)
            ok &= (flat >= self.domain[0]).all(1) & (flat <= self.domain[1]).all(1)
        if not ok.any():
            return
        norms = perturbation_norms(self.x.expand_as(rows), rows, self.norm)
        norms = torch.where(ok, norms, torch.full_like(norms, math.inf))
        best = s.trajectory[-1][1] if s.trajectory else math.inf
        before = torch.cat([torch.tensor([best], dtype=norms.dtype), norms[:-1]]).cummin(0).values
        for i in (norms < before).nonzero().flatten().tolist():  # each improvement, in query order
            s.trajectory.append((start + i + 1, float(norms[i])))
            s.best = rows[i].clone()

    def query(self, rows: torch.Tensor) -> torch.Tensor:
        """Predicted labels of rows, counted like ART's queries (for the attacks' own initialisation)."""
        return self(rows).argmax(1).cpu()


class _Memo:
    def __init__(self) -> None:
        self.items: OrderedDict[str, Search] = OrderedDict()
        self.floats = 0

    def get(self, key: str) -> Search | None:
        return self.items.get(key)

    def put(self, key: str, search: Search) -> None:
        self.items[key] = search
        self.floats += 0 if search.best is None else search.best.numel()
        while self.floats > MEMO_FLOATS and self.items:
            _, old = self.items.popitem(last=False)
            self.floats -= 0 if old.best is None else old.best.numel()

    def clear(self) -> None:
        self.items.clear()
        self.floats = 0


MEMO = _Memo()


def sample_key(x: torch.Tensor) -> str:
    return hashlib.sha256(np.ascontiguousarray(x.float().cpu().numpy()).tobytes()).hexdigest()[:32]


def norm_order(norm: str) -> float:
    return 2 if norm == "L2" else np.inf


class LabelOnlyAttack(Attack):
    """A minimum-norm label-only ART attack, one sample at a time (see the module docstring)."""

    needs = "labels"
    eps_meaning = ("radius of the norm ball: the smallest adversarial input found is returned when within eps, "
                   "else the clean input; inputs in [0, 1]")
    default_eps: ClassVar[tuple[float, ...]] = (2.0, 2.5, 3.0)
    min_queries: ClassVar[int] = 1
    minimum_norm = True  # the search never reads eps; the best within eps is returned (otbench.curves)

    def __init__(self, defense, eps: float, **config: Any) -> None:
        super().__init__(defense, eps, **config)
        if getattr(defense, "data", None) is None:
            raise OTBenchError(f"{self.name} needs the defense's dataset (input shape, classes, domain)")
        self.check_against_defense()

    @classmethod
    def check_settings(cls, config: dict[str, Any], eps: float) -> None:
        cls.require_int(config, "max_queries", low=cls.min_queries)

    def check_against_defense(self) -> None:
        """Subclasses refuse settings the defense's data cannot serve (one line naming the valid choices)."""

    def run_art(self, est: Any, x: np.ndarray, y: int, log: QueryLog, rng: np.random.Generator
                ) -> None:
        """Run the ART attack on one sample (x: (1, C, H, W)); its queries go through `log`."""
        raise NotImplementedError

    def run(self, images: torch.Tensor, labels: torch.Tensor, seed: int) -> AttackOutput:
        adv, queries = images.clone(), torch.zeros(len(images), dtype=torch.long)
        prefix = config_hash([self.defense.identity, self.name, self.config], 24)
        for i in range(len(images)):
            x, y = images[i].float().cpu(), int(labels[i])
            key = f"{prefix}:{seed}:{i}:{y}:{sample_key(x)}"
            search = MEMO.get(key)
            if search is None:
                search = self.search(x, y, np.random.SeedSequence([seed, i]))
                MEMO.put(key, search)
            out, queries[i] = search.at(x, self.eps)
            adv[i] = out.to(images.dtype)
        return AttackOutput(adv, queries)

    def search(self, x: torch.Tensor, y: int, seeds: np.random.SeedSequence) -> Search:
        log = QueryLog(self.defense, x, y, self.norm, self.config["max_queries"])
        if log.query(x[None])[0] != y:  # already misclassified: nothing to search
            return log.search
        from ..interfaces.art import DefenseBlackBox  # here, not at import: ART takes a while to load

        est = DefenseBlackBox(self.defense, batch_size=ART_BATCH, score_fn=log)
        own, art = seeds.spawn(2)
        state = np.random.get_state()  # ART draws from numpy's global generator: seed it, then restore it
        np.random.seed(art.generate_state(4))
        try:
            self.run_art(est, x[None].numpy(), y, log, np.random.default_rng(own))
        except BudgetSpent:
            pass
        finally:
            np.random.set_state(state)
        return log.search
