"""Recent query rows and their squared distances to a shortlist of training points, for ExactKNN's
incremental search.

A score-based attack's next query differs from an earlier one in a few coordinates (Square: two small
windows). Its squared distances to training points then follow from the earlier row's in O(changed
coordinates) per point instead of O(d):
    d2_new[n] = d2_old[n] + sum over changed k of (a_k^2 - b_k^2) - 2 X[n, k] (a_k - b_k),
a = new row, b = old row. A chain starts at a row searched by brute force (its root): the `shortlist` points
nearest to the root by the brute-force float32 distances, with those distances and a lower bound (the floor) on
the true squared distance of every other point. A row derived from a cached one keeps its shortlist, updates
its distances over the changed coordinates (float64), and carries two rigorous floors for the points off the
shortlist: the parent's floor plus the least the change can lower any point's distance (each coordinate's
term is linear in X[n, k], so its minimum over the training points' range of that coordinate bounds it), and
the triangle inequality from the root, (sqrt(root floor) - |x - root|)^2. Every stored distance carries a
rigorous bound on |stored - true|: the float32 bound of the brute-force search plus the float64 rounding of
every update since. ExactKNN uses these only to choose and certify candidates; they never decide an answer.

The update reads, per row, its changed coordinates of its shortlisted points. Those come from a bank: a chain's
shortlisted points transposed (d x shortlist float64), so one coordinate's values over the shortlist are one
contiguous run. A bank is built (from the row-major points: shortlist rows of d contiguous values) the first
time a row of the chain is a parent, and shared by the chain's rows after it; a gather from all N points per
coordinate would instead miss the cache on every point (it cost more than the brute-force search it replaces).

Memory: capacity x (shortlist x 16 + reserve x 8 + d x 8 + SKETCH x 4) bytes (1024 rows x (512 x 16 + 2048 x 8 +
784 x 8 + 64 x 4) = 31 MB) plus banks x d x shortlist x 8 bytes, the banks held in float64 (the update's precision,
so no conversion per query) and as many as fit in BANK_BYTES, at most `banks` (MNIST: 128 x 784 x 512 x 8 = 392 MiB;
a 16,384-dimensional token space: 7), allocated on first use; least recently used rows and banks are evicted (a row
whose bank was evicted rebuilds one when used; rows beyond the banks read the points directly, more slowly).
"""
from __future__ import annotations

import warnings

import torch

_U64 = 2.0 ** -53  # unit roundoff of float64
SKETCH = 64  # dimensions of the random projection the parent search compares rows in
BANK_BYTES = 512 * 2 ** 20  # the most the banks may take, whatever d is


def _gamma(n: int) -> float:
    """Higham's gamma_n = n u / (1 - n u): the relative error bound of an n-term float64 sum or dot product."""
    return n * _U64 / (1 - n * _U64)


