"""Exact K nearest training inputs in l2, batched.

Distances come from one float32 matrix product per batch (fast on CPU and GPU); the best K + margin
candidates are then re-ranked in float64, and a row is accepted only if the float32 error bound proves
no point outside the candidates can be closer. Rows that fail the proof (near-equidistant points, as in
high-dimensional Gaussian data) are re-ranked in float64 over every point whose float32 distance is within
the error bound of the K-th candidate distance, a set the same bound proves to hold the true K nearest; so
the answer is exact, not approximately nearest. Ties are broken by training index.
"""
from __future__ import annotations

import torch

_U32 = 2.0 ** -24  # unit roundoff of float32


class ExactKNN:
    def __init__(self, points: torch.Tensor, margin: int = 16, block: int = 256) -> None:
        self.points = points.flatten(1).float().contiguous()  # (N, d)
        self.points64 = None  # made on demand, only when a row needs the float64 fallback
        self.sq_norms = self.points.double().pow(2).sum(1)
        self.sq_norms32 = self.sq_norms.float()
        self.margin, self.block = margin, block
        self.fallbacks = 0  # rows the certificate could not settle (for diagnostics)

    def search(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Indices (B, k) of the k nearest points to each row of x, nearest first."""
        x = x.flatten(1)
        return torch.cat([self._search_block(x[i:i + self.block], k) for i in range(0, len(x), self.block)])

    def _search_block(self, x: torch.Tensor, k: int) -> torch.Tensor:
        d = x.shape[1]
        xn = x.double().pow(2).sum(1)
        # |p|^2 - 2 <p, x> ranks the points like the distance (|x|^2 is constant per query). Computed as
        # (N, b) = points @ x^T: on a CPU this orientation is the faster one for small query batches.
        approx = torch.addmm(self.sq_norms32[:, None], self.points, x.float().T, alpha=-2.0)
        m = min(k + self.margin, self.points.shape[0])
        cand_d32, cand = approx.topk(m, dim=0, largest=False, sorted=True)
        cand, cand_d32 = cand.T, cand_d32.T + xn.float()[:, None]
        exact = (x.double()[:, None, :] - self.points[cand].double()).pow(2).sum(-1)  # (b, m)
        # Stable sort on (distance, index): identical training images tie deterministically.
        order = torch.argsort(cand, dim=1)
        cand, exact, cand_d32 = cand.gather(1, order), exact.gather(1, order), cand_d32.gather(1, order)
        rank = torch.argsort(exact, dim=1, stable=True)
        idx, kth = cand.gather(1, rank[:, :k]), exact.gather(1, rank[:, k - 1:k]).squeeze(1)
        if m == self.points.shape[0]:
            return idx
        # Bound on |float32 distance - true distance| for any point: d*u*(|x|^2 + max|p|^2) scaled by 4.
        bound = 4 * d * _U32 * (xn + self.sq_norms.max())
        worst_outside = cand_d32.max(1).values.double()  # every non-candidate has float32 distance >= this
        unproved = worst_outside - bound <= kth + 1e-12
        if unproved.any():
            self.fallbacks += int(unproved.sum())
            rows = unproved.nonzero().flatten()
            # a true K-nearest point p has distance <= kth (the K-th over a subset is >= the true K-th),
            # so its float32 distance is <= kth + bound: re-rank exactly all such points
            limit = (kth[rows] + bound[rows] + 1e-12 - xn[rows]).float()
            band = (approx[:, rows].T <= (limit + limit.abs() * 4 * _U32)[:, None]).contiguous()  # + rounding
            counts = band.sum(1).tolist()
            hits = band.nonzero()[:, 1].split(counts)  # per row, in increasing training index
            for j, r in enumerate(rows.tolist()):
                near = hits[j]
                if len(near) < k or len(near) > self.points.shape[0] // 4:
                    idx[r] = self._exact_rows(x[r:r + 1], k)[0]
                    continue
                dist = (x[r].double() - self.points[near].double()).pow(2).sum(1)
                idx[r] = near[torch.argsort(dist, stable=True)[:k]]
        return idx

    def _exact_rows(self, x: torch.Tensor, k: int) -> torch.Tensor:
        if self.points64 is None:
            self.points64 = self.points.double()
        dist = torch.cdist(x.double(), self.points64).pow(2)
        # lexsort by (distance, index): argsort is stable, and indices are already in increasing order
        return torch.argsort(dist, dim=1, stable=True)[:, :k]
