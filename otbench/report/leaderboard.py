"""The leaderboard's numbers, read from the results store: for each dataset, threat model (norm) and budget, every
defense (a registered name at a preset with its exact settings) ranked by its best-known robust accuracy, the
per-sample worst case over every attack stored for it at that budget, on the samples they share
(`runner.worst_case`). Minimum-norm cells (otbench/curves.py) count at every budget up to the one they searched. Beside it: the attack that set the
number, the reference attack of the dataset's paper table (declared by the paper package through
`register_reference_attack`; the core names none), n, the queries and seconds it took, and the stored flags."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..config import config_hash, merge
from ..attacks.base import GRADIENT_NEEDS
from ..checks import clean_near_chance
from ..identity import cell_network, network_summary
from ..registry import ATTACKS, DEFENSES, TABLES
from ..runner import worst_case
from ..store import ResultStore
from ..curves import is_minimum_norm

# a stored flag of these codes marks a leaderboard row with this text
FLAG_MARKS = {"gradient-free-beats-gradient": "gradient attacks unreliable",
              "clean-near-chance": "clean accuracy near chance"}
# What an attack needs from the defense, by class. A row ranks with the others only once it has faced an attack
# of every class that applies to its defense (Carlini et al. 2019, "On evaluating adversarial robustness": a
# gradient-free attack beside the gradient ones; gradient attacks wherever the defense offers gradients or a
# surrogate); otherwise its number is an upper bound from a partial battery, and it ranks below the complete rows.
GRADIENT_FREE = ("scores", "labels")


def battery_gaps(defense: str, needs: list[str]) -> list[str]:
    """The attack classes missing from a row's battery (`needs`: what each of its attacks needs), as marks."""
    gaps = []
    if not any(n in GRADIENT_FREE for n in needs):
        gaps.append("partial battery: no gradient-free attack")
    cls = DEFENSES.get(defense) if defense in DEFENSES else None
    offers = cls is None or cls.differentiable or cls.piecewise_differentiable or cls.surrogate_description is not None
    if offers and not any(n in GRADIENT_NEEDS for n in needs):
        gaps.append("partial battery: no gradient attack")
    return gaps


@dataclass(frozen=True)
class ReferenceAttack:
    attack: str
    settings: dict[str, Any]
    label: str


_REFERENCES: dict[tuple[str, str], ReferenceAttack] = {}


def register_reference_attack(dataset: str, norm: str, attack: str, settings: dict[str, Any] | None = None,
                              label: str | None = None) -> None:
    """Declare the attack whose number a paper's table publishes for (dataset, norm), e.g. OTAD's Table III:
    Square on MNIST under L2. The leaderboard shows that attack's robust accuracy beside the best-known one."""
    _REFERENCES[(dataset, norm)] = ReferenceAttack(attack, dict(settings or {}), label or attack)


def reference_attack(dataset: str, norm: str) -> ReferenceAttack | None:
    TABLES.names()  # the paper packages declare theirs when their tables load
    return _REFERENCES.get((dataset, norm))


@dataclass
class AttackCell:
    """One stored cell of a defense at a budget, with its numbers on its own samples and on the common ones."""

    cell_id: str
    attack: str
    label: str
    needs: str
    minimum_norm: bool
    eps: float  # the budget it is read at (a minimum-norm cell's stored eps may be another)
    n: int
    clean: float
    robust: float
    robust_common: float | None = None
    queries: float | None = None
    seconds: float | None = None
    seed: int = 0


@dataclass
class Entry:
    """A leaderboard row: one defense at one (dataset, norm, eps)."""

    key: str
    defense: str
    preset: str
    label: str
    dataset: str
    norm: str
    eps: float
    n: int
    clean: float
    robust: float
    best_attack: str
    reference: AttackCell | None
    reference_label: str | None
    queries: float | None
    seconds: float | None
    flags: list[dict[str, Any]]
    marks: list[str]
    cells: list[AttackCell] = field(default_factory=list)
    rank: int = 0
    gaps: list[str] = field(default_factory=list)  # battery_gaps: empty for a row that faced every attack class

    @property
    def rank_key(self) -> tuple:
        """Complete batteries first, then best-known robust accuracy, then clean accuracy."""
        return (bool(self.gaps), -self.robust, -self.clean, self.label)


@dataclass
class Board:
    dataset: str
    norm: str
    eps: float
    entries: list[Entry]

    @property
    def slug(self) -> str:
        return f"{self.dataset}-{self.norm}-eps{self.eps:g}".replace(".", "_")


@dataclass
class DefenseGroup:
    """Every stored cell of one defense (name, preset, exact settings) on one dataset."""

    key: str
    dataset: str
    defense: str
    preset: str
    label: str
    config: dict[str, Any]
    cells: list[dict[str, Any]]


