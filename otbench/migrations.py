"""The results database's versioned schema (SQLite's `PRAGMA user_version`) and the migrations between versions.

A database is migrated once, in one transaction, when otbench opens it: every stored cell keeps its rows under
the key the current code computes, so nothing is lost or orphaned. A migration first recomputes every stored key
the old way and refuses to run if one does not match (it would otherwise re-key rows it does not understand).

- v1 (user_version 0): the layout before versions were recorded.
- v2: a cell's defense identity holds the defense's registered name (otbench/identity.py; in v1 a config's
  `defense` section replaced the name, so defenses with equal settings shared cells); `runs` records the pid and
  host of the process running it, so a run killed without a chance to say so is recognised.
- v3 (issue 15): settings added since, stored with the value that reproduces what was run: Square's `schedule`
  (`rescaled`) and `init` (`paper`); the shared FC ResNet's train `schedule` (`cosine`). The FC ResNet's paper
  preset changed (one-cycle, 8 epochs): results made with the former one are kept under preset `paper-v1`.
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

from .config import config_hash
from .errors import OTBenchError
from .identity import cell_key, defense_identity

SCHEMA_VERSION = 3
VIEW = "undefended"  # checks.UndefendedView: a defense's undefended network, keyed by its parent's identity


def _v1_defense_identity(name: str, dataset: str, config: dict[str, Any]) -> dict[str, Any]:
    """v1's key: a config with a `defense` section replaced the name."""
    return {"defense": name, "dataset": dataset, **config}


def _stored_parts(row: sqlite3.Row) -> tuple[dict[str, Any], dict[str, Any], int]:
    """A stored cell's defense config (without the training record), attack config and chunk size."""
    defense_config = {k: v for k, v in json.loads(row["defense_config"]).items() if k != "trained"}
    attack_config = json.loads(row["attack_config"])
    chunk = attack_config.pop("chunk_size")
    return defense_config, attack_config, chunk


def _v1_to_v2(db: sqlite3.Connection) -> str:
    cells = db.execute("SELECT * FROM cells").fetchall()
    new_ids: dict[str, str] = {}
    parents: dict[str, dict[str, Any]] = {}  # hash of a v1 defense identity -> its v2 identity
    for row in sorted(cells, key=lambda r: r["defense"] == VIEW):  # parents before their undefended views
        config, attack_config, chunk = _stored_parts(row)
        old = _v1_defense_identity(row["defense"], row["dataset"], config)
        if cell_key(old, row["attack"], attack_config, row["eps"], row["seed"], row["subset_seed"], chunk) \
                != row["cell_id"]:
            raise OTBenchError(f"results database: cell {row['cell_id']} ({row['defense']}/{row['attack']}) does not "
                               f"match its stored settings; it was not written by otbench v1, so it is not migrated")
        if row["defense"] == VIEW and isinstance(config.get("of"), dict):
            config = {**config, "of": parents.get(config_hash(config["of"]), config["of"])}
        new = defense_identity(row["defense"], row["dataset"], config)
        parents[config_hash(old)] = new
        new_ids[row["cell_id"]] = cell_key(new, row["attack"], attack_config, row["eps"], row["seed"],
                                           row["subset_seed"], chunk)
        if row["defense"] == VIEW:  # its record of the parent follows the parent's new identity
            stored = json.loads(row["defense_config"])
            db.execute("UPDATE cells SET defense_config = ? WHERE cell_id = ?",
                       (json.dumps({**stored, "of": config["of"]}, sort_keys=True), row["cell_id"]))
    _rekey_cells(db, new_ids)
    columns = {r[1] for r in db.execute("PRAGMA table_info(runs)")}
    for column, kind in (("pid", "INTEGER"), ("host", "TEXT")):
        if column not in columns:
            db.execute(f"ALTER TABLE runs ADD COLUMN {column} {kind}")
    return f"v1 -> v2: {len(new_ids)} cells re-keyed with their defense's registered name"


# v3: settings that did not exist before, with the value that reproduces what was run then
ADDED_ATTACK_SETTINGS = {"square": {"schedule": "rescaled", "init": "paper"}}
FC_RESNET_TRAIN = {"blocks", "residual", "alpha"}  # train settings that mark the shared FC ResNet's configs


