"""The keys results are stored under. A cell is identified by everything that determines its numbers: the
defense (its registered name, dataset and full config), the attack and its settings, eps, the seeds and the
chunk size (chunk seeds derive from it). Changing what goes into a key orphans every stored cell, so a change
here comes with a schema migration (otbench/migrations.py) that re-keys stored databases."""
from __future__ import annotations

import json
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


# What a training record says of the run rather than of the network: left out when two records are compared.
_RUN_KEYS = ("train_seconds", "device", "threads")


def network_signature(record: Any) -> Any:
    """A training record without the keys that describe the run (time, device, threads): what remains (test
    accuracy, losses, errors measured on fixed data) is a function of the trained weights. A cell's key holds the
    settings, not the weights, so two cells under one key from different networks differ here."""
    if isinstance(record, dict):
        return {k: network_signature(v) for k, v in record.items() if k not in _RUN_KEYS}
    return record


def cell_network(cell: dict[str, Any]) -> str:
    """The trained network a stored cell's rows came from, as comparable text ("" when the defense trains
    nothing): cells under different networks must never be combined into one number."""
    return json.dumps(network_signature(cell["defense_config"].get("trained")), sort_keys=True, default=str)


def network_summary(record: Any, width: int = 120) -> str:
    """A training record's network-describing values in one short line, nested records flattened
    (e.g. `classifier.test_accuracy 0.9831`): for messages and labels that tell two networks apart."""
    def flat(value: Any, prefix: str) -> list[str]:
        if isinstance(value, dict):
            return [part for k, v in sorted(value.items()) for part in flat(v, f"{prefix}{k}.")]
        return [f"{prefix[:-1]} {value}" if prefix else str(value)]

    text = ", ".join(flat(network_signature(record), ""))
    return text if len(text) <= width else text[:width - 3] + "..."
