"""The keys results are stored under. A cell is identified by everything that determines its numbers: the
defense (its registered name, dataset and full config), the attack and its settings, eps, the seeds and the
chunk size (chunk seeds derive from it). Changing what goes into a key orphans every stored cell, so a change
here comes with a schema migration (otbench/migrations.py) that re-keys stored databases."""
from __future__ import annotations

from typing import Any

from .config import config_hash


def defense_identity(name: str, dataset: str, config: dict[str, Any]) -> dict[str, Any]:
    """The stored identity of a defense: its registered name beside its config (sections preset, train,
    defense), so two defenses with equal settings never share results."""
    return {"name": name, "dataset": dataset, **config}


def cell_key(defense: dict[str, Any], attack: str, attack_config: dict[str, Any], eps: float, seed: int,
             subset_seed: int, chunk_size: int) -> str:
    """The cell id: a hash of the defense identity and everything else that determines the cell's numbers."""
    return config_hash({"defense": defense, "attack": attack, "attack_config": attack_config, "eps": eps,
                        "seed": seed, "subset_seed": subset_seed, "chunk_size": chunk_size}, 24)
