"""The exact batched CIP solver against a conic (cvxpy + Clarabel) reference."""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from otbench.defenses.otad.cip import (
    FORMULATIONS,
    brenier_weights,
    first_feasible_step,
    least_potentials,
    solve_cip,
)

cip_reference = pytest.importorskip("otbench.defenses.otad.reference", reason="needs cvxpy and clarabel")


L, DELTA = 2.0, 0.2


LS = (0.0, 0.5, -1.0)


def _random_batch(seed: int, B: int, K: int, d: int, noise: float):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(B, K, d, generator=g, dtype=torch.float64)
    Z = X + noise * torch.randn(B, K, d, generator=g, dtype=torch.float64)  # T ~ identity = grad |x|^2/2
    x = X[:, 0] + 0.3 * torch.randn(B, d, generator=g, dtype=torch.float64)
    return x, X, Z


def _mnist_images(name: str) -> np.ndarray:
    root = Path(os.environ.get("OTBENCH_DATA", "/work/shared/data"))
    path = root / "MNIST" / "raw" / f"{name}-images-idx3-ubyte.gz"
    if not path.exists():
        pytest.skip(f"MNIST not found at {path} (set OTBENCH_DATA to the folder holding MNIST/raw)")
    with gzip.open(path) as f:
        data = f.read()
    n = int.from_bytes(data[4:8], "big")
    return np.frombuffer(data, np.uint8, offset=16).reshape(n, 784).astype(np.float64) / 255


@pytest.fixture(scope="module")
def mnist_batch():
    """K=10 nearest of 3000 training images for 3 test images; features from a fixed random residual
    map Z = X + tanh(X A), which needs ~10 relaxation steps like a trained OTAD network."""
    train, test = _mnist_images("train")[:3000], _mnist_images("t10k")[:3]
    A = np.random.default_rng(0).standard_normal((784, 784)) * 4 / np.sqrt(784)
    dist = (test ** 2).sum(1)[:, None] + (train ** 2).sum(1)[None] - 2 * test @ train.T
    idx = np.argsort(dist, 1)[:, :10]
    X = train[idx]
    return torch.from_numpy(test), torch.from_numpy(X), torch.from_numpy(X + np.tanh(X @ A))


def _bellman_ford(w: np.ndarray) -> np.ndarray:
    """Least U >= 0 with U_i - U_j >= w_ij, by K rounds of relaxation (independent of Floyd-Warshall)."""
    U = np.zeros(len(w))
    for _ in range(len(w)):
        U = np.maximum(U, (U[None, :] + w).max(1))
    return U


