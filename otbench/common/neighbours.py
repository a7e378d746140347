"""Exact K nearest training inputs in l2, batched.

The answer is defined as: the first k training points by (float64 squared distance computed as
`((x - p)^2).sum()`, training index). Every path below returns exactly that.

Distances come from one float32 matrix product per batch (fast on CPU and GPU); the best K + margin
candidates are then re-ranked in float64, and a row is accepted only if the float32 error bound proves
no point outside the candidates can be closer. Rows that fail the proof (near-equidistant points, as in
high-dimensional Gaussian data) are re-ranked in float64 over every point whose float32 distance is within
the error bound of the K-th candidate distance, a set the same bound proves to hold the true K nearest; so
the answer is exact, not approximately nearest. Ties are broken by training index.

Incremental search (on by default; `incremental_search(False)` or OTBENCH_KNN_INCREMENTAL=0 turn it off, with
identical results): a query row that differs from a recently searched row in few coordinates takes its
candidates from that row's distance vector updated over the changed coordinates (otbench.common.
neighbour_cache), with the same float64 re-ranking and a certificate from the update's rigorous error bound;
rows it cannot certify go through the search above.
"""
from __future__ import annotations

import os
from collections import Counter
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch

from .neighbour_cache import _U64, QueryCache, _gamma

_U32 = 2.0 ** -24  # unit roundoff of float32
_ENABLED = os.environ.get("OTBENCH_KNN_INCREMENTAL", "1") != "0"
CACHE_ROWS = int(os.environ.get("OTBENCH_KNN_CACHE_ROWS", "1024"))


@contextmanager
def incremental_search(enabled: bool) -> Iterator[None]:
    """Turn the incremental search on or off for every ExactKNN inside the block (results are identical
    either way: a switch for tests and benchmarks, not part of any defense's configuration)."""
    global _ENABLED
    before, _ENABLED = _ENABLED, enabled
    try:
        yield
    finally:
        _ENABLED = before


