"""`otbench report --fill`: run every cell a table needs that the store does not hold yet."""
from __future__ import annotations

import argparse

from ..data import eval_subset, load_dataset
from ..defense import create_defense
from ..provenance import resolve_device
from ..runner import run_cell
from ..store import ResultStore
from .render import collect
from .spec import TableSpec, row_attack


def fill_table(spec: TableSpec, store: ResultStore, args: argparse.Namespace) -> None:
    missing = [c for c in collect(spec, store, args.preset) if c.status == "not run"]
    if not missing:
        return
    data = load_dataset(spec.dataset, args.data_root)
    subset = eval_subset(len(data.x_test), args.n, args.subset_seed)
    device = resolve_device(args.device)
    rows = {c.row.label: c.row for c in missing}  # Row holds dicts, so it is not hashable
    for row in rows.values():
        defense = create_defense(row.defense, data, args.preset, row.overrides, device)
        for c in (c for c in missing if c.row.label == row.label):
            for attack in c.column.attacks if c.column.metric == "worst" else (row_attack(c.row, c.column),):
                run_cell(defense, attack, c.column.eps, subset, store, c.column.attack_overrides,
                         seed=args.seed, chunk_size=args.chunk, progress=not args.quiet)
