"""Square on OTAD with ExactKNN's brute-force search and with its incremental search, in the same run.

    python bench/bench_knn_incremental.py [--preset paper] [--n 100] [--queries 2000] [--eps 2 3] [--device auto]
    python bench/bench_knn_incremental.py --preset quick --n 10 --queries 200     # a quick check

Each mode fills its own temporary results file through the run plan the CLI executes (plan.evaluate_defense). Prints
Square's queries per second in each mode (the queries the stored rows count, over the wall time of the cells),
the speed-up, the K-NN's share (the defense's `neighbours` timer, ms per searched row), how the incremental mode
answered its rows (incremental / full search), the cache's memory, and whether every stored row is identical.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from otbench.common.neighbours import incremental_search
from otbench.data import eval_subset, load_dataset
from otbench.defense import create_defense
from otbench.provenance import machine, resolve_device
from otbench.plan import evaluate_defense
from otbench.store import ResultStore


def run_mode(otad, incremental: bool, eps_list: list[float], subset, queries: int, folder: Path) -> dict:
    otad.knn.cache.clear()
    otad.cip.reset()  # the CIP step's memos would otherwise favour the second mode
    otad.timings.clear()
    before = dict(otad.knn.counts)
    searched = {"rows": 0}
    real = otad.knn.search

    def counting(x, k):
        searched["rows"] += len(x)
        return real(x, k)

    otad.knn.search = counting
    store = ResultStore(folder / ("incremental.sqlite" if incremental else "brute-force.sqlite"))
    try:
        with incremental_search(incremental):
            start = time.perf_counter()
            for eps in eps_list:
                evaluate_defense(otad, {"square": [eps]}, subset, store, {"n_queries": queries}, checks=False)
            seconds = time.perf_counter() - start
    finally:
        del otad.knn.search
    rows = [tuple(vars(r).values()) for cell in store.cells() for r in store.rows(cell["cell_id"])]
    return {"seconds": seconds, "queries": sum(r[-1] or 0 for r in rows), "rows": rows,
            "searched": searched["rows"], "knn_s": otad.timings["neighbours"],
            "counts": {k: otad.knn.counts[k] - before.get(k, 0) for k in ("incremental", "full", "uncertified", "rerooted")},
            "cache_mb": otad.knn.cache.nbytes() / 2 ** 20}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="paper")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--queries", type=int, default=2000)
    p.add_argument("--eps", type=float, nargs="+", default=[2.0, 3.0])
    p.add_argument("--device", default="auto")
    p.add_argument("--data-root")
    args = p.parse_args()
    device = resolve_device(args.device)
    data = load_dataset("mnist", args.data_root)
    otad = create_defense("otad", data, args.preset, None, device)
    subset = eval_subset(len(data.x_test), args.n, 0)
    print(f"machine: {machine()}; device {device}; preset {args.preset}; {len(otad.train_x)} training points; "
          f"Square {args.queries} queries, n = {args.n}, eps {args.eps}")
    with tempfile.TemporaryDirectory() as tmp:
        res = {mode: run_mode(otad, mode, args.eps, subset, args.queries, Path(tmp)) for mode in (False, True)}
    for mode, r in res.items():
        name = "incremental" if mode else "brute-force"
        print(f"{name:12s} {r['seconds']:8.1f} s  {r['queries'] / r['seconds']:8.1f} queries/s  "
              f"K-NN {1e3 * r['knn_s'] / max(r['searched'], 1):.3f} ms/row ({r['searched']} rows searched)  "
              f"rows answered {r['counts']}  cache {r['cache_mb']:.0f} MiB")
    off, on = res[False], res[True]
    print(f"speed-up (queries/s): {(on['queries'] / on['seconds']) / (off['queries'] / off['seconds']):.2f}x;  "
          f"K-NN alone: {off['knn_s'] / max(on['knn_s'], 1e-9):.2f}x")
    print(f"stored rows identical: {on['rows'] == off['rows']} ({len(on['rows'])} rows)")


if __name__ == "__main__":
    main()
