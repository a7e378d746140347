"""What the executor tests share, importable by Ray's worker processes too (the tests put this folder on their
PYTHONPATH): a small real grid, the rows a store holds for it, and an attack that kills its own worker."""
from __future__ import annotations

import os
from pathlib import Path

from support import DATA, TINY_TRAIN

from otbench.attacks.square import Square
from otbench.plan import RunPlan
from otbench.store import ResultStore

HERE = Path(__file__).resolve().parent
KILL_MARKER_ENV = "OTBENCH_TEST_KILL_MARKER"  # set for Ray's workers only, never for the test process
KILL_CHUNK = 1


class KillOnceSquare(Square):
    """Square, except that inside a Ray worker whose environment names a marker file that does not exist yet,
    it writes the file (its pid) and kills its own process with os._exit on chunk KILL_CHUNK of the first cell
    that reaches it: a worker lost mid-chunk, before any row of that chunk exists."""

    def run(self, images, labels, seed):
        marker = os.environ.get(KILL_MARKER_ENV)
        if marker and seed % 1_000_003 == KILL_CHUNK and not os.path.exists(marker):
            Path(marker).write_text(str(os.getpid()))
            os._exit(1)
        return super().run(images, labels, seed)


SQUARE = {"square": ((1.5,), {"n_queries": 20})}
NGOPT = {"ngopt-cw": ((0.1,), {"budget": 8})}


def grid(executor: str = "local", attacks: dict[str, tuple[tuple, dict]] | None = None,
         defenses: tuple[str, ...] = ("standard", "knn"), **options) -> RunPlan:
    """Tiny defenses on real MNIST, by default under Square and NGOpt (attack -> (eps, settings)), 8 samples
    in chunks of 4, with the undefended-network checks (their cells go through the executor too)."""
    from otbench.executors import ExecutorOptions
    from otbench.plan import AttackJob, DefenseJob

    jobs = tuple(AttackJob(a, eps, config) for a, (eps, config) in (attacks or {**SQUARE, **NGOPT}).items())
    methods = {"train": dict(TINY_TRAIN), "defense": {}}
    where = {k: options.pop(k) for k in ("workers", "ray_address", "gpus_per_worker", "threads") if k in options}
    return RunPlan("mnist", [DefenseJob(d, "quick", methods, jobs) for d in defenses], n=8, chunk=4,
                   data_root=str(DATA), executor=ExecutorOptions(executor, **where), **options)


def stored(path: Path) -> dict[str, list[tuple]]:
    """Every cell's per-sample rows, exactly as stored (floats included)."""
    store = ResultStore(path)
    try:
        return {c["cell_id"]: [(r.sample_id, r.label, r.clean_pred, r.adv_pred, r.pert_norm, r.queries)
                               for r in store.rows(c["cell_id"])] for c in store.cells()}
    finally:
        store.close()


def run_grid(path: Path, plan: RunPlan) -> dict[str, list[tuple]]:
    plan.validate()
    store = ResultStore(path)
    try:
        plan.execute(store, progress=False)
    finally:
        store.close()
    return stored(path)
