"""`otbench sweep FILE.toml`: a declared grid, defenses x attacks x eps x presets x seeds, run as one.

```toml
defenses = ["otad", "standard"]          # required
attacks = ["square", "ngopt-cw"]         # required
dataset = "mnist"                        # the rest is optional; defaults as for `otbench run`
presets = ["quick"]
eps = [2.0, 3.0]                         # every attack; or per attack: eps = { square = [2, 3], ngopt-cw = [0.1] }
n = 100
seeds = [0, 1]                           # attack seeds: one run plan each
subset_seed = 0
chunk = 25
device = "auto"
checks = true

[attack]                                 # settings: KEY for every attack that has it, [attack.NAME] for one
n_queries = 300
[attack.ngopt-cw]
budget = 100
[train]                                  # and [defense]: the defenses' settings, as --set train.KEY=...
epochs = 1
```

The file says what to compute; where (the executor, its workers) is the command line's, so one file runs on a
laptop, a multi-GPU box or a cluster. Every plan is built and validated before anything runs."""
from __future__ import annotations

import difflib
import math
import tomllib
from pathlib import Path
from typing import Any

from .errors import OTBenchError
from .files import read_text
from .plan import AttackJob, DefenseJob, RunPlan
from .registry import ATTACKS
from .runner import DEFAULT_CHUNK, split_attack_config

# key -> (what it must be, default); None: required
KEYS: dict[str, tuple[str, Any]] = {
    "defenses": ("a list of defense names", None),
    "attacks": ("a list of attack names", None),
    "dataset": ("a dataset name", "mnist"),
    "presets": ("a list of preset names", ["quick"]),
    "eps": ("a list of numbers, or a table of attack name = list of numbers", None),
    "n": ("an integer", 1000),
    "seeds": ("a list of integers", [0]),
    "subset_seed": ("an integer", 0),
    "chunk": ("an integer", DEFAULT_CHUNK),
    "device": ("a string (auto, cpu, cuda, cuda:N)", "auto"),
    "checks": ("true or false", True),
    "attack": ("a table of attack settings", {}),
    "train": ("a table of training settings", {}),
    "defense": ("a table of defense settings", {}),
}
REQUIRED = ("defenses", "attacks")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


_CHECKS = {
    "defenses": lambda v: isinstance(v, list) and v and all(isinstance(x, str) for x in v),
    "attacks": lambda v: isinstance(v, list) and v and all(isinstance(x, str) for x in v),
    "dataset": lambda v: isinstance(v, str),
    "presets": lambda v: isinstance(v, list) and v and all(isinstance(x, str) for x in v),
    "eps": lambda v: (isinstance(v, list) and v and all(_is_number(x) for x in v)) or (
        isinstance(v, dict) and all(isinstance(x, list) and x and all(_is_number(e) for e in x) for x in v.values())),
    "n": _is_int, "subset_seed": _is_int, "chunk": _is_int,
    "seeds": lambda v: isinstance(v, list) and v and all(_is_int(x) for x in v),
    "device": lambda v: isinstance(v, str),
    "checks": lambda v: isinstance(v, bool),
    "attack": lambda v: isinstance(v, dict), "train": lambda v: isinstance(v, dict),
    "defense": lambda v: isinstance(v, dict),
}


def read_sweep(path: str | Path) -> dict[str, Any]:
    """The file's settings, every key known and of the right type, defaults filled in."""
    path = Path(path)
    text = read_text(path, "sweep file", "give a TOML file (its format: otbench/sweep.py, README)")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise OTBenchError(f"sweep file {path} is not valid TOML: {exc}") from None
    for key in raw:
        if key not in KEYS:
            close = difflib.get_close_matches(key, KEYS, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise OTBenchError(f"unknown key '{key}'.{hint} Valid keys: {', '.join(KEYS)}")
    for key in REQUIRED:
        if key not in raw:
            raise OTBenchError(f"missing key '{key}' ({KEYS[key][0]}); required: {', '.join(REQUIRED)}")
    for key, value in raw.items():
        if not _CHECKS[key](value):
            raise OTBenchError(f"'{key}' must be {KEYS[key][0]}, got {value!r}")
    for key in ("defenses", "attacks", "presets", "seeds"):  # a repeat would plan (and run) the same cells twice
        repeated = sorted({str(v) for v in raw.get(key, ()) if raw[key].count(v) > 1})
        if repeated:
            raise OTBenchError(f"'{key}' lists {', '.join(repeated)} more than once; give each once")
    return {key: raw.get(key, default) for key, (_, default) in KEYS.items()}


def sweep_plans(path: str | Path, **options: Any) -> list[RunPlan]:
    """One run plan per attack seed, each with every (defense, preset) job under every attack; all validated.
    `options`: RunPlan keywords from the command line (data_root, executor: ExecutorOptions). An error names
    the file."""
    try:
        cfg = read_sweep(path)
        attacks = cfg["attacks"]
        for name in attacks:
            ATTACKS.get(name)
        per_attack = split_attack_config(cfg["attack"], attacks)
        eps = cfg["eps"]
        if isinstance(eps, dict):
            for name in eps:
                if name not in attacks:
                    raise OTBenchError(f"eps given for attack '{name}', which the sweep does not run; attacks: "
                                       f"{', '.join(attacks)}")
        jobs = []
        for name in attacks:
            budgets = eps.get(name) if isinstance(eps, dict) else eps
            budgets = tuple(budgets) if budgets is not None else ATTACKS.get(name).default_eps
            if not budgets:
                raise OTBenchError(f"attack '{name}' has no default budget; give one in 'eps'")
            jobs.append(AttackJob(name, tuple(float(e) for e in budgets), per_attack[name]))
        methods = {"train": cfg["train"], "defense": cfg["defense"]}
        defense_jobs = [DefenseJob(d, preset, methods, tuple(jobs)) for d in cfg["defenses"] for preset in cfg["presets"]]
        plans = [RunPlan(cfg["dataset"], defense_jobs, n=cfg["n"], subset_seed=cfg["subset_seed"], seed=seed,
                         chunk=cfg["chunk"], device=cfg["device"], checks=cfg["checks"], **options)
                 for seed in cfg["seeds"]]
        for plan in plans:  # everything, before any data is loaded or any model trained
            plan.validate()
        return plans
    except OTBenchError as exc:
        raise OTBenchError(f"{path}: {exc}") from None