class QueryCache:
    def __init__(self, points: torch.Tensor, capacity: int, shortlist: int, max_changed: int,
                 max_chain: int, tiny: float, reserve: int = 2048, banks: int = 128) -> None:
        self.points = points  # (N, d) float32, ExactKNN's
        self.capacity, self.max_changed, self.max_chain, self.tiny = capacity, max_changed, max_chain, tiny
        self.shortlist = min(shortlist, len(points))
        self.reserve = min(max(reserve, self.shortlist), len(points))
        self.col_min = points.amin(0).double()  # the range of each coordinate over the training points
        self.col_max = points.amax(0).double()
        self.xmax = torch.maximum(self.col_max.abs(), self.col_min.abs())  # max_n |X[n, k]|
        self.n_banks = max(1, min(banks, BANK_BYTES // (points.shape[1] * self.shortlist * 8)))
        # fixed, so that which parent a row gets (speed only, never the answer) is reproducible
        g = torch.Generator().manual_seed(0)
        self.projection = (torch.randn(points.shape[1], SKETCH, generator=g) / SKETCH ** 0.5).to(points.device)
        self.banks: torch.Tensor | None = None  # (banks, d, shortlist) float64: a chain's points, transposed
        self.slots: dict[str, torch.Tensor] = {}  # per slot: see _allocate
        self.clock = 0

    def nbytes(self) -> int:
        parts = [*self.slots.values()] + ([] if self.banks is None else [self.banks, self.bank_stamp, self.bank_gen])
        return sum(t.numel() * t.element_size() for t in parts)

    def _allocate(self) -> None:
        n, d = self.points.shape
        dev, c, s = self.points.device, self.capacity, self.shortlist
        f64, long = torch.float64, torch.long
        self.banks = torch.zeros(self.n_banks, d, s, dtype=f64, device=dev)
        self.bank_stamp = torch.full((self.n_banks,), -1, dtype=long, device=dev)  # last use; -1: never
        self.bank_gen = torch.zeros(self.n_banks, dtype=long, device=dev)  # bumped when a bank is rebuilt
        self.slots = {
            "row": torch.zeros(c, d, device=dev),  # the query (float32)
            # the parent search's sketch of the row (a random projection) and its squared norm (inf: empty slot)
            "sketch": torch.zeros(c, self.projection.shape[1], device=dev),
            "sketch_sq": torch.full((c,), float("inf"), device=dev),
            "root": torch.zeros(c, d, device=dev),  # the chain's root
            "idx": torch.zeros(c, s, dtype=long, device=dev),  # the shortlist (training indices)
            "dist": torch.zeros(c, s, dtype=f64, device=dev),  # squared distances to the shortlist
            "err": torch.zeros(c, dtype=f64, device=dev),  # bound on |dist - true|
            "floor": torch.zeros(c, dtype=f64, device=dev),  # true squared distance of any point off the list >=
            "root_floor": torch.zeros(c, dtype=f64, device=dev),  # the same from the root
            # the root's `reserve` nearest points (by float32 distance) and a floor, from the root, for the others:
            # when a row's floor fails, its distances to the reserve give it a new shortlist (ExactKNN._refresh)
            "reserve": torch.zeros(c, self.reserve, dtype=long, device=dev),
            "reserve_floor": torch.zeros(c, dtype=f64, device=dev),
            "chain": torch.zeros(c, dtype=long, device=dev),  # updates since the root
            # the bank holding the shortlist's coordinates (-1: none yet), valid while bank_gen[bank] == bank_gen
            "bank": torch.full((c,), -1, dtype=long, device=dev),
            "bank_gen": torch.zeros(c, dtype=long, device=dev),
            "stamp": torch.full((c,), -1, dtype=long, device=dev),  # last use; -1: empty slot
        }

    def parents(self, x: torch.Tensor, candidates: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
        """For each row of x (b, d) float32: the cached slot it differs from in the fewest coordinates among
        its `candidates` nearest cached rows in l2 (-1 where none may be updated: cache empty, too many changed
        coordinates, chain too long), and the mask (b, d) of coordinates that differ from it. Which parent
        is chosen only affects speed: the answer is certified whatever the parent."""
        none = torch.full((len(x),), -1, dtype=torch.long, device=x.device)
        if not self.slots or not bool((self.slots["stamp"] >= 0).any()):
            return none, torch.zeros(len(x), x.shape[1], dtype=torch.bool, device=x.device)
        rows, stamp = self.slots["row"], self.slots["stamp"]
        # l2 to every cached row, estimated from random projections to SKETCH dimensions (Johnson-Lindenstrauss:
        # a row's own parent, a small change away, stays among its nearest): one (b, C) product of SKETCH-long
        # rows instead of d-long ones (empty slots hold an infinite |sketch|^2)
        d2 = torch.addmm(self.slots["sketch_sq"][None, :], x @ self.projection, self.slots["sketch"].T, alpha=-2.0)
        near = d2.topk(min(candidates, int((stamp >= 0).sum())), dim=1, largest=False).indices  # (b, r) slots
        changed = ((x[:, None, :] - rows[near]).abs() > self.tiny).sum(-1)  # (b, r)
        best = changed.argmin(1, keepdim=True)
        slot, count = near.gather(1, best).squeeze(1), changed.gather(1, best).squeeze(1)
        ok = (count <= self.max_changed) & (self.slots["chain"][slot] < self.max_chain)
        slot = torch.where(ok, slot, none)
        self.clock += 1
        stamp[slot[ok]] = self.clock  # parents stay cached while they are being used
        return slot, (x - rows[slot.clamp(min=0)]).abs() > self.tiny

    def advance(self, x: torch.Tensor, slot: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """The entries of the rows x (b, d) derived from their parents' `slot` (b,): updated exactly over the
        coordinates in `mask` (b, d), and within a bound over the others. Each row has its own changed
        coordinates (a row's parent need not be the row its attack stepped from, and some attacks move each
        sample's window elsewhere): the steps are masked to them (zero elsewhere, so every sum runs over a row's
        own changed coordinates) and the dot products are one sparse product (_dots), so the whole batch is one
        update with no loop over rows.

        Square's L2 step rescales its whole perturbation to norm eps, which moves every perturbed pixel by
        a few ulps: such changes (<= `tiny`) go into the error bound, |(a-X)^2 - (b-X)^2| <= |a-b| (|a|+|b|+2|X|),
        instead of the update."""
        bank = self._bind(slot)
        p = {key: t[slot] for key, t in self.slots.items() if key not in ("sketch", "sketch_sq", "stamp")}
        count = mask.sum(1)
        width = max(int(count.max()), 1) if len(x) else 1
        a, b = x.double(), p["row"].double()
        delta = (a - b) * mask  # the changed coordinates' steps; 0 elsewhere, so every sum below runs over them
        sq = ((a * a + b * b) * mask).sum(1)
        diff_sq = (a * a - b * b) * mask
        c1 = diff_sq.sum(1)
        dots = self._dots(delta, mask, bank, p["idx"])
        dist = p["dist"] + (c1[:, None] - 2 * dots)
        # the changes left out (every coordinate outside the row's mask: tiny or none), rounded up
        left = ((a - b).abs() * (a.abs() + b.abs() + 2 * self.xmax) * ~mask).sum(1)
        left = left * (1 + 2 * _gamma(x.shape[1] + 4)) + 1e-300
        # Rounding of this update (a, b, X exact in float64): the sums of squares and the dot products are
        # <= width-term sums (gamma), delta, the scaling and the two additions each round once more, relative
        # to magnitudes bounded by sq, 2 sum_k max|X_k| |delta_k| and the largest distance involved. A factor
        # 2 covers the bound's own rounding.
        dot_max = 2 * (self.xmax * delta.abs()).sum(1)
        big = dist.abs().amax(1) + p["dist"].abs().amax(1) + p["err"] + 1
        step_err = _gamma(width + 4) * (sq + dot_max) + 3 * _U64 * (sq + dot_max + big)
        # The least this change can lower any point's squared distance: per coordinate, a^2 - b^2 - 2 X delta
        # is linear in X, so its minimum over [min_n X[n, k], max_n X[n, k]] is at an end (unchanged: 0).
        lowest = torch.minimum(diff_sq - 2 * self.col_min * delta, diff_sq - 2 * self.col_max * delta).sum(1)
        box = p["floor"] + lowest - step_err - left
        floor = torch.maximum(box, self.floor_from(p["root"], x, p["root_floor"]))
        return {"row": x, "root": p["root"], "idx": p["idx"], "dist": dist, "err": p["err"] + 2 * step_err + left,
                "floor": floor, "root_floor": p["root_floor"], "reserve": p["reserve"],
                "reserve_floor": p["reserve_floor"], "chain": p["chain"] + 1, "bank": p["bank"],
                "bank_gen": p["bank_gen"]}

    def _dots(self, delta: torch.Tensor, mask: torch.Tensor, bank: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """(b, shortlist) float64: sum over each row's changed coordinates k of delta[k] X[point, k], for the points
        of its shortlist. One sparse (CSR) product of the steps with the banks stacked as (banks x d, shortlist):
        it reads each changed coordinate's run of the bank once and writes nothing else (gathering the runs
        first moved ten times the memory)."""
        n, d = delta.shape
        rows, cols = mask.nonzero(as_tuple=True)  # row-major: each row's coordinates in increasing order
        banked = bank[rows] >= 0
        rows, cols = rows[banked], cols[banked]
        crow = torch.zeros(n + 1, dtype=torch.long, device=delta.device)
        crow[1:] = torch.bincount(rows, minlength=n).cumsum(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            steps = torch.sparse_csr_tensor(crow, bank[rows] * d + cols, delta[rows, cols],
                                            size=(n, self.banks.shape[0] * d), check_invariants=False)
        dots = steps @ self.banks.view(-1, self.banks.shape[2])
        for r in (bank < 0).nonzero().flatten().tolist():  # no bank free (more chains in one batch than banks)
            k = mask[r].nonzero().flatten()
            dots[r] = self.points[idx[r]][:, k].double() @ delta[r, k]
        return dots

    def _bind(self, slot: torch.Tensor) -> torch.Tensor:
        """The bank of each parent slot (b,), built where the slot has none (or its bank was rebuilt for another
        chain since); -1 where every bank is in use by this batch."""
        parents = slot.unique()
        bank, gen = self.slots["bank"][parents], self.slots["bank_gen"][parents]
        live = (bank >= 0) & (self.bank_gen[bank.clamp(min=0)] == gen)
        self.bank_stamp[bank[live]] = self.clock  # in use by this batch: not evictable below
        need = parents[~live]
        free = (self.bank_stamp < self.clock).nonzero().flatten()
        take = min(len(free), len(need))
        if take:
            chosen = free[self.bank_stamp[free].topk(take, largest=False).indices]
            got = need[:take]
            for i in range(0, take, 16):  # (16, s, d) at a time: the temporary stays small
                rows = self.points[self.slots["idx"][got[i:i + 16]]]
                self.banks[chosen[i:i + 16]] = rows.transpose(1, 2).double()
            self.bank_gen[chosen] += 1
            self.bank_stamp[chosen] = self.clock
            self.slots["bank"][got], self.slots["bank_gen"][got] = chosen, self.bank_gen[chosen]
        if take < len(need):
            self.slots["bank"][need[take:]] = -1
        return self.slots["bank"][slot]

    def floor_from(self, root: torch.Tensor, x: torch.Tensor, root_floor: torch.Tensor) -> torch.Tensor:
        """A lower bound on the true squared distance from x to every point whose true squared distance from
        root is >= root_floor: the better of the triangle inequality and the per-coordinate bound below."""
        # |x - p| >= |root - p| - |x - root| (norms rounded up / down)
        r = (x.double() - root.double()).pow(2).sum(1).sqrt() * (1 + 4 * _gamma(x.shape[1] + 4)) + 1e-12
        base = root_floor.clamp(min=0).sqrt() * (1 - 4 * _U64)
        tri = ((base - r).clamp(min=0) ** 2) * (1 - 4 * _U64)
        return torch.maximum(tri, self._box_from(root, x, root_floor))

    def _box_from(self, root: torch.Tensor, x: torch.Tensor, root_floor: torch.Tensor) -> torch.Tensor:
        """The floor of x from its root's in one step over every coordinate (a chain's per-step floors add up
        each step's worst case; from the root, changes that cancel along the chain do not count)."""
        a, r = x.double(), root.double()
        delta, sqd = a - r, a * a - r * r
        lowest = torch.minimum(sqd - 2 * self.col_min * delta, sqd - 2 * self.col_max * delta).sum(1)
        rounding = _gamma(x.shape[1] + 4) * (a * a + r * r + 2 * self.xmax * delta.abs()).sum(1) * 2
        return root_floor + lowest - rounding

    def insert(self, entry: dict[str, torch.Tensor]) -> None:
        """Cache the rows of `entry` (as returned by advance or made by ExactKNN from a brute-force search);
        evicts the least recently used rows (never this batch's parents, whose stamps are current). Rows that
        find no evictable slot are not cached."""
        if not self.slots:
            self._allocate()
        stamp = self.slots["stamp"]
        free = (stamp < self.clock).nonzero().flatten()
        keep = min(len(free), len(entry["row"]))
        if keep == 0:
            return
        slots = free[stamp[free].topk(keep, largest=False).indices]
        for key, value in entry.items():
            self.slots[key][slots] = value[-keep:]
        sketch = entry["row"][-keep:] @ self.projection
        self.slots["sketch"][slots], self.slots["sketch_sq"][slots] = sketch, sketch.pow(2).sum(1)
        stamp[slots] = self.clock

    def clear(self) -> None:
        """Forget every cached row and free the memory (the next insert allocates again)."""
        self.banks, self.slots, self.clock = None, {}, 0
