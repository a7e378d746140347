"""Runs (defense, attack, eps) cells over a deterministic test subset, chunk by chunk, into the store."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from tqdm import tqdm

from .attacks import Attack
from .config import config_hash
from .data import Dataset, EvalSubset
from .defense import Defense
from .guard import check_threat_model
from .provenance import command_line, device_name, machine, package_versions
from .registry import ATTACKS
from .store import ResultStore, SampleRow

DEFAULT_CHUNK = 100


@dataclass
class CellSummary:
    dataset: str
    defense: str
    preset: str
    attack: str
    eps: float
    n: int
    clean_accuracy: float
    robust_accuracy: float
    mean_queries: float | None
    wall_seconds: float
    cell_id: str
    computed: int  # samples computed by this call (the rest came from the store)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def cell_identity(defense: Defense, attack: Attack, seed: int, subset_seed: int, chunk_size: int) -> dict:
    return {"defense": defense.identity, "attack": attack.name, "attack_config": attack.config,
            "eps": attack.eps, "seed": seed, "subset_seed": subset_seed, "chunk_size": chunk_size}


def run_cell(defense: Defense, attack_name: str, eps: float, subset: EvalSubset, store: ResultStore,
             attack_config: dict[str, Any] | None = None, seed: int = 0, chunk_size: int = DEFAULT_CHUNK,
             progress: bool = True) -> CellSummary:
    """Evaluate one cell on `subset`, reusing stored rows and committing each finished chunk."""
    attack: Attack = ATTACKS.get(attack_name)(defense, eps, **(attack_config or {}))
    identity = cell_identity(defense, attack, seed, subset.seed, chunk_size)
    cell_id = config_hash(identity, 24)
    data = defense.data
    store.ensure_cell(cell_id, {
        "dataset": data.name, "defense": defense.name, "defense_config": {**defense.config, **_model_meta(defense)},
        "attack": attack.name, "attack_config": {**attack.config, "chunk_size": chunk_size}, "eps": attack.eps,
        "seed": seed, "subset_seed": subset.seed, "preset": defense.config.get("preset")})

    # Chunks are fixed slices of the subset's order, so a resumed run recomputes exactly the same chunks.
    done = store.done_ids(cell_id)
    chunks = [(c, list(subset.ids[s:s + chunk_size])) for c, s in enumerate(range(0, len(subset.ids), chunk_size))]
    todo = [(c, ids) for c, ids in chunks if not set(ids) <= done]
    versions, host = package_versions(), machine()
    run_id = store.start_run(cell_id, command_line(), list(subset.ids), host, versions)
    start, computed, status = time.time(), 0, "interrupted"
    label = f"{defense.name}/{attack.name} eps={eps:g}"
    try:
        for chunk, ids in tqdm(todo, desc=label, disable=not progress or not todo, unit="chunk", leave=False):
            t0 = time.time()
            rows = evaluate_chunk(defense, attack, data, ids, seed=seed * 1_000_003 + chunk)
            store.add_chunk(cell_id, chunk, rows, {"wall_seconds": time.time() - t0, "versions": versions,
                                                   "device": device_name(defense.device), "machine": host})
            computed += len(ids)
        status = "complete"
    finally:
        store.finish_run(run_id, time.time() - start, status)
    return summarize(store, cell_id, data.name, defense, attack, subset, computed)


def evaluate_chunk(defense: Defense, attack: Attack, data: Dataset, ids: list[int], seed: int) -> list[SampleRow]:
    index = torch.tensor(ids)
    x, y = data.x_test[index], data.y_test[index]
    clean = defense.predict(x)
    out = attack(x, y, seed=seed)
    norms = check_threat_model(x, out.adv, attack.norm, attack.eps, attack.name, attack.bounded)
    adv = defense.predict(out.adv)  # the harness evaluates the adversarial inputs itself
    queries = out.queries.tolist() if out.queries is not None else [None] * len(ids)
    return [SampleRow(i, int(l), int(c), int(a), float(nrm), None if q is None else int(q))
            for i, l, c, a, nrm, q in zip(ids, y.tolist(), clean.tolist(), adv.tolist(), norms.tolist(), queries)]


def summarize(store: ResultStore, cell_id: str, dataset: str, defense: Defense, attack: Attack,
              subset: EvalSubset, computed: int) -> CellSummary:
    rows = store.rows(cell_id, subset.ids)
    n = len(rows)
    queries = [r.queries for r in rows if r.queries is not None]
    wall = sum(c["wall_seconds"] for c in store.chunk_records(cell_id))
    return CellSummary(dataset, defense.name, defense.config.get("preset", ""), attack.name, attack.eps, n,
                       sum(r.clean_correct for r in rows) / max(n, 1), sum(r.robust for r in rows) / max(n, 1),
                       sum(queries) / len(queries) if queries else None, wall, cell_id, computed)


def worst_case(store: ResultStore, cell_ids: list[str], ids: tuple[int, ...]) -> dict[str, Any]:
    """Per sample, robust only if robust under every attack: the accuracy an adaptive adversary gets."""
    per_attack = [{r.sample_id: r for r in store.rows(c, ids)} for c in cell_ids]
    common = set.intersection(*(set(p) for p in per_attack)) if per_attack else set()
    robust = sum(all(p[i].robust for p in per_attack) for i in common)
    return {"n": len(common), "robust_accuracy": robust / max(len(common), 1)}


def _model_meta(defense: Defense) -> dict[str, Any]:
    record = getattr(defense, "train_record", None)
    return {"trained": record} if record else {}