def _check_against_reference(x, X, Z, l):
    """Feasibility verdicts, potentials and both formulations of eq. 16 against the reference."""
    results = {f: solve_cip(x, X, Z, L=L, l=l, delta1=DELTA, delta2=DELTA, formulation=f)
               for f in FORMULATIONS}
    res = results["paper"]
    assert torch.equal(res.steps, results["reference-code"].steps)
    assert torch.equal(res.steps, first_feasible_step(X, Z, L, l, DELTA, DELTA, 2000))
    for b in range(len(x)):
        xb, Xb, Zb = (t[b].numpy() for t in (x, X, Z))
        # Algorithm 2 with the reference LP: every verdict along the schedule must agree.
        verdicts, s = [], 0
        while True:
            ok, U_lp = cip_reference.potentials_lp(Xb, Zb, L + s * DELTA, l - s * DELTA)
            verdicts.append(ok)
            if ok:
                break
            s += 1
        steps = torch.arange(len(verdicts), dtype=torch.float64)[None]
        w_steps = brenier_weights(X[b:b + 1], Z[b:b + 1], L + steps * DELTA, l - steps * DELTA)
        ours = least_potentials(w_steps)[1]
        assert ours[0].tolist() == verdicts
        assert res.steps[b] == s and res.L_relaxed[b] == pytest.approx(L + s * DELTA)
        assert res.l_relaxed[b] == pytest.approx(l - s * DELTA)
        # Least potentials = longest paths; their max is the LP's optimum min max U.
        w_ref = cip_reference.eq15_weights(Xb, Zb, L + s * DELTA, l - s * DELTA)
        U = res.potentials[b].numpy()
        scale = np.abs(w_ref).max()
        slack = U[:, None] - U[None, :] - w_ref  # >= 0; every positive U_i has a tight in-edge
        np.fill_diagonal(slack, np.inf)
        assert U.min() >= 0 and slack.min() >= -1e-10 * scale
        assert (slack.min(1)[U > 1e-10 * scale] <= 1e-10 * scale).all()
        np.testing.assert_allclose(U, _bellman_ford(w_ref), rtol=0, atol=1e-10 * scale)
        assert U.max() == pytest.approx(U_lp.max(), rel=1e-6, abs=1e-8 * scale)
        # Eq. 16 given the same potentials.
        for f, r in results.items():
            assert r.converged[b]
            g_ref, v_ref = cip_reference.features_qcp(xb, Xb, Zb, U, L, l, f)
            g = r.features[b].numpy()
            assert np.linalg.norm(g - g_ref) <= 1e-5 * np.linalg.norm(g_ref), (f, b)
            assert r.value[b].item() == pytest.approx(v_ref, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("l", LS)
@pytest.mark.parametrize("d,noise", [(2, 0.3), (20, 0.4), (100, 0.2)])
def test_random_neighbourhoods_match_reference(d, noise, l):
    x, X, Z = _random_batch(d, 3, 10, d, noise)
    _check_against_reference(x, X, Z, l)


def test_random_neighbourhoods_need_relaxation():
    x, X, Z = _random_batch(2, 3, 10, 2, 0.3)
    assert (first_feasible_step(X, Z, L, 0.0, DELTA, DELTA, 2000) > 0).any()


@pytest.mark.parametrize("l", LS)
def test_mnist_neighbourhoods_match_reference(mnist_batch, l):
    x, X, Z = mnist_batch
    assert (first_feasible_step(X, Z, L, l, DELTA, DELTA, 2000) > 0).all()
    _check_against_reference(x, X, Z, l)


@pytest.mark.parametrize("formulation", FORMULATIONS)
def test_lp_potentials(formulation):
    x, X, Z = _random_batch(5, 6, 10, 30, 0.4)
    least = solve_cip(x, X, Z, l=-1.0, formulation=formulation)
    lp = solve_cip(x, X, Z, l=-1.0, formulation=formulation, potentials="lp")
    assert torch.equal(least.steps, lp.steps) and lp.converged.all()
    for b in range(len(x)):
        s = lp.steps[b].item()
        w = cip_reference.eq15_weights(X[b].numpy(), Z[b].numpy(), L + s * DELTA, -1.0 - s * DELTA)
        U, tol = lp.potentials[b].numpy(), 1e-9 * np.abs(w).max()
        assert U.min() >= -tol and (U[:, None] - U[None, :] - w).min() >= -tol
        assert U.max() == pytest.approx(least.potentials[b].max().item(), rel=1e-9, abs=tol)
        g_ref, _ = cip_reference.features_qcp(x[b].numpy(), X[b].numpy(), Z[b].numpy(), U, L, -1.0,
                                              formulation)
        assert np.linalg.norm(lp.features[b].numpy() - g_ref) <= 1e-5 * np.linalg.norm(g_ref)


def test_duplicate_neighbours():
    """Copies of a neighbour change nothing: same answer as without them, and as the reference."""
    x, X, Z = _random_batch(7, 3, 7, 20, 0.3)
    dup = [0, 1, 2, 3, 4, 5, 6, 0, 4, 4]
    Xd, Zd = X[:, dup], Z[:, dup]
    for f in FORMULATIONS:
        for l in LS:
            a = solve_cip(x, X, Z, l=l, formulation=f)
            b = solve_cip(x, Xd, Zd, l=l, formulation=f)
            assert torch.equal(a.steps, b.steps) and b.converged.all()
            torch.testing.assert_close(b.features, a.features, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(b.value, a.value, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(b.potentials, a.potentials[:, dup], rtol=1e-10, atol=1e-12)
    g_ref, _ = cip_reference.features_qcp(x[0].numpy(), Xd[0].numpy(), Zd[0].numpy(), b.potentials[0].numpy(),
                                          L, l, f)
    assert np.linalg.norm(b.features[0].numpy() - g_ref) <= 1e-5 * np.linalg.norm(g_ref)


def test_near_duplicates_are_continuous():
    """A neighbour 1e-10 away from another is a (numerically) singular QP: the answer moves by O(1e-10)."""
    x, X, Z = _random_batch(8, 4, 10, 20, 0.3)
    X[:, 1], Z[:, 1] = X[:, 0], Z[:, 0]
    base = solve_cip(x, X, Z, l=0.5, formulation="reference-code")
    X[:, 1] += 1e-10 * torch.randn_like(X[:, 1])
    near = solve_cip(x, X, Z, l=0.5, formulation="reference-code")
    assert near.converged.all()
    torch.testing.assert_close(near.features, base.features, rtol=1e-8, atol=0)


def test_all_neighbours_identical():
    x, X, Z = _random_batch(9, 2, 1, 50, 0.3)
    X, Z = X.expand(-1, 10, -1).clone(), Z.expand(-1, 10, -1).clone()
    res = solve_cip(x, X, Z, l=-1.0, formulation="paper")
    assert res.converged.all() and (res.steps == 0).all()
    torch.testing.assert_close(res.features, Z[:, 0] - (x - X[:, 0]))


def test_brenier_weights_shapes_and_values():
    _, X, Z = _random_batch(10, 3, 10, 15, 0.3)
    w = brenier_weights(X, Z, 2.4, -0.4)
    assert w.shape == (3, 10, 10)
    w_ref = cip_reference.eq15_weights(X[1].numpy(), Z[1].numpy(), 2.4, -0.4)
    np.testing.assert_allclose(w[1].numpy(), w_ref, rtol=1e-10, atol=1e-10)
    s = torch.arange(4, dtype=torch.float64)[None]  # (1, S): broadcast to (B, S)
    ws = brenier_weights(X, Z, 2 + 0.2 * s, -0.2 * s)
    assert ws.shape == (3, 4, 10, 10)
    torch.testing.assert_close(ws[:, 2], brenier_weights(X, Z, 2.4, -0.4))


def test_infeasible_beyond_max_steps_raises():
    x, X, Z = _random_batch(11, 2, 10, 5, 0.3)
    X[:, 1] = X[:, 0]  # same input, different gradient: no convex function fits, whatever (L, l)
    with pytest.raises(RuntimeError, match="max_steps"):
        solve_cip(x, X, Z, max_steps=50)


def test_bad_options():
    x, X, Z = _random_batch(12, 2, 10, 5, 0.3)
    with pytest.raises(ValueError, match="paper, reference-code"):
        solve_cip(x, X, Z, formulation="mosek")
    with pytest.raises(ValueError, match="least, lp"):
        solve_cip(x, X, Z, potentials="greatest")
    with pytest.raises(ValueError, match="l < L"):
        solve_cip(x, X, Z, L=1.0, l=1.0)
    with pytest.raises(ValueError):
        solve_cip(x, X[:, :, :4], Z, l=0.0)


def test_float32_inputs():
    x, X, Z = _random_batch(13, 4, 10, 40, 0.3)
    ref = solve_cip(x.float().double(), X.float().double(), Z.float().double(), l=0.5)
    res = solve_cip(x.float(), X.float(), Z.float(), l=0.5)
    assert res.features.dtype == res.value.dtype == res.potentials.dtype == torch.float32
    assert res.steps.dtype == torch.int64 and res.converged.dtype == torch.bool
    torch.testing.assert_close(res.features, ref.features.float(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("formulation", FORMULATIONS)
@pytest.mark.parametrize("potentials", ["least", "lp"])
def test_gradient_wrt_x_matches_finite_differences(formulation, potentials):
    x, X, Z = _random_batch(14, 3, 6, 5, 0.5)  # supports of 3-6 neighbours, away from kinks
    assert solve_cip(x, X, Z, l=0.5).steps.max() > 0

    def run(x):
        r = solve_cip(x, X, Z, l=0.5, formulation=formulation, potentials=potentials)
        return r.features, r.value

    assert torch.autograd.gradcheck(run, (x.requires_grad_(),), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_gradient_wrt_neighbours_matches_finite_differences():
    x, X, Z = _random_batch(16, 2, 5, 3, 0.5)
    assert solve_cip(x, X, Z, l=0.5).steps.max() > 0  # the potentials come from a relaxed step

    def run(X, Z):
        r = solve_cip(x, X, Z, l=0.5, formulation="reference-code")
        return r.features, r.value, r.potentials

    inputs = (X.requires_grad_(), Z.requires_grad_())
    assert torch.autograd.gradcheck(run, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x, X, Z = _random_batch(15, 64, 10, 50, 0.4)
    cpu = solve_cip(x, X, Z, l=-1.0)
    gpu = solve_cip(x.cuda(), X.cuda(), Z.cuda(), l=-1.0)
    assert torch.equal(gpu.steps.cpu(), cpu.steps) and gpu.converged.all()
    torch.testing.assert_close(gpu.features.cpu(), cpu.features, rtol=1e-9, atol=1e-10)


def _face_step_by_eigh(H, c, grad, free):
    """The face step by an eigendecomposition only (what _face_step does on the faces LU does not settle)."""
    from otbench.defenses.otad.cip import _PINV_RTOL, _kkt
    K = H.shape[-1]
    A, s = _kkt(H, c, free)
    rhs = torch.cat([torch.where(free, -grad, 0) / s[:, None], grad.new_zeros(len(grad), 1)], 1)
    ev, V = torch.linalg.eigh(A)
    keep = ev.abs() > _PINV_RTOL * ev.abs().amax(1, keepdim=True)
    coef = (V.mT @ rhs[..., None])[..., 0]
    step = (V @ torch.where(keep, coef / torch.where(keep, ev, 1), 0)[..., None])[:, :K, 0]
    ray = (V @ torch.where(keep, 0, coef)[..., None])[:, :K, 0]
    singular = ray.norm(dim=1) > 1e-9 * rhs.norm(dim=1)
    return torch.where(singular[:, None], ray, step), singular


@pytest.mark.parametrize("dup", [False, True])
def test_face_step_matches_eigendecomposition(dup):
    """LU on the well-conditioned faces, the eigendecomposition on the singular ones (duplicate points: a face
    with no minimiser, whose step is a ray): the same steps and verdicts as the eigendecomposition alone."""
    from otbench.defenses.otad.cip import _face_step
    g = torch.Generator().manual_seed(11)
    P = torch.randn(64, 8, 12, generator=g, dtype=torch.float64)
    if dup:  # equal up to rounding-sized noise: LU finds tiny pivots, not exact zeros
        P[:, 1] = P[:, 0] + 1e-14 * torch.randn(64, 12, generator=g, dtype=torch.float64)
        P[:, 5] = P[:, 3]
    H = P @ P.mT
    c = torch.randn(64, 8, generator=g, dtype=torch.float64)
    if dup:  # unequal linear terms on equal points: the face's minimum is at infinity
        c[:, 1] = c[:, 0] + 1.0
    free = torch.rand(64, 8, generator=g) < 0.8
    free[:, :2] = True
    grad = torch.randn(64, 8, generator=g, dtype=torch.float64)
    step, singular = _face_step(H, c, grad, free)
    ref_step, ref_singular = _face_step_by_eigh(H, c, grad, free)
    assert torch.equal(singular, ref_singular) and singular.any() == dup
    torch.testing.assert_close(step, ref_step, rtol=1e-7, atol=1e-9)


def test_precomputed_neighbourhood_is_bitwise_equal():
    """solve_cip with a neighbourhood computed beforehand (on other rows, in another batch) equals a fresh solve
    bit for bit: what makes OTAD's per-neighbour-list memo exact."""
    from otbench.defenses.otad.cip import neighbourhood
    x, X, Z = _random_batch(12, 9, 10, 40, 0.3)
    fresh = solve_cip(x, X, Z, l=0.0)
    rows = torch.tensor([4, 0, 7])
    nb = neighbourhood(torch.cat([X[rows], X]), torch.cat([Z[rows], Z]))[3:]  # other rows first, then these
    memo = solve_cip(x, X, Z, l=0.0, nb=nb)
    for name in ("features", "value", "potentials", "steps"):
        assert torch.equal(getattr(memo, name), getattr(fresh, name)), name
    with pytest.raises(ValueError, match="no gradient"):
        solve_cip(x, X.requires_grad_(), Z, nb=nb)
