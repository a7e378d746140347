"""Where the time of an OTAD Square-attack cell goes, and what the whole Table III row would cost.

    python bench/bench_otad_square.py [--preset quick|paper] [--n 50] [--queries 100] [--device cpu|cuda]

Runs the real Square attack (torchattacks) against OTAD on n real MNIST test samples for a few queries,
reports seconds per stage (exact K-NN, CIP solve, rest) and per defended forward sample, the undefended
network's cost per forward sample measured in the same run as the reference (ratio printed), and an
extrapolation to the paper's row: 1000 samples x 2000 queries x 2 budgets.
"""
from __future__ import annotations

import argparse
import time

import torch

from otbench.attacks.square import Square
from otbench.data import eval_subset, load_dataset
from otbench.defense import create_defense
from otbench.provenance import machine, resolve_device


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="quick")
    p.add_argument("--n", type=int, default=50)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--eps", type=float, default=3.0)
    p.add_argument("--device", default="auto")
    p.add_argument("--data-root")
    args = p.parse_args()
    device = resolve_device(args.device)
    data = load_dataset("mnist", args.data_root)
    otad = create_defense("otad", data, args.preset, None, device)
    standard = create_defense("standard", data, args.preset, None, device)
    ids = torch.tensor(eval_subset(len(data.x_test), args.n, 0).ids)
    x, y = data.x_test[ids], data.y_test[ids]

    # Count defended forward samples by wrapping logits.
    counted = {"samples": 0}
    real_logits = otad.logits

    def counting_logits(inp):
        counted["samples"] += len(inp)
        return real_logits(inp)

    otad.logits = counting_logits
    otad.timings.clear()
    start = time.perf_counter()
    Square(otad, args.eps, n_queries=args.queries)(x, y, seed=0)
    total = time.perf_counter() - start
    per_sample = total / counted["samples"]

    xb = x.repeat(20, 1, 1, 1).to(device)
    with torch.no_grad():
        standard.logits(xb)
        t0 = time.perf_counter()
        standard.logits(xb)
        if device.type == "cuda":
            torch.cuda.synchronize()
        ref = (time.perf_counter() - t0) / len(xb)

    print(f"machine: {machine()}; device {device}; preset {args.preset}; train points {len(otad.train_x)}")
    print(f"Square eps={args.eps} on n={args.n} for {args.queries} queries: {total:.2f} s, "
          f"{counted['samples']} defended forward samples")
    for stage, sec in sorted(otad.timings.items()):
        print(f"  {stage:12s} {sec:8.2f} s  ({100 * sec / total:5.1f}%)")
    rest = total - sum(otad.timings.values())
    print(f"  {'rest':12s} {rest:8.2f} s  ({100 * rest / total:5.1f}%)  (network head, attack bookkeeping)")
    print(f"OTAD forward: {1e3 * per_sample:.3f} ms/sample; undefended network: {1e3 * ref:.4f} ms/sample; "
          f"ratio {per_sample / ref:.0f}x")
    # Square stops querying a sample once it is fooled; at most 1000 x 2000 x 2 forward samples.
    worst = 1000 * 2000 * 2 * per_sample
    print(f"Table III OTAD row, upper bound (every sample survives all 2000 queries, both eps): "
          f"{worst / 60:.0f} min on this device")


if __name__ == "__main__":
    main()
