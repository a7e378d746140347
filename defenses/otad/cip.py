"""Exact, batched solver of OTAD's convex integration problem (shared/design/cip.md).

Per test point x with neighbours X and features Z = T(X) (papers/otad.txt, Algorithm 2):
1. find the first relaxation step s at which eq. 15 is feasible for (L + s*delta1, l - s*delta2), and its
   Brenier potentials U: difference constraints, i.e. longest paths (Floyd-Warshall in (max, +));
2. solve eq. 16 with the original (L, l) through its dual, a K-dimensional QP on the simplex, exactly,
   by a primal active-set method run on the whole batch.
Discrete decisions (s, the active set) are taken without autograd; U, the QP's face minimiser and the
answer are then recomputed from them with autograd, so the result is differentiable almost everywhere
in x, X and Z. All arithmetic is float64; d enters only through one Gram matrix per point and the final
combination g = sum_j lam_j p_j.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linprog

FORMULATIONS = ("paper", "reference-code")
POTENTIALS = ("least", "lp")

_FEAS_RTOL = 1e-9   # a positive cycle this small relative to max|w| is rounding (duplicate neighbours)
_PINV_RTOL = 1e-10  # eigenvalues of the scaled KKT matrix below this fraction of the largest count as 0
_LU_RTOL = 1e-6    # smallest LU pivot relative to the largest for which a face is solved by LU (else eigh)
_KKT_RTOL = 1e-9    # optimality: Frank-Wolfe gap and multipliers relative to the gradient's scale
_CHUNK = 2 ** 21    # float64 elements per batch chunk of d-dimensional work (16 MiB: the allocator reuses it)


@dataclass
class CIPResult:
    features: torch.Tensor    # (B, d) g*, in the inputs' dtype
    value: torch.Tensor       # (B,) v*
    potentials: torch.Tensor  # (B, K) U
    steps: torch.Tensor       # (B,) int64 relaxation steps s* used for feasibility
    L_relaxed: torch.Tensor   # (B,) L + s* delta1
    l_relaxed: torch.Tensor   # (B,) l - s* delta2
    converged: torch.Tensor   # (B,) bool, KKT conditions of the QP verified


def _constants(L, l):
    c = 1 / (2 * (1 - l / L))
    return c / L, c * l, 2 * c * l / L


@dataclass
class Neighbourhood:
    """What the CIP needs of a batch of neighbourhoods (X, Z) alone, before any test point: the means, the Gram
    matrices of the rows [X - xbar; Z - zbar; zbar] and the pair terms of eq. 15. An attack's successive queries
    of one sample keep their neighbours, so a caller may compute it once per neighbour list and pass it to
    solve_cip for every query (step.NeighbourhoodMemo): the result is the same, bit for bit."""
    xbar: torch.Tensor   # (B, d) float64
    zbar: torch.Tensor   # (B, d) float64
    gram: torch.Tensor   # (B, 2K+1, 2K+1) float64
    pairs: torch.Tensor  # (B, 4, K, K) float64, see _pair_terms

    def __getitem__(self, rows) -> "Neighbourhood":
        return Neighbourhood(self.xbar[rows], self.zbar[rows], self.gram[rows], self.pairs[rows])


def _chunks(B: int, K: int, d: int):
    step = max(1, _CHUNK // ((2 * K + 2) * d))
    return [slice(s, s + step) for s in range(0, B, step)]


def neighbourhood(X: torch.Tensor, Z: torch.Tensor) -> Neighbourhood:
    """The test-point-free terms of the CIP for neighbours X, Z (B, K, d). Every row is computed on its own (a
    row's numbers do not depend on the other rows of the batch), so memoised rows equal fresh ones.

    Centring on the neighbourhood means keeps the differences |Z_i - Z_j|^2 etc. free of cancellation; one
    product of the stacked rows is cheaper than one per block."""
    B, K, d = X.shape
    means, grams = [], []
    for s in _chunks(B, K, d):
        Xs, Zs = X[s].double(), Z[s].double()
        xbar, zbar = Xs.mean(1), Zs.mean(1)
        W = torch.cat([Xs - xbar[:, None], Zs - zbar[:, None], zbar[:, None]], 1)
        means.append((xbar, zbar))
        grams.append(W @ W.mT)
    gram = torch.cat(grams)
    return Neighbourhood(torch.cat([m[0] for m in means]), torch.cat([m[1] for m in means]), gram,
                         _pair_terms(gram, K))


def _query_terms(x: torch.Tensor, X: torch.Tensor, Z: torch.Tensor, nb: Neighbourhood) -> torch.Tensor:
    """(B, 2K+2): <Xc_j, v>, <Zc_j, v>, <zbar, v>, |v|^2 for v = x - xbar, the terms that involve the test point.
    <Xc_j, v> is taken as <X_j, v> - <xbar, v>, which spares centring the neighbours for every query: v is already
    centred, so the two terms are of the size of the result times |X_j| / |Xc_j| (a few units on images), far
    from float64's limits."""
    B, K, d = X.shape
    out = []
    for s in _chunks(B, K, d):
        v = x[s].double() - nb.xbar[s]
        means = torch.stack([nb.xbar[s], nb.zbar[s]], 1) @ v[..., None]  # (b, 2, 1): <xbar, v>, <zbar, v>
        Xv = (X[s].double() @ v[..., None])[..., 0] - means[:, 0]
        Zv = (Z[s].double() @ v[..., None])[..., 0] - means[:, 1]
        out.append(torch.cat([Xv, Zv, means[:, 1], (v * v).sum(1, keepdim=True)], 1))
    return torch.cat(out)


def _sqdist(G: torch.Tensor) -> torch.Tensor:
    g = G.diagonal(dim1=-2, dim2=-1)
    return g[..., :, None] + g[..., None, :] - 2 * G


def _pair_terms(M: torch.Tensor, K: int) -> torch.Tensor:
    """(B, 4, K, K): w = T0 + C1 Tz + C2 Tx - C3 Tzx, so w at any (L, l) costs O(K^2)."""
    XX, ZZ, ZX = M[:, :K, :K], M[:, K:2 * K, K:2 * K], M[:, K:2 * K, :K]  # ZX[a, b] = <Zc_a, Xc_b>
    a = M[:, 2 * K, :K]  # <zbar, Xc_i>
    zx = ZX.diagonal(dim1=1, dim2=2)
    T0 = ZX.mT - zx[:, None, :] + a[:, :, None] - a[:, None, :]  # <Z_j, X_i - X_j>
    Tzx = zx[:, :, None] + zx[:, None, :] - ZX - ZX.mT             # <Z_i - Z_j, X_i - X_j>
    return torch.stack([T0, _sqdist(ZZ), _sqdist(XX), Tzx], 1)


def _weights(T: torch.Tensor, L: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    C1, C2, C3 = _constants(L, l)
    coef = torch.stack([torch.ones_like(C1), C1, C2, -C3], -1)  # (B, [S,] 4)
    B, _, K, _ = T.shape
    return (coef.view(B, -1, 4) @ T.reshape(B, 4, K * K)).view(*coef.shape[:-1], K, K)


def brenier_weights(X: torch.Tensor, Z: torch.Tensor, L, l) -> torch.Tensor:
    """w[..., i, j] of eq. 15 (constraint U_i - U_j >= w_ij), float64, (B, K, K) or (B, S, K, K) when
    L, l broadcast to (B, S)."""
    T = neighbourhood(X, Z).pairs
    L, l = torch.broadcast_tensors(*(torch.as_tensor(v, dtype=T.dtype, device=T.device) for v in (L, l)))
    shape = (T.shape[0],) if L.dim() < 2 else (T.shape[0], L.shape[-1])
    return _weights(T, L.broadcast_to(shape), l.broadcast_to(shape))


def least_potentials(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least U >= 0 with U_i - U_j >= w_ij: U_i = max(0, longest path ending at i), by Floyd-Warshall.

    Returns (U (..., K), feasible (...,)); feasible is False when a positive cycle exists (U is then
    meaningless). Differentiable in w (the maxima pick the longest paths)."""
    K = w.shape[-1]
    D = w.clone()
    D.diagonal(dim1=-2, dim2=-1).zero_()
    inplace = not (torch.is_grad_enabled() and D.requires_grad)
    for k in range(K):  # D[i, j] = longest path from j to i through nodes < k
        D = torch.maximum(D, D[..., :, k, None] + D[..., None, k, :], out=D if inplace else None)
    tol = _FEAS_RTOL * w.detach().abs().amax((-2, -1))
    return D.amax(-1), D.diagonal(dim1=-2, dim2=-1).amax(-1) <= tol


@torch.no_grad()
def _search(T: torch.Tensor, L: float, l: float, delta1: float, delta2: float, max_steps: int,
            probes: int = 7) -> torch.Tensor:
    """First feasible step per point. Feasibility is monotone in s (the classes F_{l,L} are nested), so
    each point keeps a bracket (lo infeasible, hi feasible]: a geometric grid (0, 1, 2, 4, ..., 64,
    max_steps) brackets every point in one batched round, then `probes` evenly spaced steps per round
    shrink the brackets ~8x."""
    B, dev = T.shape[0], T.device
    grid = sorted({0, max_steps, *(2 ** k for k in range(7) if 2 ** k < max_steps)})
    lo = torch.full((B,), -1, dtype=torch.long, device=dev)
    hi = torch.full((B,), max_steps, dtype=torch.long, device=dev)
    todo = torch.arange(B, device=dev)
    cand = torch.tensor(grid, device=dev).expand(B, -1)
    k = torch.arange(1, probes + 1, device=dev)
    first_round = True
    while todo.numel():
        s = cand.to(T.dtype)
        ok = least_potentials(_weights(T[todo], L + delta1 * s, l - delta2 * s))[1]
        if first_round and not ok[:, -1].all():
            raise RuntimeError(f"{int((~ok[:, -1]).sum())} neighbourhood(s) still infeasible after "
                               f"max_steps={max_steps} relaxation steps; raise max_steps or delta1/delta2")
        first_round = False
        h = torch.where(ok, cand, hi[todo, None]).amin(1)
        hi[todo] = h
        lo[todo] = torch.maximum(lo[todo], torch.where(~ok & (cand < h[:, None]), cand, -1).amax(1))
        todo = todo[hi[todo] - lo[todo] > 1]
        gap = (hi - lo)[todo, None]
        cand = lo[todo, None] + (gap * k + probes) // (probes + 1)  # ceil(gap k / (probes+1)), in (lo, hi]
    return hi


def first_feasible_step(X: torch.Tensor, Z: torch.Tensor, L: float, l: float, delta1: float,
                        delta2: float, max_steps: int) -> torch.Tensor:
    """(B,) int64: the step s of Algorithm 2 at which eq. 15 first becomes feasible."""
    with torch.no_grad():
        return _search(neighbourhood(X, Z).pairs, L, l, delta1, delta2, max_steps)


def _lp_potentials(w: torch.Tensor) -> torch.Tensor:
    """U from a generic LP solver (min max U, U >= 0), as the public OTAD code asks MOSEK: one point of
    the optimal face, per sample. The returned vertex is re-solved from its tight constraints, which
    makes it exact and differentiable in w."""
    B, K, _ = w.shape
    i, j = (~torch.eye(K, dtype=torch.bool)).nonzero().unbind(1)
    n, eye = i.numel(), torch.eye(K, dtype=w.dtype)
    E = torch.zeros(n, K, dtype=w.dtype)
    E[torch.arange(n), j] = 1
    E[torch.arange(n), i] -= 1
    # rows of A (U, t) <= r: U_j - U_i <= -w_ij ; U_i - t <= 0 ; -U_i <= 0
    A = torch.cat([torch.cat([E, torch.zeros(n, 1, dtype=w.dtype)], 1),
                   torch.cat([eye, -torch.ones(K, 1, dtype=w.dtype)], 1),
                   torch.cat([-eye, torch.zeros(K, 1, dtype=w.dtype)], 1)])
    r = torch.cat([-w[:, i, j], w.new_zeros(B, 2 * K)], 1)
    r_np, A_np = r.detach().cpu().numpy(), A.numpy()
    scale = np.maximum(np.abs(r_np).max(1), 1e-300)
    sol = np.empty((B, K + 1))
    for b in range(B):
        res = linprog(np.r_[np.zeros(K), 1.0], A_ub=A_np[:n + K], b_ub=r_np[b, :n + K] / scale[b],
                      bounds=(0, None), method="highs")
        if res.status != 0:
            raise RuntimeError(f"LP for the Brenier potentials failed: {res.message}")
        sol[b] = res.x * scale[b]
    A = A.to(w.device)
    with torch.no_grad():
        u = torch.from_numpy(sol).to(w)
        tight = ((u @ A.T - r).abs() <= 1e-7 * torch.from_numpy(scale).to(w)[:, None]).to(w.dtype)
        P = torch.linalg.pinv(tight[:, :, None] * A)
    return (P @ (tight * r)[..., None])[:, :K, 0]


def _kkt(H: torch.Tensor, c: torch.Tensor, free: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """KKT matrix of min 1/2 l'Hl - c'l s.t. sum l = 1, l_i = 0 off `free`; H scaled by s so that its
    diagonal is <= 1 (the border of ones is O(1) too). s >= 1e-12 max|c| (H and c share units on the
    simplex): a smaller H is rounding (identical neighbours) and is treated as 0.
    Returns (matrix (B, K+1, K+1), s (B,))."""
    s = torch.maximum(H.diagonal(dim1=1, dim2=2).amax(1), 1e-12 * c.abs().amax(1))
    s = s.clamp_min(torch.finfo(H.dtype).tiny)
    f = free.to(H.dtype)
    top = torch.cat([H / s[:, None, None] * f[:, :, None] * f[:, None, :] + torch.diag_embed(1 - f),
                     f[:, :, None]], 2)
    return torch.cat([top, torch.cat([f, f.new_zeros(len(f), 1)], 1)[:, None]], 1), s


def _face_step(H: torch.Tensor, c: torch.Tensor, grad: torch.Tensor,
               free: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Step p (B, K) to the minimiser of f on the face {sum l = 1, l_i = 0 off free}: l + p. Where that
    face has no minimiser (H singular on it), p is instead a descent ray of zero curvature, which the
    caller follows to the boundary; `singular` (B,) tells which.

    An LU solve answers the well-conditioned faces (nearly all: about ten times cheaper than an
    eigendecomposition of these small matrices); the others go through the eigendecomposition, which
    separates the null space."""
    K = H.shape[-1]
    A, s = _kkt(H, c, free)
    rhs = torch.cat([torch.where(free, -grad, 0) / s[:, None], grad.new_zeros(len(grad), 1)], 1)
    LU, pivots, info = torch.linalg.lu_factor_ex(A)
    u = LU.diagonal(dim1=1, dim2=2).abs()
    # pivots far above the eigendecomposition's null threshold (_PINV_RTOL): the face has a minimiser
    solved = (info == 0) & (u.amin(1) > _LU_RTOL * u.amax(1))
    step = torch.linalg.lu_solve(LU, pivots, rhs[..., None])[:, :K, 0]
    singular = torch.zeros_like(solved)
    hard = (~solved).nonzero().flatten()
    if len(hard):
        ev, V = torch.linalg.eigh(A[hard])
        keep = ev.abs() > _PINV_RTOL * ev.abs().amax(1, keepdim=True)
        coef = (V.mT @ rhs[hard, :, None])[..., 0]
        exact = (V @ torch.where(keep, coef / torch.where(keep, ev, 1), 0)[..., None])[:, :K, 0]
        ray = (V @ torch.where(keep, 0, coef)[..., None])[:, :K, 0]  # the part of -grad in the null space
        flat = ray.norm(dim=1) > 1e-9 * rhs[hard].norm(dim=1)
        step[hard] = torch.where(flat[:, None], ray, exact)
        singular[hard] = flat
    return step, singular


@torch.no_grad()
def _active_set(H: torch.Tensor, c: torch.Tensor, max_iter: int, start_rounds: int = 2):
    """min_{l in simplex} 1/2 l'Hl - c'l, H PSD, by a primal active-set method (Nocedal-Wright 16.3),
    iterated on the batch's unfinished points. H may be singular (duplicate neighbours, K > d + 1).
    Returns (lam, free, converged)."""
    B, K, _ = H.shape
    hd = H.diagonal(dim1=1, dim2=2)
    # scale of the gradient's spread; the last term absorbs rounding in c (e.g. identical neighbours)
    gscale = hd.amax(1) + (c - c.mean(1, keepdim=True)).abs().amax(1) + 1e-6 * c.abs().amax(1)
    # Start on the face of the coordinates that are positive in the affine minimiser, and again on that face's
    # minimiser, `start_rounds` times (a face often reached that way is the answer; the method below proves or
    # leaves it, one coordinate at a time).
    free = torch.ones((B, K), dtype=torch.bool, device=H.device)
    todo = torch.arange(B, device=H.device)
    for _ in range(start_rounds):
        ft = free[todo]
        centre = ft / ft.sum(1, keepdim=True).to(H.dtype)
        p, singular = _face_step(H[todo], c[todo], (H[todo] @ centre[..., None])[..., 0] - c[todo], ft)
        new = ft & ((centre + p > 0) | singular[:, None])
        new |= ft & ~new.any(1, keepdim=True)
        moved = (new != ft).any(1)
        free[todo] = new
        todo = todo[moved]
        if not todo.numel():
            break
    lam = free / free.sum(1, keepdim=True).to(H.dtype)
    todo = torch.arange(B, device=H.device)
    for _ in range(max_iter):
        Ht, ct, lt, ft = H[todo], c[todo], lam[todo], free[todo]
        grad = (Ht @ lt[..., None])[..., 0] - ct
        p, singular = _face_step(Ht, ct, grad, ft)
        neg = ft & (p < -1e-14 * p.abs().amax(1, keepdim=True))
        ratio = torch.where(neg, lt / torch.where(neg, -p, 1), torch.inf)
        block = ratio.argmin(1)  # (values, indices) reductions are ~1000x slower on a busy CPU
        ratio = ratio.gather(1, block[:, None])[:, 0]
        blocked = singular | (ratio < 1)
        lt = (lt + torch.where(blocked, ratio, 1)[:, None] * p).clamp_min(0)
        rows = blocked.nonzero()[:, 0]
        lt[rows, block[rows]] = 0
        ft[rows, block[rows]] = False
        # After a full step lt minimises f on its face: optimal unless a fixed coordinate's multiplier < 0.
        grad = (Ht @ lt[..., None])[..., 0] - ct
        kappa = torch.where(ft, torch.inf, grad - (lt * grad).sum(1, keepdim=True))
        jmin = kappa.argmin(1)
        kmin = kappa.gather(1, jmin[:, None])[:, 0]
        opt = ~blocked & (kmin >= -_KKT_RTOL * gscale[todo])
        rows = (~blocked & ~opt).nonzero()[:, 0]
        ft[rows, jmin[rows]] = True
        lam[todo], free[todo] = lt, ft
        todo = todo[~opt]
        if not todo.numel():
            break
    grad = (H @ lam[..., None])[..., 0] - c
    gap = (lam * grad).sum(1) - grad.amin(1)
    converged = (gap <= _KKT_RTOL * gscale) & ((lam.sum(1) - 1).abs() <= 1e-12)
    return lam, free, converged


def solve_cip(x: torch.Tensor, X: torch.Tensor, Z: torch.Tensor, *, L: float = 2.0, l: float = 0.0,
              delta1: float = 0.2, delta2: float = 0.2, formulation: str = "paper",
              potentials: str = "least", max_steps: int = 2000,
              steps: torch.Tensor | None = None, nb: Neighbourhood | None = None) -> CIPResult:
    """Algorithm 2 of OTAD for a batch: x (B, d), X (B, K, d) neighbours, Z (B, K, d) their features.

    `steps`: the first feasible relaxation step per point when the caller already knows it (it depends on
    the neighbourhood (X, Z) only, not on x, so callers may memoise it per neighbour set); `nb`: the same for
    neighbourhood(X, Z), per ordered neighbour list (only where X and Z need no gradient)."""
    for name, value, valid in (("formulation", formulation, FORMULATIONS),
                               ("potentials", potentials, POTENTIALS)):
        if value not in valid:
            raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
    if not (L > 0 and l < L and delta1 >= 0 and delta2 >= 0 and max_steps >= 0):
        raise ValueError(f"need L > 0, l < L, delta1, delta2, max_steps >= 0; got L={L}, l={l}, "
                         f"delta1={delta1}, delta2={delta2}, max_steps={max_steps}")
    if X.dim() != 3 or Z.shape != X.shape or x.shape != (X.shape[0], X.shape[2]):
        raise ValueError(f"need x (B, d), X and Z (B, K, d); got {tuple(x.shape)}, {tuple(X.shape)}, "
                         f"{tuple(Z.shape)}")
    B, K, d = X.shape
    if nb is None:
        nb = neighbourhood(X, Z)
    elif torch.is_grad_enabled() and (X.requires_grad or Z.requires_grad):
        raise ValueError("a precomputed neighbourhood carries no gradient in X or Z; pass nb=None")
    T, q = nb.pairs, _query_terms(x, X, Z, nb)
    if steps is None:
        steps = _search(T.detach(), L, l, delta1, delta2, max_steps)
    steps = steps.to(device=T.device, dtype=torch.long)
    s = steps.to(T.dtype)
    L_t, l_t = L + delta1 * s, l - delta2 * s
    w = _weights(T, L_t, l_t)
    U = least_potentials(w)[0] if potentials == "least" else _lp_potentials(w)

    # Eq. 16 with the original (L, l): v >= C1 |g - p_j|^2 + b_j, dual over the simplex with the centred
    # Gram matrix of the p_j (the dual is translation invariant; centring removes the common component).
    C1, C2, C3 = _constants(L, l)
    alpha = l if formulation == "paper" else L - l  # p_j = Z_j + alpha (x - X_j)
    M = nb.gram
    XX, ZZ, ZX = M[:, :K, :K], M[:, K:2 * K, K:2 * K], M[:, K:2 * K, :K]
    Gc = ZZ - alpha * (ZX + ZX.mT) + alpha ** 2 * XX  # p_j - pbar = Zc_j - alpha Xc_j
    Xv, Zv, zv, vv = q[:, :K], q[:, K:2 * K], q[:, 2 * K:2 * K + 1], q[:, -1:]
    zd = Zv - ZX.diagonal(dim1=1, dim2=2) + zv - M[:, 2 * K, :K]  # <Z_j, x - X_j>
    dd = vv - 2 * Xv + XX.diagonal(dim1=1, dim2=2)                # |x - X_j|^2
    # e_j = b_j + C1 |p_j - pbar|^2, with b_j = e_j(cip.md) - C1 |p_j|^2 expanded (no |Z_j|^2 cancellation)
    e = U + (1 + C3 - 2 * alpha * C1) * zd + (C2 - alpha ** 2 * C1) * dd + C1 * Gc.diagonal(dim1=1, dim2=2)
    H = 2 * C1 * Gc
    lam, free, converged = _active_set(H.detach(), e.detach(), 4 * K + 10)
    if torch.is_grad_enabled() and e.requires_grad:
        A, sc = _kkt(H, e, free)  # the face minimiser on the final support, for the gradient only
        rhs = torch.cat([torch.where(free, e, 0) / sc[:, None], e.new_ones(B, 1)], 1)
        lam_g = (torch.linalg.pinv(A, rtol=_PINV_RTOL, hermitian=True) @ rhs[..., None])[:, :K, 0]
        lam = lam + (lam_g - lam_g.detach())
    value = (lam * e).sum(1) - C1 * (lam[:, None, :] @ Gc @ lam[..., None])[:, 0, 0]
    lw = lam.to(X.dtype)[:, None, :]
    features = (lw @ Z)[:, 0] + alpha * (x - (lw @ X)[:, 0])
    dt = x.dtype
    return CIPResult(features=features, value=value.to(dt), potentials=U.to(dt), steps=steps,
                     L_relaxed=L_t.to(dt), l_relaxed=l_t.to(dt), converged=converged)