def defense_groups(store: ResultStore) -> list[DefenseGroup]:
    """The store's classification cells grouped by defense identity; the soundness check's cells of a defense's
    undefended network (checks.UndefendedView) belong to no leaderboard."""
    from ..checks import UndefendedView

    groups: dict[tuple, DefenseGroup] = {}
    for cell in store.cells():
        if cell["defense"] == UndefendedView.name or _regression(cell["defense"]):
            continue
        cfg = cell["defense_config"]
        ident = {"defense": cfg.get("defense"), "train": cfg.get("train")}
        # one row per trained network: equal settings retrained on another CPU are another model (cell_network)
        key = (cell["dataset"], cell["defense"], cell["preset"], json.dumps(ident, sort_keys=True, default=str),
               cell_network(cell))
        if key not in groups:
            slug = f"{cell['dataset']}-{cell['defense']}-{cell['preset']}-{config_hash(ident, 8)}"
            label = defense_label(cell["defense"], cell["preset"], ident)
            if any(k[:4] == key[:4] for k in groups):  # a second network under the same settings
                slug += f"-net-{config_hash(key[4], 6)}"
                label += f" [another network: {network_summary(cfg.get('trained'), 80)}]"
            groups[key] = DefenseGroup(slug, cell["dataset"], cell["defense"], cell["preset"], label, cfg, [])
        groups[key].cells.append(cell)
    return list(groups.values())


def _regression(defense: str) -> bool:
    return defense in DEFENSES and DEFENSES.get(defense).task == "regression"


def defense_label(defense: str, preset: str, ident: dict[str, Any]) -> str:
    """`name (preset)`, plus the settings that differ from the preset's own (e.g. train.alpha=0.01)."""
    changed = []
    if defense in DEFENSES and preset in DEFENSES.get(defense).presets:
        from ..defense import build_config

        base = build_config(DEFENSES.get(defense), preset, {})
        for section in ("defense", "train"):
            mine, default = ident.get(section) or {}, base.get(section) or {}
            changed += [f"{section}.{k}={v}" for k, v in sorted(mine.items()) if default.get(k) != v]
    return f"{defense} ({', '.join([preset] + changed)})"


def cell_norm(cell: dict[str, Any]) -> str | None:
    norm = cell["attack_config"].get("norm")
    if norm is None and cell["attack"] in ATTACKS and len(ATTACKS.get(cell["attack"]).norms) == 1:
        norm = ATTACKS.get(cell["attack"]).norms[0]
    return norm


def attack_label(cell: dict[str, Any]) -> str:
    """The attack and the settings that differ from its defaults (a defense may have several cells of one attack)."""
    cls = ATTACKS.get(cell["attack"]) if cell["attack"] in ATTACKS else None
    defaults = cls.defaults if cls is not None else {}
    changed = [f"{k}={v}" for k, v in sorted(cell["attack_config"].items())
               if k not in ("norm", "chunk_size") and k in defaults and defaults[k] != v]
    return cell["attack"] + (f" ({', '.join(changed)})" if changed else "")


def _budget_cells(cells: list[dict[str, Any]]) -> tuple[dict[str, list[dict]], dict[str, list[dict]]]:
    """By norm: the fixed-budget attack cells, and the minimum-norm ones (read at any budget). Clean cells, eps 0,
    and unbounded attacks (whose eps is no norm bound) are left out."""
    fixed: dict[str, list[dict]] = {}
    minimum: dict[str, list[dict]] = {}
    for cell in cells:
        norm = cell_norm(cell)
        cls = ATTACKS.get(cell["attack"]) if cell["attack"] in ATTACKS else None
        if norm is None or (cls is not None and (not cls.bounded and not is_minimum_norm(cell["attack"]))):
            continue
        if is_minimum_norm(cell["attack"]):
            minimum.setdefault(norm, []).append(cell)
        elif cell["eps"] > 0:
            fixed.setdefault(norm, []).append(cell)
    return fixed, minimum


def _cost(store: ResultStore, cell_id: str, rows: list) -> tuple[float | None, float | None]:
    """Mean defense queries per clean-correct sample (where the attack counts them) and wall seconds per sample."""
    spent = [r.queries for r in rows if r.clean_correct and r.queries is not None]
    seconds = sum(c["wall_seconds"] for c in store.chunk_records(cell_id)) / max(len(rows), 1)
    return (sum(spent) / len(spent) if spent else None), seconds


def _own(cell: dict[str, Any], rows: list, eps: float) -> tuple[int, float, float]:
    robust = [r.robust_at(eps) if is_minimum_norm(cell["attack"]) else r.robust for r in rows]
    n = max(len(rows), 1)
    return len(rows), sum(r.clean_correct for r in rows) / n, sum(robust) / n


