"""`baselines-strongest` (issue 20): every defense of OTAD's Tables II and III under one battery of L2 attacks,
with the per-sample worst case, beside OTAD's `otad-strongest`.

The battery of a defense is derived from its declared capabilities alone (`battery`), so every compared defense
faces the same attacks by construction; nothing here names a defense's attacks by hand:
- differentiable: PGD (L2, 100 steps) on the defense itself, and AutoAttack (L2, standard) where it is
  deterministic (AutoAttack's own gradient attacks assume a fixed function);
- randomized: EOT (the gradient averaged over 20 calls) on every gradient attack instead of one call;
- piecewise differentiable (OTAD's CIP step): PGD through the exact gradient of the defense;
- a declared surrogate: BPDA + PGD through it (Table II's attack; for a defense that is its own surrogate this is
  plain PGD) and PGD transferred from it (for purifiers and OTAD the undefended network; for a defense that is its
  own surrogate the transfer is white-box PGD on it);
- every classifier: Square with both schedules (Table III's rescaled one and AutoAttack's fixed one) and
  HopSkipJump (labels only, 2,000 queries).
The attack settings of rows OTAD shares with `otad-strongest` are the same, so those cells are the same stored
cells (OTAD's row is `otad-strongest`'s, restricted to this battery).
"""
from __future__ import annotations

from typing import Any

from otbench.defense import Defense
from otbench.registry import DEFENSES, register_table
from otbench.report.spec import Column, Row, TableSpec

STRONGEST_EPS = (2.0, 2.5, 3.0)  # OTAD Tables II and III (L2, MNIST)
EOT_SAMPLES = 20  # eot-pgd's default: the gradient of a randomized defense averaged over 20 calls

# Tables II and III's defenses, then the K-NN and undefended rows of `otad-strongest`
BASELINE_ROWS: tuple[tuple[str, str], ...] = (
    ("PGD adversarial training", "pgd-at"), ("FGSM adversarial training", "fgsm-at"), ("STL", "stl"),
    ("APE-GAN", "ape-gan"), ("Median filter", "median-filter"), ("l-inf-dist net", "linf-dist-net"),
    ("SOC+", "soc-plus"), ("KNN", "knn"), ("FC ResNet, no defense", "standard"), ("OTAD", "otad"),
)


def battery(cls: type[Defense]) -> tuple[tuple[str, str, dict[str, Any]], ...]:
    """(label, attack, settings) of every L2 attack that fits a defense with `cls`'s declared capabilities."""
    eot = {"eot_samples": EOT_SAMPLES} if cls.randomized else {}
    rows: list[tuple[str, str, dict[str, Any]]] = []
    if cls.differentiable:
        if cls.randomized:
            rows.append(("EOT + PGD (L2, 100 steps)", "eot-pgd", {"norm": "L2", "eot_samples": EOT_SAMPLES}))
        else:
            rows.append(("PGD (L2, 100 steps)", "pgd", {"norm": "L2"}))
            rows.append(("AutoAttack (L2, standard)", "autoattack", {"norm": "L2"}))
    elif cls.piecewise_differentiable:
        rows.append(("exact gradient + PGD" + (" (EOT)" if eot else ""), "otad-exact-grad", dict(eot)))
    if cls.surrogate_description is not None:
        rows.append(("BPDA + PGD (Table II)" + (" (EOT)" if eot else ""), "bpda-pgd", dict(eot)))
        rows.append(("transfer from the undefended network", "transfer-pgd", {}))
    if cls.task == "classification":
        rows.append(("Square (Table III: rescaled schedule)", "square", {}))
        rows.append(("Square, AutoAttack's fixed schedule", "square", {"schedule": "fixed"}))
        rows.append(("HopSkipJump (labels only, 2000 queries)", "hopskipjump", {"max_queries": 2000}))
    return tuple(rows)


def baselines_strongest_rows() -> tuple[Row, ...]:
    rows: list[Row] = []
    for name, defense in BASELINE_ROWS:
        if defense not in DEFENSES:  # a baseline another branch registers: its rows appear once it is
            continue
        mine = battery(DEFENSES.get(defense))
        rows += [Row(f"{name}: {label}", defense, None, attack=a, attack_config=cfg) for label, a, cfg in mine]
        rows.append(Row(f"{name}: worst case per sample over the {len(mine)} attacks above", defense, None,
                        worst_of=tuple((a, cfg) for _, a, cfg in mine)))
    return tuple(rows)


@register_table("baselines-strongest")
def baselines_strongest() -> TableSpec:
    # clean accuracy from each row's own cells (a row's attack replaces the column's), as in otad-strongest
    columns = [Column("Standard Acc", "bpda-pgd", STRONGEST_EPS[0], "clean")]
    for e in STRONGEST_EPS:
        columns += [Column(f"Robust eps={e:g}", "none", e, "robust"),
                    Column(f"queries eps={e:g}", "none", e, "queries"),
                    Column(f"s/sample eps={e:g}", "none", e, "seconds")]
    return TableSpec(
        name="baselines-strongest", title="Every defense of OTAD's Tables II and III under the same L2 battery, with "
                                          "the per-sample worst case (MNIST)",
        paper="otad", paper_table="II/III", dataset="mnist", rows=baselines_strongest_rows(), columns=tuple(columns),
        note="Not a table of the paper (Tables II and III give each defense under BPDA + PGD and Square alone: "
             "`otad-table-2`, `otad-table-3`). Each defense faces every attack its declared capabilities admit "
             "(otbench/papers/otad/strongest.py, `battery`): PGD and AutoAttack for the differentiable ones, EOT for "
             "the randomized ones, the exact gradient for a piecewise-differentiable one (OTAD), BPDA and transfer "
             "through the declared surrogate (a defense that is its own surrogate gets white-box PGD from both), "
             "Square with both schedules and HopSkipJump for all. The worst-case row counts a sample robust only if "
             "it survived every attack above it, on the samples all of them saw: the number a defense can claim. "
             "queries: mean defense queries per attacked (clean-correct) sample; s/sample: wall seconds per sample "
             "on the machine named below; n: the samples of each cell (the trained-network lines below). OTAD's "
             "rows are `otad-strongest`'s cells for the same attacks.")