def _v3_config(config: dict[str, Any]) -> dict[str, Any]:
    """A v2 defense config (or identity) as v3 stores it: the FC ResNet's schedule named, its old paper preset
    renamed `paper-v1`; a view's parent identity likewise."""
    config = dict(config)
    if isinstance(config.get("of"), dict):
        config["of"] = _v3_config(config["of"])
        if config["of"].get("preset") == "paper-v1":
            config["preset"] = "paper-v1"
    train = config.get("train")
    if isinstance(train, dict) and FC_RESNET_TRAIN <= set(train) and "schedule" not in train:
        config["train"] = {**train, "schedule": "cosine"}
        if config.get("preset") == "paper":
            config["preset"] = "paper-v1"
    return config


def _v2_to_v3(db: sqlite3.Connection) -> str:
    new_ids: dict[str, str] = {}
    renamed = 0
    for row in db.execute("SELECT * FROM cells").fetchall():
        config, attack_config, chunk = _stored_parts(row)
        old = defense_identity(row["defense"], row["dataset"], config)
        if cell_key(old, row["attack"], attack_config, row["eps"], row["seed"], row["subset_seed"], chunk) \
                != row["cell_id"]:
            raise OTBenchError(f"results database: cell {row['cell_id']} ({row['defense']}/{row['attack']}) does not "
                               f"match its stored settings; it is not migrated")
        config = _v3_config(config)
        attack_config = {**ADDED_ATTACK_SETTINGS.get(row["attack"], {}), **attack_config}
        new_ids[row["cell_id"]] = cell_key(defense_identity(row["defense"], row["dataset"], config), row["attack"],
                                           attack_config, row["eps"], row["seed"], row["subset_seed"], chunk)
        stored = json.loads(row["defense_config"])
        stored = {**config, **({"trained": stored["trained"]} if "trained" in stored else {})}
        renamed += config.get("preset") != row["preset"]
        db.execute("UPDATE cells SET defense_config = ?, attack_config = ?, preset = ? WHERE cell_id = ?",
                   (json.dumps(stored, sort_keys=True), json.dumps({**attack_config, "chunk_size": chunk}, sort_keys=True),
                    config.get("preset", row["preset"]), row["cell_id"]))
    _rekey_cells(db, new_ids)
    analyses = 0
    for row in db.execute("SELECT * FROM analyses").fetchall():
        identity = json.loads(row["identity"])
        upgraded = {**identity, "defense": _v3_config(identity["defense"])}
        if upgraded != identity:
            analyses += 1
            db.execute("UPDATE analyses SET key = ?, identity = ? WHERE key = ?",
                       (config_hash(upgraded, 24), json.dumps(upgraded, sort_keys=True, default=str), row["key"]))
    return (f"v2 -> v3: {len(new_ids)} cells and {analyses} analyses re-keyed with the settings added since; "
            f"{renamed} cells of the former paper network kept under preset paper-v1")


def _rekey_cells(db: sqlite3.Connection, new_ids: dict[str, str]) -> None:
    """Move every row of every table from each old cell id to its new one (flags' keys follow their cells)."""
    for table in ("cells", "samples", "chunks", "runs", "outputs"):
        db.executemany(f"UPDATE {table} SET cell_id = ? WHERE cell_id = ?",
                       [(new, old) for old, new in new_ids.items()])
    for key, code, cell_list in db.execute("SELECT flag_key, code, cells FROM flags").fetchall():
        moved = sorted(new_ids.get(c, c) for c in json.loads(cell_list))
        db.execute("UPDATE flags SET flag_key = ?, cells = ? WHERE flag_key = ?",
                   (config_hash({"code": code, "cells": moved}, 24), json.dumps(moved), key))


MIGRATIONS: dict[int, Callable[[sqlite3.Connection], str]] = {1: _v1_to_v2, 2: _v2_to_v3}  # from version -> step


def migrate(db: sqlite3.Connection, version: int) -> list[str]:
    """Bring a database at `version` to SCHEMA_VERSION inside the caller's transaction (ResultStore opens one for
    all the steps and commits once: a process killed while migrating leaves the file as it was); returns what each
    step did."""
    notes = []
    db.row_factory = sqlite3.Row
    try:
        while version < SCHEMA_VERSION:
            notes.append(MIGRATIONS[version](db))
            version += 1
            db.execute(f"PRAGMA user_version = {version}")
    finally:
        db.row_factory = None
    return notes
