"""Configs: presets, command-line overrides and the canonical hash that names cached models and cells."""
from __future__ import annotations

import copy
import hashlib
import json
import math
import tomllib
from pathlib import Path
from typing import Any, Iterable, Mapping

from .errors import OTBenchError
from .files import read_text

SECTIONS = ("defense", "train", "attack")
NULLABLE = {"train_size"}  # settings where null means "all" even when the preset gives a number

# Ranges by setting name, shared by every defense and attack (a setting's own class may check more): counts and
# sizes are integers >= 1, seeds >= 0, learning rates > 0, momenta and fractions in [0, 1); every number finite.
_COUNTS = {"epochs", "batch_size", "steps", "n_queries", "n_restarts", "budget", "binary_search_steps", "candidates",
           "eot_samples", "blocks", "depth", "heads", "width", "hidden", "dim", "ensemble", "iterations", "restarts",
           "patch", "num_layers", "init_channels", "latent_dim", "critic_steps"}
_COUNT_SUFFIXES = ("_epochs", "_batch_size", "_width", "_depth", "_heads", "_atoms", "_size", "_images", "_n_train",
                   "_emb", "_channels", "_dim", "_terms")
_NON_NEGATIVE = {"p_warm_epochs", "adv_steps", "rec_steps"}  # 0 means none (no warm-up, no steps)


def _range_problem(key: str, value: Any) -> str | None:
    """What is wrong with a number for setting `key`, or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value):
        return "must be a finite number"
    if key in _NON_NEGATIVE:
        return None if isinstance(value, int) and value >= 0 else "must be an integer >= 0"
    if key in _COUNTS or key.endswith(_COUNT_SUFFIXES):
        return None if isinstance(value, int) and value >= 1 else "must be an integer of at least 1"
    if key == "seed" or key.endswith("_seed"):
        return None if isinstance(value, int) and value >= 0 else "must be an integer >= 0"
    if key == "lr" or key.endswith("_lr") or key.startswith("lr_"):
        return None if value > 0 else "must be > 0"
    if key in ("momentum", "rec_momentum", "adv_clean_fraction"):
        return None if 0 <= value < 1 else "must be in [0, 1)"
    if key == "weight_decay":
        return None if value >= 0 else "must be >= 0"
    if key == "p_init":
        return None if 0 < value <= 1 else "must be in (0, 1]"
    return None


def config_hash(obj: Any, length: int = 16) -> str:
    """Stable hash of a JSON-able object (key order and int/float spelling do not matter)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def parse_value(text: str) -> Any:
    """`3` -> 3, `0.2` -> 0.2, `true` -> True, `[1,2]` -> [1, 2], anything else stays a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_overrides(items: Iterable[str]) -> dict[str, dict[str, Any]]:
    """`--set defense.K=5 --set train.epochs=3` -> {"defense": {"K": 5}, "train": {"epochs": 3}}."""
    out: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for item in items:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or section not in SECTIONS or not name:
            raise OTBenchError(
                f"bad --set '{item}': expected SECTION.KEY=VALUE with SECTION one of {', '.join(SECTIONS)}")
        out[section][name] = parse_value(value)
    return out


def load_config_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """A TOML or JSON file with [defense], [train] and [attack] tables."""
    if not str(path).strip():
        raise OTBenchError("--config is empty; give a TOML or JSON file with [defense], [train], [attack]")
    path = Path(path)
    kind = "TOML" if path.suffix == ".toml" else "JSON"
    text = read_text(path, "config file", "give a TOML or JSON file with [defense], [train], [attack]")
    try:
        data = tomllib.loads(text) if kind == "TOML" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        why = " ".join(str(exc).split())
        raise OTBenchError(f"config file {path} is not valid {kind}: {why}") from None
    if not isinstance(data, dict):
        raise OTBenchError(f"config file {path} must hold sections {', '.join(SECTIONS)}, got a {type(data).__name__}")
    unknown = set(data) - set(SECTIONS)
    if unknown:
        raise OTBenchError(f"config file {path}: unknown sections {sorted(unknown)}; valid: {', '.join(SECTIONS)}")
    for section, values in data.items():
        if not isinstance(values, dict):
            raise OTBenchError(f"config file {path}: `{section}` must be a table of settings ([{section}] with "
                               f"KEY = VALUE lines), got {values!r}")
    return {s: dict(data.get(s, {})) for s in SECTIONS}


def merge(base: Mapping[str, Any], override: Mapping[str, Any], what: str) -> dict[str, Any]:
    """Override known keys only: a typo must not silently become a new, ignored setting."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if key not in out:
            raise OTBenchError(f"unknown {what} setting '{key}'; valid: {', '.join(sorted(out))}")
        out[key] = _checked(what, key, out[key], value)
    return out


def _checked(what: str, key: str, default: Any, value: Any) -> Any:
    """A setting keeps its default's type (an int may stand for a float; None defaults take ints)."""
    if default is None or (value is None and key in NULLABLE):
        ok = value is None or (isinstance(value, int) and not isinstance(value, bool))
        expected = "an integer or null"
    elif isinstance(default, bool):
        ok, expected = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, expected = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok, expected = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
        value = float(value) if ok else value
    elif isinstance(default, str):
        ok, expected = isinstance(value, str), "a string"
    else:
        ok, expected = True, ""
    if not ok:
        raise OTBenchError(f"{what} setting '{key}' must be {expected}, got {value!r}")
    problem = _range_problem(key, value)
    if problem:
        raise OTBenchError(f"{what} setting '{key}' {problem}, got {value!r}")
    return value
