"""Automatic soundness diagnostics (after AutoAttack's checks.py), recorded as flags with every run.

Carlini et al. (2019), Athalye et al. (2018) and Tramer et al. (2020) list the symptoms of an evaluation
that overstates robustness; each check below looks for one and is explained in README.md, "Diagnostics".

Checks on stored cells (cheap, run after every `otbench run` and in every report):
- `eps0-not-clean`: at eps = 0 the adversarial predictions must be the clean ones.
- `eps-not-monotone`: robust accuracy must not rise with eps beyond sampling noise.
- `gradient-free-beats-gradient`: a gradient-free attack doing better than a gradient attack on the same
  defense, eps and norm points to masked or obfuscated gradients.
- `clean-near-chance`: clean accuracy no better than always answering the most frequent label (plus
  CHANCE_MARGIN): a failed training or a broken input pipeline, whose robust accuracies say nothing.
Checks that query the defense (`preflight`, and the undefended-network check of the runner's suites):
- `randomized`: outputs that change between identical calls; such defenses get EOT automatically, and
  one that did not declare it is flagged.
- `zero-gradients`: inputs whose loss gradient is exactly zero (gradient masking by saturation).
- `undefended-not-broken`: the same attack at a large eps on the undefended network must reach chance,
  else the attack itself is too weak to support a robustness claim.

All of these read labels and accuracies: regression cells (a defense with task "regression") are left out,
and only the randomness check of `preflight` applies to regression defenses.

Sampling noise: two accuracies on the same samples are compared by the discordant pairs (b samples only
the first attack broke, c only the second); a difference counts when b - c > 2 sqrt(b + c) and b - c >= 2,
a two-sided McNemar test at about z = 2.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from .attacks.base import GRADIENT_NEEDS as GRADIENT_LIKE
from .config import config_hash
from .defense import Defense
from .registry import ATTACKS, DEFENSES
from .store import ResultStore

RANDOM_ATOL = 1e-6   # logits differing by more than this between identical calls are random
DEFAULT_EOT = 20     # EOT samples given to gradient attacks on randomized defenses
LARGE_EPS = {"L2": 0.5, "Linf": 0.5, "RMS": 0.5}  # L2: times sqrt(input dim); a budget that must break anything
CHANCE_MARGIN = 0.10  # accuracy above chance + this, at LARGE_EPS on the undefended net, is flagged
UNDEFENDED_N = 20
CHANCE_MIN_N = 20  # fewer clean samples than this say too little about chance


@dataclass
class Flag:
    code: str
    level: str  # "error": the numbers are wrong; "warning": the numbers may overstate robustness; "info"
    message: str
    cells: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        """One flag per check and set of cells: a rerun on more samples replaces the older verdict."""
        return config_hash({"code": self.code, "cells": sorted(self.cells)}, 24)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def significantly_more(b: int, c: int) -> bool:
    """True when b discordant samples outweigh c beyond sampling noise (McNemar, z about 2)."""
    return b - c >= 2 and b - c > 2 * math.sqrt(b + c)


# -- checks on stored cells ---------------------------------------------------------------------------
def _group_key(cell: dict[str, Any]) -> str:
    return json.dumps([cell["dataset"], cell["defense"], cell["defense_config"], cell["seed"],
                       cell["subset_seed"]], sort_keys=True, default=str)


def _broken(store: ResultStore, cell_id: str) -> dict[int, bool]:
    """Per sample: clean-correct but not robust (the attack succeeded); clean errors are left out."""
    return {r.sample_id: not r.robust for r in store.rows(cell_id) if r.clean_correct}


def _settings(cell: dict[str, Any]) -> str:
    """The attack settings that differ from its defaults, as " (k=v, ...)": a defense often has several cells
    of one attack and budget (e.g. Square with 500 and 2000 queries), and a flag must say which it means."""
    cls = _attack_cls(cell["attack"])
    defaults = cls.defaults if cls is not None else {}
    changed = [f"{k}={v}" for k, v in sorted(cell["attack_config"].items())
               if k not in ("norm", "chunk_size") and k in defaults and defaults[k] != v]
    return f" ({', '.join(changed)})" if changed else ""


def _label(cell: dict[str, Any]) -> str:
    norm = cell["attack_config"].get("norm")
    return f"{cell['defense']}/{cell['attack']}{' ' + norm if norm else ''} eps={cell['eps']:g}{_settings(cell)}"


def cell_flags(store: ResultStore, cells: list[dict[str, Any]]) -> list[Flag]:
    """Every cross-cell check over `cells` (dicts as `ResultStore.cells()` returns them); regression cells
    are skipped (their stored labels are placeholders)."""
    flags: list[Flag] = []
    groups: dict[str, list[dict[str, Any]]] = {}
    for cell in cells:
        if _is_regression(cell):
            continue
        groups.setdefault(_group_key(cell), []).append(cell)
    for group in groups.values():
        flags += _eps_zero(store, group) + _monotone(store, group) + _gradient_free_beats_gradient(store, group)
        flags += clean_near_chance(store, group)
    return flags


def _is_regression(cell: dict[str, Any]) -> bool:
    return cell["defense"] in DEFENSES and DEFENSES.get(cell["defense"]).task == "regression"


def _attack_cls(name: str):
    return ATTACKS.get(name) if name in ATTACKS else None


def _eps_zero(store: ResultStore, cells: list[dict[str, Any]]) -> list[Flag]:
    flags = []
    for cell in cells:
        cls = DEFENSES.get(cell["defense"]) if cell["defense"] in DEFENSES else None
        if cell["eps"] != 0 or (cls is not None and cls.randomized):
            continue
        changed = [r.sample_id for r in store.rows(cell["cell_id"]) if r.adv_pred != r.clean_pred]
        if changed:
            flags.append(Flag("eps0-not-clean", "error",
                              f"{_label(cell)}: {len(changed)} predictions changed at eps = 0 (samples "
                              f"{changed[:5]}); the attack or the defense is not deterministic or not sound",
                              [cell["cell_id"]]))
    return flags


def clean_near_chance(store: ResultStore, cells: list[dict[str, Any]],
                      rows: Callable[[str], list] | None = None) -> list[Flag]:
    """One flag for the cells of one defense configuration whose clean accuracy, over every sample any of them
    holds, is within CHANCE_MARGIN of the share of the most frequent label among those samples (what a constant
    answer scores), so it needs no class count. Regression cells are left out (their labels are placeholders).
    `rows(cell_id)`: the cell's rows, for a caller that has read them already (default: from the store)."""
    rows = rows or store.rows
    cells = [c for c in cells if not _is_regression(c)]
    clean: dict[int, tuple[int, bool]] = {}
    for cell in cells:
        for r in rows(cell["cell_id"]):
            clean.setdefault(r.sample_id, (r.label, r.clean_correct))
    if len(clean) < CHANCE_MIN_N:
        return []
    labels = [label for label, _ in clean.values()]
    chance = max(labels.count(v) for v in set(labels)) / len(labels)
    acc = sum(ok for _, ok in clean.values()) / len(clean)
    if acc > chance + CHANCE_MARGIN:
        return []
    return [Flag("clean-near-chance", "warning",
                 f"{cells[0]['defense']}: clean accuracy {100 * acc:.1f}% on {len(clean)} samples is near chance "
                 f"({100 * chance:.1f}% by always answering the most frequent label): its training or input pipeline "
                 f"failed, and its robust accuracies say nothing about robustness",
                 sorted(c["cell_id"] for c in cells))]


