"""OTAD's analysis quantities (papers/otad.txt V-D1, Fig. 2; V-I, Table XIV): local Lipschitz constants of
feature maps and the relative error RE between the ResNet's and OTAD's features.

**Which map, which norm.** OTAD's step replaces the ResNet feature z = R(x) by the CIP feature f~(x) =
grad phi(x) of an L-smooth, l-strongly convex potential (eq. 7: l||x-y|| <= ||f~(x) - f~(y)|| <= L||x-y||,
Euclidean norms); the classifier H is the same linear map for both. So "the local Lipschitz constant of
OTAD" (Fig. 2b, which grows with L - l) and "of the original ResNet" (about 5.6 in the text) are taken on the
feature maps T = f~ (OTAD) and T = R (ResNet), from inputs to features, in the L2 norm on both sides (the
paper's Lip_2, V-F: the supremum of the Jacobian's spectral norm over a bounded set).

**The estimator** (`local_lipschitz`). The paper computes it "at a noise level eps around 0.3" and gives no
procedure. For each test point x we estimate

    Lip_r(T, x) = max over ||d||_2 = r of ||T(x + d) - T(x)||_2 / r,      r = 0.3,

from below, by (1) `n_directions` directions drawn uniformly on the sphere (normalised Gaussians), then
(2) `ascent_steps` steps of the power-iteration form of projected gradient ascent on the sphere,
d <- r * g / ||g|| with g = grad_d ||T(x + d) - T(x)||^2, started from the best random direction; the
estimate is the largest ratio seen. For a linear T = A, g = 2 A^T A d, so step (2) is exactly the power
method and converges to the top right singular vector: the estimate tends to ||A||_2 (tests check this).
Random directions alone see a typical singular value, not the largest (in 784 dimensions a random d is almost
orthogonal to the top singular vector), so they give a much smaller number; both are reported. Inputs
x + d are not clipped to [0, 1]: T is defined everywhere, and a clip would change ||d||. For OTAD the ascent
differentiates the exact CIP solution (differentiable almost everywhere: the neighbour set and relaxation
step are held fixed at each evaluation, as in `otad-exact-grad`); a neighbour set that changes between
x and x + d is seen by the ratio itself, which is how a jump shows up in an empirical Lipschitz constant.
The summary is the mean over test points of the per-point maxima (the median and max are kept too).

**RE** (`relative_error`): the paper's definition, RE(x) = ||R(x) - f~(x)||_2^2 / ||R(x)||_2^2 (squared
norms), averaged over the test points; the unsquared ratio ||R(x) - f~(x)|| / ||R(x)|| is returned beside it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

FeatureMap = Callable[[torch.Tensor], torch.Tensor]

RADIUS = 0.3  # papers/otad.txt V-D1: "a noise level eps around 0.3"
N_DIRECTIONS = 8
ASCENT_STEPS = 10


@dataclass
class LipschitzEstimate:
    random: torch.Tensor  # (n,) per point: max ratio over the random directions
    ascent: torch.Tensor  # (n,) per point: max ratio over random directions and ascent steps (>= random)
    radius: float
    n_directions: int
    ascent_steps: int
    params: dict = field(default_factory=dict)

    @property
    def mean(self) -> float:
        return float(self.ascent.mean())

    def summary(self) -> dict[str, float]:
        return {"mean": float(self.ascent.mean()), "median": float(self.ascent.median()),
                "max": float(self.ascent.max()), "random_mean": float(self.random.mean())}


def _unit_directions(shape: torch.Size, gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    g = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    return g / g.flatten(1).norm(dim=1).view(-1, *([1] * (len(shape) - 1)))


def _ratio(T: FeatureMap, x: torch.Tensor, fx: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return (T(x + d).double() - fx).flatten(1).norm(dim=1) / d.double().flatten(1).norm(dim=1)


def local_lipschitz(T: FeatureMap, x: torch.Tensor, radius: float = RADIUS, n_directions: int = N_DIRECTIONS,
                    ascent_steps: int = ASCENT_STEPS, seed: int = 0, batch_size: int = 100,
                    init_directions: torch.Tensor | None = None) -> LipschitzEstimate:
    """Per-point lower estimates of sup_{||d|| = radius} ||T(x+d) - T(x)|| / radius (module docstring).

    `init_directions` (m, *x.shape[1:]): extra directions tried at every point besides the random ones.
    The ascent needs T to be differentiable (a.e.) under autograd; if T's output carries no gradient the
    ascent is skipped and the random estimate is returned for both."""
    if radius <= 0 or n_directions < 1 or ascent_steps < 0:
        raise ValueError(f"need radius > 0, n_directions >= 1, ascent_steps >= 0; got {radius}, {n_directions}, "
                         f"{ascent_steps}")
    gen = torch.Generator().manual_seed(seed)
    rand_out, asc_out = [], []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        view = (-1, *([1] * (xb.dim() - 1)))
        with torch.no_grad():
            fx = T(xb).double()
        best = torch.full((len(xb),), -1.0, dtype=torch.float64)
        best_d = torch.zeros_like(xb)
        candidates = [radius * _unit_directions(xb.shape, gen, xb.dtype) for _ in range(n_directions)]
        if init_directions is not None:
            for u in init_directions:
                u = u.to(xb.dtype).expand_as(xb)
                candidates.append(radius * u / u.flatten(1).norm(dim=1).view(view))
        for d in candidates:
            r = _ratio(T, xb, fx, d).cpu()
            better = r > best
            best = torch.where(better, r, best)
            best_d[better] = d[better.to(d.device)]
        rand_best = best.clone()
        d = best_d.clone()
        for _ in range(ascent_steps):
            d.requires_grad_(True)
            out = T(xb + d)
            if not out.requires_grad:
                break
            loss = (out.double() - fx).pow(2).sum()
            (g,) = torch.autograd.grad(loss, d)
            gnorm = g.flatten(1).norm(dim=1)
            ok = (gnorm > 0) & torch.isfinite(gnorm)
            with torch.no_grad():
                step = radius * g / gnorm.clamp_min(1e-300).view(view).to(g.dtype)
                d = torch.where(ok.view(view), step, d.detach())
            r = _ratio(T, xb, fx, d).cpu()
            best = torch.maximum(best, r)
        rand_out.append(rand_best)
        asc_out.append(best)
    return LipschitzEstimate(torch.cat(rand_out), torch.cat(asc_out), radius, n_directions, ascent_steps,
                             {"seed": seed, "batch_size": batch_size})


# -- the feature maps of the paper's comparison ---------------------------------------------------------
def resnet_feature_map(net: torch.nn.Module, device: torch.device | str = "cpu") -> FeatureMap:
    """x -> R(x), the ResNet's last-layer features (net in eval mode)."""
    return lambda x: net.features(x.to(device))


