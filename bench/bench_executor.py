"""Speed-up of the Ray executor: the same grid with the local executor, then Ray with 1 and 2 workers.

    python bench/bench_executor.py [--n 40] [--chunk 5] [--budget 300] [--queries 300] [--data-root DIR]

The grid: a small FC-ResNet (`standard`, 2 blocks, 1 epoch on 3000 MNIST images: trained once, here) under
NGOpt-CW (eps = sigma 0.1, 0.2) and Square (L2 eps 1.5, 2), n real MNIST test samples in chunks. Each run
writes a fresh results database; the script checks that all three stored exactly the same rows, then prints
wall times and speed-ups. Every worker (and the local run) computes with one torch thread, so the runs do the
same arithmetic. A local Ray with as many CPUs as the machine has is started for the two Ray runs; its start
and the actors' start (importing torch, fetching the data and the model) are timed separately from the grid.
The reference, measured in the same run before and after: how much faster this machine runs the same
single-threaded work in two processes than in one (2.0 on two free cores; less on cores shared with other
jobs): no executor can beat it.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from otbench.executors import ExecutorOptions
from otbench.plan import AttackJob, DefenseJob, RunPlan
from otbench.provenance import machine
from otbench.store import ResultStore

SMALL = {"blocks": 2, "residual": True, "epochs": 1, "batch_size": 64, "lr": 0.05, "momentum": 0.9,
         "weight_decay": 5e-4, "alpha": 0.0, "train_size": 3000, "seed": 0}


def plan(args: argparse.Namespace, executor: str = "local", **options) -> RunPlan:
    attacks = (AttackJob("ngopt-cw", (0.1, 0.2), {"budget": args.budget}),
               AttackJob("square", (1.5, 2.0), {"n_queries": args.queries}))
    job = DefenseJob("standard", "quick", {"train": dict(SMALL), "defense": {}}, attacks)
    return RunPlan("mnist", [job], n=args.n, chunk=args.chunk, data_root=args.data_root, checks=False,
                   device="cpu", executor=ExecutorOptions(executor, threads=1, **options))


def rows(path: Path) -> dict:
    store = ResultStore(path)
    out = {c["cell_id"]: [(r.sample_id, r.clean_pred, r.adv_pred, r.pert_norm, r.queries)
                          for r in store.rows(c["cell_id"])] for c in store.cells()}
    store.close()
    return out


def chunk_seconds(path: Path) -> float:
    """The summed compute time of the stored chunks (each measured where it ran)."""
    store = ResultStore(path)
    total = sum(r["wall_seconds"] for c in store.cells() for r in store.chunk_records(c["cell_id"]))
    store.close()
    return total


def timed(p: RunPlan, path: Path, backend=None) -> float:
    p.validate()
    store = ResultStore(path)
    start = time.perf_counter()
    p.execute(store, progress=False, backend=backend)
    store.close()
    return time.perf_counter() - start


def _burn(units: int) -> float:
    """A fixed amount of single-threaded float work (the kind the chunks do); its own wall time."""
    torch.set_num_threads(1)
    a = torch.rand(256, 256, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    for _ in range(units):
        a = torch.tanh(a @ a)
    return time.perf_counter() - start


def machine_parallelism(units: int = 1500) -> float:
    """What two processes get from this machine: the same work alone, then twice at once in two processes;
    2.0 on two free cores, less where other jobs (or other machines' jobs on shared cores) hold them. The
    reference the Ray speed-up is to be read against."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.map(_burn, [10, 10], chunksize=1)  # both workers up, torch loaded
        t0 = time.perf_counter()
        pool.map(_burn, [units], chunksize=1)
        alone = time.perf_counter() - t0
        t0 = time.perf_counter()
        pool.map(_burn, [units, units], chunksize=1)
        both = time.perf_counter() - t0
    return 2 * alone / both


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--chunk", type=int, default=5)
    ap.add_argument("--budget", type=int, default=300, help="NGOpt steps per sample")
    ap.add_argument("--queries", type=int, default=300, help="Square queries per sample")
    ap.add_argument("--data-root", default=os.environ.get("OTBENCH_DATA"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    import ray

    from otbench.executors.ray import RayExecutor

    tmp = Path(tempfile.mkdtemp(prefix="bench-executor-"))
    print(f"machine: {machine()}; load average before: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    n_chunks = 4 * -(-args.n // args.chunk)
    print(f"grid: standard (small) x [ngopt-cw sigma 0.1, 0.2 (budget {args.budget}), square eps 1.5, 2 "
          f"({args.queries} queries)], n={args.n}, {n_chunks} chunks of {args.chunk}")
    timed(plan(args), tmp / "warm.sqlite")  # trains the model (once) and loads the libraries: not measured
    before = machine_parallelism()
    print(f"this machine runs two single-threaded processes {before:.2f}x as fast as one (ideal 2.00)")
    times = {"local": timed(plan(args), tmp / "local.sqlite")}
    t0 = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING")
    print(f"ray.init: {time.perf_counter() - t0:.1f} s")
    for workers in (1, 2):
        t0 = time.perf_counter()
        executor = RayExecutor(workers=workers, threads=1, device="cpu")
        executor.pids()  # the actors are up
        start = time.perf_counter() - t0
        times[f"ray x{workers}"] = timed(plan(args, executor="ray", workers=workers), tmp / f"ray{workers}.sqlite",
                                         executor)
        executor.close()
        print(f"ray x{workers}: actors started in {start:.1f} s")
    ray.shutdown()
    reference = rows(tmp / "local.sqlite")
    same = all(rows(tmp / f"ray{w}.sqlite") == reference for w in (1, 2))
    print(f"rows identical across local, ray x1, ray x2: {same}")
    files = {"local": "local", "ray x1": "ray1", "ray x2": "ray2"}
    for name, seconds in times.items():
        busy = chunk_seconds(tmp / f"{files[name]}.sqlite")
        # chunks in flight on average, and what one chunk took where it ran: two workers on two free cores keep
        # the second at the first's; on cores other jobs hold, it grows instead
        print(f"{name:8s} grid wall {seconds:7.1f} s; chunk compute {busy:6.1f} s in all, {busy / n_chunks:.2f} s "
              f"per chunk, {busy / seconds:.2f} chunks in flight on average")
    print(f"speed-up ray x2 over ray x1: {times['ray x1'] / times['ray x2']:.2f}x; "
          f"over local: {times['local'] / times['ray x2']:.2f}x")
    after = machine_parallelism()
    print(f"and after the runs: {after:.2f}x; load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if not same:
        raise SystemExit("rows differ between executors")


if __name__ == "__main__":
    main()
