"""OTAD's test-time CIP step with its exact memos, shared by `otad`, `otad-regression` and `otad-t`.

An attack queries one sample thousands of times, and its successive queries almost always keep the same K
neighbours. Everything of the CIP that involves only the neighbours is therefore computed once per neighbour
list and reused: the relaxation step of Algorithm 2 and the Gram matrices, means and pair terms of
cip.neighbourhood, per neighbour set. Both memos are exact: a reused value is the value a
fresh computation gives, bit for bit (cip.neighbourhood computes each row on its own), so a memo changes how
long a query takes, never its answer.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import replace
from typing import Any, Callable, ContextManager

import numpy as np
import torch

from .cip import CIPResult, Neighbourhood, first_feasible_step, neighbourhood, solve_cip

MAX_STEPS = 2000  # Algorithm 2's loop has no bound; this one is far above the ~200 seen on MNIST
MEMO_BYTES = 128 * 2 ** 20  # the neighbourhood memo's storage, whatever d is


class StepCache:
    """Memo of Algorithm 2's first feasible relaxation step per neighbour set.

    Eq. 15 involves only the neighbours (X, Z), never the test point, so the step is a function of the
    (unordered) neighbour set. An attack's successive queries of one sample almost always keep the same
    neighbours, so this exact memo removes the feasibility search from nearly every query."""

    def __init__(self, max_entries: int = 1_000_000) -> None:
        self._steps: dict[bytes, int] = {}
        self.max_entries = max_entries
        self.hits = self.misses = 0

    def lookup(self, keys: list[bytes]) -> list[int]:
        """The step of each neighbour set (`set_keys`), -1 where the set has not been seen."""
        found = [self._steps.get(k, -1) for k in keys]
        n_hit = sum(v >= 0 for v in found)
        self.hits, self.misses = self.hits + n_hit, self.misses + len(found) - n_hit
        return found

    def store(self, keys: list[bytes], steps: list[int]) -> None:
        if len(self._steps) > self.max_entries:
            self._steps.clear()  # a memo, not a store: dropping it only costs recomputation
        self._steps.update(zip(keys, steps))


def set_keys(idx: torch.Tensor) -> list[bytes]:
    """One key per row of neighbour indices (B, K) in training-index order: the neighbour set, as both memos key it."""
    return [row.tobytes() for row in idx.cpu().numpy().astype(np.int64)]


class NeighbourhoodMemo:
    """cip.neighbourhood per neighbour list (CIPStep passes each in training-index order), in preallocated slots:
    at most MEMO_BYTES (MNIST, K = 10: about 20 KB a list, 6,000 lists); when full it starts over."""

    def __init__(self, max_bytes: int = MEMO_BYTES) -> None:
        self.max_bytes = max_bytes
        self.slots: dict[bytes, int] = {}
        self.table: Neighbourhood | None = None
        self.hits = self.misses = 0

    def get(self, keys: list[bytes], X: torch.Tensor, Z: torch.Tensor) -> Neighbourhood:
        """cip.neighbourhood(X, Z) for neighbour sets `keys` (set_keys), from the memo where it holds them."""
        miss = [i for i, k in enumerate(keys) if k not in self.slots]
        self.hits, self.misses = self.hits + len(keys) - len(miss), self.misses + len(miss)
        if miss:
            new = {keys[i]: i for i in miss}  # a list repeated in the batch is stored once
            if self.table is None or len(self.slots) + len(new) > len(self.table.xbar):
                self.slots = {}  # full: start over with this batch's lists alone
                new = {k: i for i, k in enumerate(keys)}
            rows = list(new.values())
            fresh = neighbourhood(X[rows], Z[rows])
            if self.table is None or len(new) > len(self.table.xbar):
                self._allocate(fresh, len(new))
            start = len(self.slots)
            where = torch.arange(start, start + len(new), device=X.device)
            for name in ("xbar", "zbar", "gram", "pairs"):
                getattr(self.table, name)[where] = getattr(fresh, name)
            self.slots.update(zip(new, range(start, start + len(new))))
        return self.table[torch.tensor([self.slots[k] for k in keys], device=X.device)]

    def _allocate(self, like: Neighbourhood, need: int) -> None:
        per_row = sum(t[0].numel() * t.element_size() for t in (like.xbar, like.zbar, like.gram, like.pairs))
        n = max(need, self.max_bytes // per_row)
        self.table = Neighbourhood(*(t.new_empty((n, *t.shape[1:])) for t in (like.xbar, like.zbar, like.gram,
                                                                              like.pairs)))


class CIPStep:
    """OTAD's exact CIP step with both memos. `timer(stage)` (a defense's) times the relaxation search and the
    rest apart; `memo=False` computes every neighbourhood afresh (the memo's tests and benchmarks)."""

    def __init__(self, cfg: dict[str, Any], timer: Callable[[str], ContextManager] | None = None,
                 memo: bool = True) -> None:
        self.cfg = cfg
        self.timer = timer or (lambda stage: nullcontext())
        self.memo = memo
        self.reset()

    def reset(self) -> None:
        """Forget every memoised neighbourhood (e.g. to time a sample's full cost)."""
        self.steps_cache, self.neighbourhoods = StepCache(), NeighbourhoodMemo()

    def __call__(self, x: torch.Tensor, X: torch.Tensor, Z: torch.Tensor, idx: torch.Tensor) -> CIPResult:
        """The CIP step for x (B, d) with neighbours X, Z (B, K, d), their training indices idx (B, K).

        The neighbours are put in training-index order first (callers that gather them in that order skip the
        copy): the CIP is symmetric in its neighbours, and this makes its answer, to the last bit, a function of
        the neighbour set, which both memos are keyed on. The potentials come back in the caller's order."""
        order = idx.argsort(1)
        if bool((order == torch.arange(idx.shape[1], device=idx.device)).all()):
            return self._solve(x, X, Z, idx)
        res = self._solve(x, *(torch.take_along_dim(t, order[..., None], 1) for t in (X, Z)), idx.gather(1, order))
        # the potentials back in the caller's order of the neighbours
        return replace(res, potentials=res.potentials.new_empty(res.potentials.shape).scatter_(1, order, res.potentials))

    def _solve(self, x: torch.Tensor, X: torch.Tensor, Z: torch.Tensor, idx: torch.Tensor) -> CIPResult:
        cfg = self.cfg
        X, Z = X.double(), Z.double()
        keys = set_keys(idx)
        with self.timer("relaxation search"):
            steps = torch.tensor(self.steps_cache.lookup(keys), dtype=torch.long, device=X.device)
            miss = (steps < 0).nonzero().flatten()
            if len(miss):
                steps[miss] = first_feasible_step(X[miss], Z[miss], cfg["L"], cfg["l"], cfg["delta1"],
                                                  cfg["delta2"], MAX_STEPS)
                self.steps_cache.store([keys[i] for i in miss.tolist()], steps[miss].tolist())
        with self.timer("cip"):
            nb = self.neighbourhoods.get(keys, X, Z) if self.memo and not (X.requires_grad or Z.requires_grad) else None
            return solve_cip(x.double(), X, Z, L=cfg["L"], l=cfg["l"], delta1=cfg["delta1"], delta2=cfg["delta2"],
                             formulation=cfg["formulation"], potentials=cfg["potentials"], max_steps=MAX_STEPS,
                             steps=steps, nb=nb)