def _monotone(store: ResultStore, cells: list[dict[str, Any]]) -> list[Flag]:
    flags = []
    by_attack: dict[str, list[dict[str, Any]]] = {}
    for cell in cells:
        cls = _attack_cls(cell["attack"])
        if cls is None or not cls.bounded:
            continue  # an unbounded attack's eps is no budget, so no order is implied
        by_attack.setdefault(json.dumps([cell["attack"], cell["attack_config"]], sort_keys=True), []).append(cell)
    for series in by_attack.values():
        series.sort(key=lambda c: c["eps"])
        broken = [_broken(store, c["cell_id"]) for c in series]
        for i in range(len(series)):
            for j in range(i + 1, len(series)):
                common = broken[i].keys() & broken[j].keys()
                b = sum(broken[i][s] and not broken[j][s] for s in common)  # broken at small eps only
                c = sum(broken[j][s] and not broken[i][s] for s in common)
                if series[j]["eps"] > series[i]["eps"] and significantly_more(b, c):
                    flags.append(Flag(
                        "eps-not-monotone", "warning",
                        f"{_label(series[j])} leaves {b - c} more of {len(common)} samples robust than at "
                        f"eps={series[i]['eps']:g}: a larger budget should never help the defense (step size, "
                        f"restarts or gradient masking)", [series[i]["cell_id"], series[j]["cell_id"]]))
    return flags


