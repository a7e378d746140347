"""Throughput of the batched exact CIP solver (otbench/defenses/otad/cip.py) against the per-sample cvxpy +
Clarabel reference (otbench/defenses/otad/reference.py), measured in the same run.

    python bench/bench_cip.py [--n N] [--device cpu|cuda]

d = 784: K=10 nearest MNIST training images (of 10000) of N test images, features Z = X + tanh(X A)
(a fixed random residual map that needs ~10 relaxation steps at delta 0.2, like a trained OTAD net).
d = 24960: OTAD-T sized inputs (65 tokens x 384), synthetic neighbourhoods, a token-wise residual map.
The reference runs Algorithm 2 per point: one LP per relaxation step until feasible, then the QCP
(eq. 16). Its QCP is fed our potentials so that the features can be compared (the reference LP returns
another point of the optimal face; the cost is the same).

Runs torch single-threaded by default, like the reference (Clarabel): a per-core comparison, and on a
CPU shared with busy processes torch's multi-threaded small kernels stall. --threads N to change.
"""
from __future__ import annotations

import argparse
import gzip
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from otbench.defenses.otad import cip
from otbench.defenses.otad import reference as cip_reference

L, l, DELTA = 2.0, 0.0, 0.2


def mnist_neighbourhoods(n: int, rng: np.random.Generator):
    raw = Path(os.environ.get("OTBENCH_DATA", "/work/shared/data")) / "MNIST" / "raw"

    def images(name):
        with gzip.open(raw / f"{name}-images-idx3-ubyte.gz") as f:
            data = f.read()
        return np.frombuffer(data, np.uint8, offset=16).reshape(-1, 784).astype(np.float64) / 255

    if not (raw / "train-images-idx3-ubyte.gz").exists():
        print(f"  (MNIST not found under {raw}: synthetic neighbourhoods instead)")
        return synthetic_neighbourhoods(n, 784, 784, rng)
    train, test = images("train")[:10000], images("t10k")[:n]
    A = rng.standard_normal((784, 784)) * 4 / np.sqrt(784)
    dist = (test ** 2).sum(1)[:, None] + (train ** 2).sum(1)[None] - 2 * test @ train.T
    X = train[np.argsort(dist, 1)[:, :10]]
    return torch.from_numpy(test), torch.from_numpy(X), torch.from_numpy(X + np.tanh(X @ A))


def synthetic_neighbourhoods(n: int, d: int, width: int, rng: np.random.Generator):
    """Neighbours scattered around each test point; a token-wise residual map (tokens of `width`)."""
    A = torch.from_numpy(rng.standard_normal((width, width)) * 4 / np.sqrt(width))
    x = torch.from_numpy(rng.random((n, d)))
    X = x[:, None] + 0.3 * torch.from_numpy(rng.standard_normal((n, 10, d))) / np.sqrt(d / 784)
    Z = X + torch.tanh((X.view(n, 10, -1, width) @ A).view(n, 10, d))
    return x, X, Z


def timed(fn, device, repeat=3):
    best, out = float("inf"), None
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best, out


def reference(x, X, Z, U):
    """Algorithm 2 for one point with cvxpy: LPs along the schedule, then the QCP (fed our potentials U).
    Returns (seconds, steps, g, v)."""
    t = time.perf_counter()
    g, v, verdicts = cip_reference.solve_reference(x, X, Z, L=L, l=l, delta1=DELTA, delta2=DELTA,
                                                   potentials=U)
    return time.perf_counter() - t, len(verdicts) - 1, g, v


def bench(name, x, X, Z, device, n_ref):
    B, K, d = X.shape
    x, X, Z = x.to(device), X.to(device), Z.to(device)
    res = cip.solve_cip(x, X, Z, L=L, l=l, delta1=DELTA, delta2=DELTA)  # warm-up
    t_all, res = timed(lambda: cip.solve_cip(x, X, Z, L=L, l=l, delta1=DELTA, delta2=DELTA), device)
    t_gram, M = timed(lambda: cip._grams(X, Z, x), device)
    T = cip._pair_terms(M, K)
    t_search, _ = timed(lambda: cip._search(T, L, l, DELTA, DELTA, 2000), device)
    steps = res.steps.cpu()
    print(f"\n{name}: B={B}, K={K}, d={d}, device={device}, torch threads={torch.get_num_threads()}")
    print(f"  relaxation steps: median {steps.median().item()}, max {steps.max().item()}, "
          f"zero on {(steps == 0).float().mean().item():.0%}; "
          f"converged {res.converged.float().mean().item():.0%}")
    print(f"  batched solve_cip: {t_all:.3f} s for {B} points = {t_all / B * 1e3:.3f} ms/sample "
          f"(Gram {t_gram / t_all:.0%}, feasibility search {t_search / t_all:.0%}, "
          f"potentials + QP + rest {(t_all - t_gram - t_search) / t_all:.0%})")
    times, errs_g, errs_v, same_steps = [], [], [], 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for b in range(n_ref):
            args = [t[b].double().cpu().numpy() for t in (x, X, Z)]
            t, s, g, v = reference(*args, res.potentials[b].double().cpu().numpy())
            times.append(t)
            same_steps += s == steps[b].item()
            errs_g.append(np.linalg.norm(res.features[b].cpu().numpy() - g) / np.linalg.norm(g))
            errs_v.append(abs(res.value[b].item() - v) / abs(v))
    t_ref = float(np.mean(times))
    print(f"  per-sample cvxpy reference ({n_ref} points): {t_ref:.3f} s/sample")
    print(f"  speed-up: {t_ref / (t_all / B):,.0f}x")
    print(f"  agreement on those points: steps {same_steps}/{n_ref}, max rel. error g {max(errs_g):.1e}, "
          f"v {max(errs_v):.1e}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="batch size at d=784")
    p.add_argument("--n-large", type=int, default=200, help="batch size at d=24960 (~0.5 GB per 100)")
    p.add_argument("--ref", type=int, default=6, help="points solved by the reference at d=784")
    p.add_argument("--ref-large", type=int, default=2, help="points solved by the reference at d=24960")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    rng = np.random.default_rng(0)
    bench("MNIST neighbourhoods", *mnist_neighbourhoods(a.n, rng), device, a.ref)
    large = synthetic_neighbourhoods(a.n_large, 24960, 384, rng)
    bench("OTAD-T sized neighbourhoods", *large, device, a.ref_large)


if __name__ == "__main__":
    main()
