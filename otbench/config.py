"""Configs: presets, command-line overrides and the canonical hash that names cached models and cells."""
from __future__ import annotations

import copy
import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any, Iterable, Mapping

from .errors import OTBenchError

SECTIONS = ("defense", "train", "attack")
NULLABLE = {"train_size"}  # settings where null means "all" even when the preset gives a number


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
    path = Path(path)
    if not path.exists():
        raise OTBenchError(f"config file {path} does not exist")
    try:
        data = tomllib.loads(path.read_text()) if path.suffix == ".toml" else json.loads(path.read_text())
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise OTBenchError(f"config file {path} is not valid {path.suffix[1:].upper()}: {exc}") from None
    unknown = set(data) - set(SECTIONS)
    if unknown:
        raise OTBenchError(f"config file {path}: unknown sections {sorted(unknown)}; valid: {', '.join(SECTIONS)}")
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
    return value