def group_entries(store: ResultStore, group: DefenseGroup) -> list[Entry]:
    """The group's leaderboard rows, one per (norm, eps) it has attack cells at."""
    fixed, minimum = _budget_cells(group.cells)
    rows_of: dict[str, list] = {}  # each cell's rows read once, however many budgets and checks read them

    def rows(cell_id: str) -> list:
        if cell_id not in rows_of:
            rows_of[cell_id] = store.rows(cell_id)
        return rows_of[cell_id]

    # the chance check over the group as it is now (a store filled before the check existed has no such flag)
    stored_flags = [f for f in store.flags([c["cell_id"] for c in group.cells]) if f["code"] != "clean-near-chance"]
    stored_flags += [f.as_dict() for f in clean_near_chance(store, group.cells, rows)]
    out = []
    for norm in sorted(set(fixed) | set(minimum)):
        for eps in sorted({c["eps"] for c in fixed.get(norm, []) + minimum.get(norm, []) if c["eps"] > 0}):
            # a minimum-norm cell says nothing beyond the largest budget it searched (its eps)
            mins = [c for c in minimum.get(norm, []) if c["eps"] >= eps - 1e-12]
            at = [c for c in fixed.get(norm, []) if abs(c["eps"] - eps) < 1e-12] + mins
            ids = [c["cell_id"] for c in at]
            wc = worst_case(store, ids, None, {c["cell_id"]: eps for c in mins})
            cells = []
            for c in at:
                cell_rows = rows(c["cell_id"])
                n, clean, robust = _own(c, cell_rows, eps)
                queries, seconds = _cost(store, c["cell_id"], cell_rows)
                cls = ATTACKS.get(c["attack"]) if c["attack"] in ATTACKS else None
                cells.append(AttackCell(c["cell_id"], c["attack"], attack_label(c), cls.needs if cls else "?",
                                        is_minimum_norm(c["attack"]), eps, n, clean, robust,
                                        wc["per_cell"][c["cell_id"]], queries, seconds, c["seed"]))
            best = min(cells, key=lambda a: (a.robust_common, a.label))
            ref = reference_attack(group.dataset, norm)
            ref_cell = _reference_cell(ref, at, cells) if ref else None
            flags = [f for f in stored_flags if set(f["cells"]) & set(ids)]
            gaps = battery_gaps(group.defense, [a.needs for a in cells])
            marks = sorted({FLAG_MARKS[f["code"]] for f in flags if f["code"] in FLAG_MARKS}) + gaps
            out.append(Entry(group.key, group.defense, group.preset, group.label, group.dataset, norm, eps, wc["n"],
                             wc["clean_accuracy"], wc["robust_accuracy"], best.label, ref_cell,
                             ref.label if ref else None, _sum(a.queries for a in cells),
                             _sum(a.seconds for a in cells), flags, marks, cells, gaps=gaps))
    return out


def _sum(values: Any) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _reference_cell(ref: ReferenceAttack, stored: list[dict], cells: list[AttackCell]) -> AttackCell | None:
    """The stored cell of the reference attack at its declared settings (the most samples, where several)."""
    if ref.attack not in ATTACKS:
        return None
    expected = merge(ATTACKS.get(ref.attack).defaults, ref.settings, ref.attack)
    found = [a for c, a in zip(stored, cells) if c["attack"] == ref.attack and
             {k: v for k, v in c["attack_config"].items() if k != "chunk_size"} ==
             {**expected, "norm": c["attack_config"].get("norm", expected.get("norm"))}]
    return max(found, key=lambda a: a.n) if found else None


def leaderboards(store: ResultStore) -> tuple[list[Board], list[DefenseGroup], dict[str, list[Entry]]]:
    """Every board (dataset, norm, eps) with its entries ranked: rows with a complete battery first (battery_gaps),
    then by best-known robust accuracy, then clean accuracy; the defense groups, and each group's entries."""
    groups = defense_groups(store)
    by_group = {g.key: group_entries(store, g) for g in groups}
    boards: dict[tuple, list[Entry]] = {}
    for entries in by_group.values():
        for e in entries:
            boards.setdefault((e.dataset, e.norm, e.eps), []).append(e)
    out = []
    for (dataset, norm, eps), entries in sorted(boards.items()):
        entries.sort(key=lambda e: e.rank_key)
        for i, e in enumerate(entries, 1):
            e.rank = i
        out.append(Board(dataset, norm, eps, entries))
    return out, groups, by_group


def worst_cases_beside(store: ResultStore, cell_ids: dict[str, str]) -> dict[str, dict[float, tuple[float, int]]]:
    """For each label's stored cell (label -> cell_id): the leaderboard's per-sample worst case of that cell's
    defense (same preset and settings) under that cell's norm, by eps: (robust accuracy, n). A report figure draws it
    beside the table's own attack."""
    if not cell_ids:
        return {}
    groups = defense_groups(store)
    out = {}
    for label, cell_id in cell_ids.items():
        group = next((g for g in groups if any(c["cell_id"] == cell_id for c in g.cells)), None)
        if group is None:
            continue
        (cell,) = [c for c in group.cells if c["cell_id"] == cell_id]
        out[label] = {e.eps: (e.robust, e.n) for e in group_entries(store, group) if e.norm == cell_norm(cell)}
    return out
