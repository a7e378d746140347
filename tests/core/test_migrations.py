"""The results database's schema versions: a v1 database (cells keyed without the defense's registered name; a
real excerpt of reports/results.sqlite from before the change) is migrated once, keeps every row under the key
the current code computes, and is refused whole when it does not match its own keys."""
from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path

import pytest
import torch

from otbench.defense import Defense, build_config
from otbench.errors import OTBenchError
from otbench.identity import cell_key, defense_identity
from otbench.migrations import SCHEMA_VERSION
from otbench.registry import DEFENSES
from otbench.store import ResultStore

V1 = Path(__file__).resolve().parents[1] / "fixtures" / "results-v1.sqlite"
TABLES = ("cells", "samples", "chunks", "runs", "outputs", "flags")


@pytest.fixture()
def v1(tmp_path):
    path = tmp_path / "v1.sqlite"
    shutil.copyfile(V1, path)
    return path


def counts(path):
    db = sqlite3.connect(path)
    try:
        return {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}
    finally:
        db.close()


def test_a_v1_database_is_migrated_once_and_keeps_every_row(v1):
    before = counts(v1)
    store = ResultStore(v1)
    assert store.migrated == ["v1 -> v2: 9 cells re-keyed with their defense's registered name",
                              "v2 -> v3: 9 cells and 1 analyses re-keyed with the settings added since; 1 cells of the "
                              "former paper network kept under preset paper-v1"]
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    ids = {c["cell_id"] for c in store.cells()}
    for table in ("samples", "chunks", "runs", "outputs"):  # nothing orphaned
        assert not store.db.execute(f"SELECT COUNT(*) FROM {table} WHERE cell_id NOT IN "
                                    f"(SELECT cell_id FROM cells)").fetchone()[0]
    for flag in store.flags():
        assert set(flag["cells"]) <= ids
    store.close()
    assert counts(v1) == before  # nothing lost
    again = ResultStore(v1)
    assert again.migrated == [] and {c["cell_id"] for c in again.cells()} == ids  # once
    again.close()


def test_migrated_cells_are_keyed_as_the_current_code_keys_them(v1):
    store = ResultStore(v1)
    for cell in store.cells():
        config = {k: v for k, v in cell["defense_config"].items() if k != "trained"}
        attack = {k: v for k, v in cell["attack_config"].items() if k != "chunk_size"}
        identity = defense_identity(cell["defense"], cell["dataset"], config)
        assert cell["cell_id"] == cell_key(identity, cell["attack"], attack, cell["eps"], cell["seed"],
                                           cell["subset_seed"], cell["attack_config"]["chunk_size"])
        if cell["defense"] == "median-filter":  # what a fresh run of its preset computes, found as stored
            assert config == build_config(DEFENSES.get("median-filter"), cell["preset"], None)
            assert cell["preset"] in ("quick", "paper-v1")  # the former paper network keeps its results, renamed
        if cell["defense"] == "undefended":  # a view keeps its parent's new identity
            parent = config["of"]
            assert parent["name"] == "median-filter" and parent["defense"] == {"window": 2}
            assert parent["train"]["schedule"] == "cosine"
        if cell["defense"] == "linf-dist-net":  # not the FC ResNet: no schedule setting to add
            assert "schedule" not in config["train"]
        if cell["attack"] == "square":  # settings added since, with the values that reproduce what ran
            assert (attack["schedule"], attack["init"]) == ("rescaled", "paper")
    (record,) = store.analyses()
    assert record.identity["defense"]["preset"] == "paper-v1"
    assert record.key == store.analysis_key(record.identity) and store.analysis(record.identity) == record
    store.close()


def test_a_database_that_does_not_match_its_own_keys_is_left_untouched(v1):
    db = sqlite3.connect(v1)
    db.execute("UPDATE cells SET eps = eps + 1 WHERE defense = 'median-filter' AND attack = 'square'")
    db.commit()
    db.close()
    digest = hashlib.sha256(v1.read_bytes()).hexdigest()
    with pytest.raises(OTBenchError, match="does not match its stored settings"):
        ResultStore(v1)
    assert hashlib.sha256(v1.read_bytes()).hexdigest() == digest


def test_a_newer_schema_is_refused(v1):
    db = sqlite3.connect(v1)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(OTBenchError, match="schema v99, written by a newer otbench"):
        ResultStore(v1)


def test_merging_a_v1_database_migrates_a_copy_and_leaves_the_source(v1, tmp_path):
    digest = hashlib.sha256(v1.read_bytes()).hexdigest()
    store = ResultStore(tmp_path / "new.sqlite")
    assert store.merge_from(v1)["cells"] == 9 and store.merge_from(v1)["cells"] == 0  # idempotent
    assert hashlib.sha256(v1.read_bytes()).hexdigest() == digest
    migrated = ResultStore(tmp_path / "copy.sqlite")
    migrated.merge_from(v1)
    assert {c["cell_id"] for c in store.cells()} == {c["cell_id"] for c in migrated.cells()}
    store.close()
    migrated.close()


class Constant(Defense):
    """Always the same class; two registrations with equal presets must never share stored cells."""

    klass = 0
    presets = {"quick": {"defense": {}}}

    def logits(self, x):
        return torch.nn.functional.one_hot(torch.full((len(x),), self.klass), 10).float()


class ConstantOne(Constant):
    klass = 1


def test_defenses_with_equal_presets_never_share_cells(mnist, tmp_path):
    from otbench.data import eval_subset
    from support import evaluate_cell

    store = ResultStore(tmp_path / "r.sqlite")
    subset = eval_subset(len(mnist.x_test), 30, 0)
    with DEFENSES.temporary("always-0", Constant), DEFENSES.temporary("always-1", ConstantOne):
        zero = evaluate_cell(Constant(mnist, build_config(Constant, "quick", None), torch.device("cpu")), "none", 0.0,
                        subset, store, progress=False)
        one = evaluate_cell(ConstantOne(mnist, build_config(ConstantOne, "quick", None), torch.device("cpu")), "none", 0.0,
                       subset, store, progress=False)
    assert one.computed == 30 and zero.cell_id != one.cell_id  # computed, not read from the other's cell
    labels = mnist.y_test[list(subset.ids)]
    assert (zero.clean_accuracy, one.clean_accuracy) == (int((labels == 0).sum()) / 30, int((labels == 1).sum()) / 30)
    store.close()