def _exact_sq(x64: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """The defining float64 squared distances: x64 (..., d) float64 against pts (..., m, d) -> (..., m).
    (p - x)^2 is (x - p)^2 exactly (negation is exact); squared in place to spare one temporary."""
    diff, x = pts.double(), x64[..., None, :]
    diff = diff.sub_(x) if torch.broadcast_shapes(diff.shape, x.shape) == diff.shape else diff - x
    return diff.mul_(diff).sum(-1)


def _slack(kth: torch.Tensor, d: int) -> torch.Tensor:
    """A point whose true squared distance exceeds kth + _slack has a float64 distance (_exact_sq, a d-term
    sum of rounded squares: relative error <= gamma_{d+2}) above kth; and a point whose float64 distance is
    <= kth has a true one below kth + _slack."""
    return kth * 4 * _gamma(d + 2) + 1e-12


def _smallest(values: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The r smallest entries of each column of values (N, b), ascending: values and indices, (r, b) each (ties in
    any order). On the CPU numpy's partition then a sort of the r is about twice as fast as topk for r in the
    thousands."""
    if values.device.type != "cpu" or r >= len(values):
        return values.topk(r, dim=0, largest=False, sorted=True)
    a = values.T.contiguous().numpy()
    part = np.argpartition(a, r - 1, axis=1)[:, :r]
    val = np.take_along_axis(a, part, 1)
    order = np.argsort(val, axis=1, kind="stable")
    return (torch.from_numpy(np.take_along_axis(val, order, 1).T.copy()),
            torch.from_numpy(np.take_along_axis(part, order, 1).T.copy()))


def _new_chain(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The entries of rows that start a chain: no update yet, no bank yet (built when first used)."""
    zeros = torch.zeros(len(x), dtype=torch.long, device=x.device)
    return {"chain": zeros, "bank": zeros - 1, "bank_gen": zeros}


class ExactKNN:
    def __init__(self, points: torch.Tensor, margin: int = 16, block: int = 256, cache_rows: int | None = None,
                 incremental_margin: int = 4,
                 shortlist: int = 512, max_changed: int | None = None, max_chain: int = 1024,
                 tiny: float = 1e-4, reserve: int = 2048, banks: int = 128, prefetch: int = 16,
                 prefetch_room: float = 1.2) -> None:
        self.points = points.flatten(1).float().contiguous()  # (N, d)
        self.sq_norms = self.points.double().pow(2).sum(1)
        self.sq_norms32 = self.sq_norms.float()
        self.margin, self.block = margin, block
        # Candidates beyond k for a row derived from a cached one: its updated distances are float64 and off by
        # `err` (tiny), not float32's bound, so a few suffice; near-ties fall to the whole shortlist ("wide")
        self.incremental_margin = incremental_margin
        # Up to `prefetch` parents whose children's floors are within `prefetch_room` times their K-th distance
        # join a batch's full search and become roots (speed only: every answer is proved either way)
        self.prefetch, self.prefetch_room = prefetch, prefetch_room
        self.fallbacks = 0  # rows the certificate could not settle (for diagnostics)
        d = self.points.shape[1]
        self.cache = QueryCache(self.points, CACHE_ROWS if cache_rows is None else cache_rows, shortlist,
                                max(1, d // 4) if max_changed is None else max_changed, max_chain, tiny, reserve,
                                banks)
        # rows answered incrementally / by the full search / by the full search after the incremental
        # certificate failed (a subset of full)
        self.counts: Counter[str] = Counter()

    def search(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Indices (B, k) of the k nearest points to each row of x, nearest first."""
        x = x.flatten(1)
        cached = _ENABLED and x.dtype == torch.float32 and k + self.margin < self.points.shape[0]
        step = self._search_cached if cached else lambda xb, k: self._search_block(xb, k)[0]
        return torch.cat([step(x[i:i + self.block], k) for i in range(0, len(x), self.block)])

    def _rerank(self, x: torch.Tensor, cand: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first k of the candidates (b, m) by (float64 distance, index), and the k-th distance."""
        exact = _exact_sq(x.double(), self.points[cand])  # (b, m)
        # Stable sort on (distance, index): identical training images tie deterministically.
        order = torch.argsort(cand, dim=1)
        cand, exact = cand.gather(1, order), exact.gather(1, order)
        rank = torch.argsort(exact, dim=1, stable=True)
        return cand.gather(1, rank[:, :k]), exact.gather(1, rank[:, k - 1:k]).squeeze(1)

    def _search_cached(self, x: torch.Tensor, k: int) -> torch.Tensor:
        cache, m = self.cache, k + self.margin
        idx = torch.empty(len(x), k, dtype=torch.long, device=x.device)
        slot, mask = cache.parents(x)
        rows = (slot >= 0).nonzero().flatten()
        full = (slot < 0).nonzero().flatten()
        extra = full[:0]  # cached rows re-rooted in this batch's full search
        if len(rows) and max(m, k + self.incremental_margin) < cache.shortlist:
            got, ok, entry, room = self._from_parents(x[rows], slot[rows], mask[rows], k)
            fail = (~ok).nonzero().flatten()
            first = (x[rows], rows, got, ok, entry, mask[rows], room)
            fresh = cache.slots["chain"][slot[rows[fail]]] == 0  # parents already at a chain's root
            stale = fail[~fresh]
            if len(stale) and cache.reserve > cache.shortlist:
                # The parents have drifted from their chains' roots (an attack keeps coming back to the row it
                # keeps): re-root them from their reserves, then derive the rows again
                self._reroot(slot[rows[stale]].unique())
                got, ok, entry, _ = self._from_parents(x[rows[stale]], slot[rows[stale]], mask[rows[stale]], k)
                self._keep(x[rows[stale]], idx, rows[stale], got, ok, entry, mask[rows[stale]])
                fail = torch.cat([fail[fresh], stale[~ok]])
            self.counts["uncertified"] += len(fail)
            full = torch.cat([full, rows[fail]])
            xr, rr, got, ok, entry, mr, room = first
            self._keep(xr, idx, rr, got, ok, entry, mr)
            if len(full) and self.prefetch:
                # A full search runs for this batch anyway, and a few more rows cost it little next to a pass of
                # their own. The parents whose children's proofs have little room left (the row an attack keeps
                # and perturbs again and again, on a chain drifted far from its root) are searched in it too and
                # become roots in place, so their next children are proved from a root beside them.
                risky = (ok & (room < self.prefetch_room)).nonzero().flatten()
                risky = risky[room[risky].argsort()]
                urgent = slot[rr[risky]]
                urgent = urgent[cache.slots["chain"][urgent] > 0].tolist()  # chains, not roots; most urgent first
                extra = torch.tensor(list(dict.fromkeys(urgent))[:self.prefetch], dtype=torch.long, device=x.device)
        elif len(rows):
            full = torch.arange(len(x), device=x.device)
        if len(full):
            xs = torch.cat([x[full], cache.slots["row"][extra]]) if len(extra) else x[full]
            got, nearest, xn, bound = self._search_block(xs, k, cache.reserve)
            idx[full] = got[:len(full)]
            self.counts["full"] += len(full)
            roots = self._root(xs, nearest, xn, bound)
            cache.insert({key: value[:len(full)] for key, value in roots.items()})
            for key, value in roots.items():
                cache.slots[key][extra] = value[len(full):]
            self.counts["prefetched"] += len(extra)
        return idx

    def _from_parents(self, x: torch.Tensor, slot: torch.Tensor, mask: torch.Tensor, k: int):
        """The answers (b, k) of rows derived from cached parents, which of them are certified, and their
        cache entries."""
        d, m = x.shape[1], k + self.incremental_margin
        entry = self.cache.advance(x, slot, mask)
        near, pos = entry["dist"].topk(m, dim=1, largest=False, sorted=True)
        got, kth = self._rerank(x, entry["idx"].gather(1, pos), k)
        # Certificate: every shortlisted point outside the candidates has an updated distance >= near[:, -1],
        # so a true one >= near[:, -1] - err, and every other point a true one >= floor: both above
        # kth + slack, their float64 distances are above the k-th's
        bar = kth + _slack(kth, d)
        floor_ok = entry["floor"] > bar
        ok = floor_ok & (near[:, -1] - entry["err"] > bar)
        wide = (floor_ok & ~ok).nonzero().flatten()
        if len(wide):  # the floor holds but the candidates do not: re-rank the whole shortlist
            got[wide], kth[wide] = self._rerank(x[wide], entry["idx"][wide], k)
            ok[wide] = entry["floor"][wide] > kth[wide] + _slack(kth[wide], d)
            self.counts["wide"] += len(wide)
        # how much room the proof has left: the floor over the K-th distance it must stay above
        return got, ok, entry, entry["floor"] / bar

    def _keep(self, x, idx, rows, got, ok, entry, mask) -> None:
        idx[rows[ok]] = got[ok]
        new = ok & mask.any(1)  # a row equal to its parent is cached already
        self.cache.insert({key: value[new] for key, value in entry.items()})
        self.counts["incremental"] += int(ok.sum())

    def _reroot(self, slots: torch.Tensor) -> None:
        """Make the cached rows in `slots` roots of new chains, from their distances to their reserves."""
        slots = slots[self.cache.slots["chain"][slots] > 0]
        entry = {key: t[slots] for key, t in self.cache.slots.items()}
        fresh = self._refresh(entry["row"], entry)
        for key, value in fresh.items():
            self.cache.slots[key][slots] = value
        self.counts["rerooted"] += len(slots)

    def _refresh(self, x: torch.Tensor, entry: dict) -> dict:
        """New chains rooted at the cached rows x (their entries `entry`): their float64 distances to their
        chain's reserve rank it, the nearest become the shortlist, and the floors bound the rest."""
        cache, d, s = self.cache, x.shape[1], self.cache.shortlist
        dist = torch.cat([_exact_sq(x[i:i + 1].double(), self.points[entry["reserve"][i:i + 1]])
                          for i in range(len(x))])  # one row at a time: (reserve, d) float64 each
        order = torch.argsort(entry["reserve"], dim=1)  # ranked by (distance, index)
        far, dist = entry["reserve"].gather(1, order), dist.gather(1, order)
        rank = torch.argsort(dist, dim=1, stable=True)
        far, dist = far.gather(1, rank), dist.gather(1, rank)
        # every point off the reserve: at least the reserve's floor from the root, so at least `off` from x
        off = cache.floor_from(entry["root"], x, entry["reserve_floor"])
        g = _gamma(d + 2)  # |float64 distance - true| <= g * true
        floor = torch.minimum(dist[:, s] * (1 - 4 * g), off) if s < cache.reserve else off
        top = dist[:, :s]
        return {"row": x, "root": x, "idx": far[:, :s].contiguous(), "dist": top, "err": 4 * g * top.amax(1) + 1e-300,
                "floor": floor, "root_floor": floor, "reserve": far, "reserve_floor": off, **_new_chain(x)}

    def _root(self, x: torch.Tensor, nearest: tuple[torch.Tensor, torch.Tensor], xn: torch.Tensor,
              bound: torch.Tensor) -> dict:
        """Cache entries starting a chain at rows searched by brute force: the shortlist of the points nearest
        by float32 distance (`nearest`: the reserve's ranking values and indices, (reserve, b) each), the float64
        sum value + |x|^2 with its error bound (the float32 bound plus the rounding of |x|^2's float64 sum and of
        the addition, far below it) and the floor."""
        s, n = self.cache.shortlist, self.points.shape[0]
        val, near = (t[:self.cache.reserve] for t in nearest)
        dist = val.T.double() + xn[:, None]
        err = bound + _gamma(x.shape[1] + 2) * xn + 2 * _U64 * (dist.abs().amax(1) + 1)
        # every other point has a float32 value >= the largest listed one
        inf = torch.full_like(err, float("inf"))
        floor = dist[:, s - 1] - err if s < n else inf
        far_floor = dist[:, -1] - err if self.cache.reserve < n else inf
        return {"row": x, "root": x, "idx": near.T[:, :s].contiguous(), "dist": dist[:, :s].contiguous(),
                "err": err, "floor": floor, "root_floor": floor, "reserve": near.T.contiguous(),
                "reserve_floor": far_floor, **_new_chain(x)}

    def _search_block(self, x: torch.Tensor, k: int, reserve: int = 0):
        """The indices (b, k); for the cache, the `reserve` smallest float32 ranking values (|p|^2 - 2 <p, x>) and
        their indices ((reserve, b) each; None when reserve is 0), |x|^2 in float64 (b,) and the values' error
        bound (b,)."""
        d = x.shape[1]
        xn = x.double().pow(2).sum(1)
        # |p|^2 - 2 <p, x> ranks the points like the distance (|x|^2 is constant per query). Computed as
        # (N, b) = points @ x^T: on a CPU this orientation is the faster one for small query batches.
        approx = torch.addmm(self.sq_norms32[:, None], self.points, x.float().T, alpha=-2.0)
        # Bound on |float32 distance - true distance| for any point: d*u*(|x|^2 + max|p|^2) scaled by 4.
        bound = 4 * d * _U32 * (xn + self.sq_norms.max())
        m = min(k + self.margin, self.points.shape[0])
        # the candidates: the first m of the reserve when there is one (both are the smallest, ascending)
        nearest = _smallest(approx, max(reserve, m)) if reserve else None
        cand_d32, cand = (nearest[0][:m], nearest[1][:m]) if reserve else approx.topk(m, dim=0, largest=False, sorted=True)
        cand, cand_d32 = cand.T, cand_d32.T + xn.float()[:, None]
        idx, kth = self._rerank(x, cand, k)
        if m == self.points.shape[0]:
            return idx, nearest, xn, bound
        worst_outside = cand_d32.max(1).values.double()  # every non-candidate has float32 distance >= this
        unproved = worst_outside - bound <= kth + _slack(kth, d)
        if unproved.any():
            self.fallbacks += int(unproved.sum())
            rows = unproved.nonzero().flatten()
            # a point of the answer has float64 distance <= kth (the K-th over a subset is >= the true K-th),
            # so a true one < kth + slack and a float32 one <= kth + slack + bound: re-rank all such points
            limit = (kth[rows] + _slack(kth[rows], d) + bound[rows] - xn[rows]).float()
            band = (approx[:, rows].T <= (limit + limit.abs() * 4 * _U32)[:, None]).contiguous()  # + rounding
            counts = band.sum(1).tolist()
            hits = band.nonzero()[:, 1].split(counts)  # per row, in increasing training index
            for j, r in enumerate(rows.tolist()):
                near = hits[j]
                if len(near) < k or len(near) > self.points.shape[0] // 4:
                    idx[r] = self._exact_rows(x[r:r + 1], k)[0]
                    continue
                dist = _exact_sq(x[r].double(), self.points[near])
                idx[r] = near[torch.argsort(dist, stable=True)[:k]]
        return idx, nearest, xn, bound

    def _exact_rows(self, x: torch.Tensor, k: int, chunk: int = 4096) -> torch.Tensor:
        # the defining float64 distances to every point, by chunks of points (memory stays bounded)
        x64 = x.double()
        dist = torch.cat([_exact_sq(x64, self.points[i:i + chunk]) for i in range(0, len(self.points), chunk)], 1)
        # lexsort by (distance, index): argsort is stable, and indices are already in increasing order
        return torch.argsort(dist, dim=1, stable=True)[:, :k]