def _gradient_free_beats_gradient(store: ResultStore, cells: list[dict[str, Any]]) -> list[Flag]:
    by_budget: dict[tuple, list[dict[str, Any]]] = {}
    for cell in cells:
        cls = _attack_cls(cell["attack"])
        if cls is None or not cls.bounded or cell["eps"] == 0 or cls.needs == "nothing":
            continue
        by_budget.setdefault((cell["eps"], cell["attack_config"].get("norm")), []).append(cell)
    # several stored cells can share a label (the same attack run again with another chunk size or n): one
    # verdict per pair of labels, from the pair of cells with the most samples in common
    best: dict[tuple[str, str], tuple[int, Flag | None]] = {}
    for group in by_budget.values():
        grad = [c for c in group if _attack_cls(c["attack"]).needs in GRADIENT_LIKE]
        free = [c for c in group if _attack_cls(c["attack"]).needs in ("scores", "labels")]
        broken = {c["cell_id"]: _broken(store, c["cell_id"]) for c in grad + free}  # one read per cell
        for g in grad:
            for f in free:
                bg, bf = broken[g["cell_id"]], broken[f["cell_id"]]
                common = bg.keys() & bf.keys()
                key = (_label(g), _label(f))
                if key in best and best[key][0] >= len(common):
                    continue
                b = sum(bf[s] and not bg[s] for s in common)  # only the gradient-free attack broke it
                c = sum(bg[s] and not bf[s] for s in common)
                flag = None
                if significantly_more(b, c):
                    other = g["attack"] + _settings(g)
                    flag = Flag(
                        "gradient-free-beats-gradient", "warning",
                        f"{_label(f)} broke {b} samples that {other} did not (and {g['attack']} {c} that "
                        f"{f['attack']} did not) of {len(common)}: gradients through {g['defense']} look masked "
                        f"or obfuscated; trust the gradient-free number and try BPDA or EOT",
                        [g["cell_id"], f["cell_id"]])
                best[key] = (len(common), flag)
    return [flag for _, flag in best.values() if flag is not None]


# -- checks that query the defense ---------------------------------------------------------------------
def measured_randomness(defense: Defense, x: torch.Tensor) -> float:
    """Largest change of the logits between two identical calls on x."""
    with torch.no_grad():
        a, b = defense.logits(x.to(defense.device)), defense.logits(x.to(defense.device))
    return float((a - b).abs().max())


@dataclass
class Preflight:
    randomized: bool
    flags: list[Flag]


def preflight(defense: Defense, x: torch.Tensor, y: torch.Tensor, gradient_attacks: bool) -> Preflight:
    """Randomness (two identical calls) and, for gradient attacks, zero gradients, on a small batch."""
    flags = []
    change = measured_randomness(defense, x)
    randomized = defense.randomized or change > RANDOM_ATOL
    if change > RANDOM_ATOL and not defense.randomized:
        flags.append(Flag("randomized", "warning",
                          f"{defense.name}: logits changed by up to {change:.3g} between identical calls, but the "
                          f"defense does not declare itself randomized; gradient attacks get EOT "
                          f"({DEFAULT_EOT} samples) and results vary between runs"))
    elif randomized:
        flags.append(Flag("randomized", "info", f"{defense.name} is randomized: gradient attacks get EOT "
                                                f"({DEFAULT_EOT} samples) unless eot_samples is set"))
    if gradient_attacks and defense.differentiable and defense.task == "classification":  # cross-entropy
        frac = zero_gradient_fraction(defense.module(), x.to(defense.device), y.to(defense.device))
        if frac > 0:
            flags.append(Flag("zero-gradients", "warning",
                              f"{defense.name}: the loss gradient is exactly zero on {100 * frac:.0f}% of "
                              f"{len(x)} inputs; gradient attacks cannot move them (masked gradients); "
                              f"use gradient-free attacks or BPDA"))
    return Preflight(randomized, flags)


def zero_gradient_fraction(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    x = x.clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(model(x), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    return float((grad.flatten(1).abs().amax(1) == 0).float().mean())


class UndefendedView(Defense):
    """The defense's declared surrogate (its undefended network) as a defense of its own."""

    name = "undefended"
    differentiable = True
    surrogate_description = "itself"

    def __init__(self, parent: Defense) -> None:
        super().__init__(parent.data, {"preset": parent.config.get("preset"), "of": parent.identity},
                         parent.device)
        self.parent = parent  # an executor's worker rebuilds the view from its parent
        self.net = parent.undefended().eval()

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.to(self.device))

    def surrogate(self) -> nn.Module:
        return self.net


def large_eps(norm: str, input_dim: int) -> float:
    return LARGE_EPS[norm] * (math.sqrt(input_dim) if norm == "L2" else 1.0)
