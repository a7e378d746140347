"""Per-sample reference for otbench/defenses/otad/cip.py: eqs. 15-16 of papers/otad.txt written out literally
in cvxpy and solved by Clarabel, one test point at a time (Algorithm 2 as the public code runs it).
Used by the CIP tests, Table IX's timing (otbench/defenses/otad_t/timing.py) and bench/bench_cip.py; cvxpy and
Clarabel come with the `reference` (and `test`) extra, so importing this module without them says what to install."""
from __future__ import annotations

import numpy as np

try:
    import cvxpy as cp
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError("OTAD's reference solver needs cvxpy and clarabel: pip install 'otbench[reference]'") from exc

_CLARABEL = dict(tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12, tol_ktratio=1e-10,
                 static_regularization_constant=1e-10, max_iter=500)


def _c(L: float, l: float) -> float:
    return 1 / (2 * (1 - l / L))


def eq15_weights(X: np.ndarray, Z: np.ndarray, L: float, l: float) -> np.ndarray:
    """w[i, j] such that eq. 15 reads U_i >= U_j + w[i, j], from explicit differences."""
    dX = X[:, None, :] - X[None, :, :]  # X_i - X_j
    dZ = Z[:, None, :] - Z[None, :, :]
    return (np.einsum("jd,ijd->ij", Z, dX)
            + _c(L, l) * ((dZ ** 2).sum(-1) / L + l * (dX ** 2).sum(-1) - 2 * l / L * (dZ * dX).sum(-1)))


def potentials_lp(X: np.ndarray, Z: np.ndarray, L: float, l: float) -> tuple[bool, np.ndarray | None]:
    """Eq. 15 at (L, l) as the public code poses it: min max U s.t. U >= 0 and the constraints.
    Returns (feasible, U)."""
    K = len(X)
    w = eq15_weights(X, Z, L, l)
    U, t = cp.Variable(K), cp.Variable()
    ones = np.ones((K, 1))
    diff = cp.reshape(U, (K, 1), order="C") @ ones.T - ones @ cp.reshape(U, (1, K), order="C")  # U_i - U_j
    prob = cp.Problem(cp.Minimize(t), [U >= 0, U <= t, diff >= w])
    prob.solve(solver=cp.CLARABEL)
    if prob.status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
        return False, None
    if prob.status != cp.OPTIMAL:
        raise RuntimeError(f"reference LP: {prob.status}")
    return True, U.value


def features_qcp(x: np.ndarray, X: np.ndarray, Z: np.ndarray, U: np.ndarray, L: float, l: float,
                 formulation: str = "paper", polish: bool = True) -> tuple[np.ndarray, float]:
    """Eq. 16 in its primal form (variables v, g) given the potentials U. 'reference-code' puts
    coefficient 1 instead of C3 on <g, x - X_j> (solvers/mosek_test.py of the public code).

    An interior-point solution is accurate in g only to about sqrt(duality gap) (~1e-5 relative here),
    so by default it is polished by Newton's method on the KKT system of its active constraints."""
    if formulation not in ("paper", "reference-code"):
        raise ValueError(formulation)
    c, K = _c(L, l), len(X)
    C1, C3 = c / L, c * 2 * l / L
    D = x - X  # rows x - X_j

    def q(g):  # eq. 16's right-hand sides, one per neighbour, for a numpy or a cvxpy g
        sq = cp.sum_squares if isinstance(g, cp.Expression) else (lambda a: a @ a)
        out = []
        for j in range(K):
            base = U[j] + Z[j] @ D[j] + c * (sq(g - Z[j]) / L + l * (D[j] @ D[j]))
            if formulation == "paper":
                out.append(base - C3 * ((Z[j] - g) @ (X[j] - x)))
            else:
                out.append(base - C3 * (Z[j] @ (X[j] - x)) - g @ D[j])
        return out

    def dq(g):  # their gradients in g, (K, d)
        return 2 * C1 * (g - Z) + (C3 * -D if formulation == "paper" else -D)

    # g = zbar + h: the same problem, parametrised around the mean feature, which the conic solver
    # handles more accurately than the raw g when |Z| >> |g - Z_j|.
    zbar = Z.mean(0)
    v, h = cp.Variable(), cp.Variable(X.shape[1])
    cons = [v >= rhs for rhs in q(zbar + h)]
    prob = cp.Problem(cp.Minimize(v), cons)
    try:
        prob.solve(solver=cp.CLARABEL, **_CLARABEL)
    except cp.SolverError:  # the tight tolerances can stall on degenerate data: the polish still applies
        prob.solve(solver=cp.CLARABEL)
    if prob.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
        raise RuntimeError(f"reference QCP: {prob.status}")
    g, v = zbar + h.value, float(v.value)
    if not polish:
        return g, v
    mu = np.array([np.ravel(con.dual_value)[0] for con in cons], dtype=float)
    act = mu > 1e-6 * mu.max()
    scale = np.abs(q(g)).max() + 1
    while act.any():
        g1, v1, m1 = _newton_kkt(g, v, mu[act], lambda g: np.array(q(g))[act], lambda g: dq(g)[act], C1)
        if m1.min() >= -1e-9:
            break
        act[np.flatnonzero(act)[m1.argmin()]] = False  # an interior-point residue, not an active constraint
    if m1.min() >= -1e-9 and max(q(g1)) - v1 <= 1e-11 * scale:
        return g1, v1
    return g, v  # polishing failed: keep the interior-point solution


def _newton_kkt(g, v, mu, q, dq, C1, iters=20):
    """Newton on sum_j mu_j dq_j(g) = 0, sum_j mu_j = 1, q_j(g) = v, with g eliminated (its Hessian
    block is 2 C1 sum(mu) I)."""
    for _ in range(iters):
        Dq, s, n = dq(g), mu.sum(), len(mu)
        r1, r2, r3 = mu @ Dq, 1 - s, q(g) - v
        A = np.block([[Dq @ Dq.T / (2 * C1 * s), np.ones((n, 1))], [np.ones((1, n)), np.zeros((1, 1))]])
        sol = np.linalg.lstsq(A, np.r_[r3 - Dq @ r1 / (2 * C1 * s), r2], rcond=None)[0]
        dg = -(r1 + Dq.T @ sol[:n]) / (2 * C1 * s)
        g, v, mu = g + dg, v + sol[n], mu + sol[:n]
        if np.linalg.norm(dg) <= 1e-15 * np.linalg.norm(g) and abs(sol[n]) <= 1e-15 * max(abs(v), 1):
            break
    return g, v, mu


def solve_reference(x: np.ndarray, X: np.ndarray, Z: np.ndarray, *, L: float = 2.0, l: float = 0.0,
                    delta1: float = 0.2, delta2: float = 0.2, formulation: str = "paper",
                    max_steps: int = 200, potentials: np.ndarray | None = None,
                    polish: bool = True) -> tuple[np.ndarray, float, list[bool]]:
    """Algorithm 2 for one point: relax (L, l) step by step until eq. 15 is feasible, then eq. 16 with
    the original (L, l). Returns (g, v, feasible), feasible[s] the verdict at step s (last one True).
    `potentials`, if given, replace the LP's in eq. 16 (to compare features given the same U)."""
    verdicts = []
    for s in range(max_steps + 1):
        ok, U = potentials_lp(X, Z, L + s * delta1, l - s * delta2)
        verdicts.append(ok)
        if ok:
            U = U if potentials is None else potentials
            g, v = features_qcp(x, X, Z, U, L, l, formulation, polish)
            return g, v, verdicts
    raise RuntimeError("reference: still infeasible after max_steps")