def otad_feature_map(otad) -> FeatureMap:
    """x -> f~(x), OTAD's CIP feature (float64), differentiable a.e. when x requires grad."""
    return lambda x: otad.cip_features(x).features


@dataclass
class RelativeError:
    squared: torch.Tensor  # (n,) ||R(x) - f~(x)||^2 / ||R(x)||^2 (the paper's RE)
    plain: torch.Tensor    # (n,) ||R(x) - f~(x)|| / ||R(x)||
    gap: torch.Tensor      # (n,) relaxed L - l that Algorithm 2 used at x (L + s delta1 - (l - s delta2))


@torch.no_grad()
def relative_error(otad, x: torch.Tensor, batch_size: int = 500) -> RelativeError:
    """RE between the ResNet feature R(x) and OTAD's CIP feature f~(x), per test point."""
    sq, plain, gap = [], [], []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        res = otad.cip_features(xb)
        z = otad.net.features(xb.to(otad.device)).double()
        diff = (res.features.double() - z).norm(dim=1)
        ratio = diff / z.norm(dim=1)
        sq.append(ratio.pow(2).cpu())
        plain.append(ratio.cpu())
        gap.append((res.L_relaxed - res.l_relaxed).double().cpu())
    return RelativeError(torch.cat(sq), torch.cat(plain), torch.cat(gap))
