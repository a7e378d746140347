import pytest
from support import TINY_TRAIN

from otbench.attacks.pgd import PGD
from otbench.data import eval_subset
from otbench.registry import ATTACKS
from otbench.runner import run_cell
from otbench.store import ResultStore, SampleRow

PGD_CFG = {"norm": "L2", "steps": 5}


class InterruptedPGD(PGD):
    """PGD that is killed (Ctrl-C) while working on its third chunk."""

    calls = 0

    def run(self, images, labels, seed):
        InterruptedPGD.calls += 1
        if InterruptedPGD.calls == 3:
            raise KeyboardInterrupt
        return super().run(images, labels, seed)


def _rows(store):
    (cell,) = store.cells()
    return [(r.sample_id, r.clean_pred, r.adv_pred, round(r.pert_norm, 6)) for r in store.rows(cell["cell_id"])]


def test_killed_run_keeps_finished_chunks_and_resumes_to_the_same_numbers(standard, tmp_path, monkeypatch):
    subset = eval_subset(len(standard.data.x_test), 20, seed=1)
    store = ResultStore(tmp_path / "a.sqlite")
    monkeypatch.setitem(ATTACKS._entries, "pgd", InterruptedPGD)
    with pytest.raises(KeyboardInterrupt):
        run_cell(standard, "pgd", 1.5, subset, store, PGD_CFG, chunk_size=5, progress=False)
    assert len(_rows(store)) == 10  # two chunks were committed before the kill
    (cell,) = store.cells()
    assert [r["status"] for r in store.runs(cell["cell_id"])] == ["interrupted"]

    monkeypatch.setitem(ATTACKS._entries, "pgd", PGD)
    resumed = run_cell(standard, "pgd", 1.5, subset, store, PGD_CFG, chunk_size=5, progress=False)
    assert resumed.computed == 10 and resumed.n == 20

    again = run_cell(standard, "pgd", 1.5, subset, store, PGD_CFG, chunk_size=5, progress=False)
    assert again.computed == 0 and again.robust_accuracy == resumed.robust_accuracy

    fresh = ResultStore(tmp_path / "b.sqlite")
    run_cell(standard, "pgd", 1.5, subset, fresh, PGD_CFG, chunk_size=5, progress=False)
    assert _rows(fresh) == _rows(store)


def test_cells_record_provenance(standard, tmp_path):
    store = ResultStore(tmp_path / "c.sqlite")
    subset = eval_subset(len(standard.data.x_test), 4, seed=0)
    run_cell(standard, "none", 0.0, subset, store, progress=False)
    (cell,) = store.cells()
    assert cell["defense_config"]["train"]["seed"] == 0 and cell["seed"] == 0 and cell["preset"] == "quick"
    assert cell["defense_config"]["trained"]["test_accuracy"] > 0.5
    (chunk,) = store.chunk_records(cell["cell_id"])
    assert '"torch"' in chunk["versions"] and chunk["machine"] and chunk["device"].startswith("cpu")
    (run,) = store.runs(cell["cell_id"])
    assert run["status"] == "complete" and run["n"] == 4 and run["wall_seconds"] >= 0


def test_worst_case_over_attacks_is_per_sample(standard, tmp_path):
    from otbench.runner import worst_case

    store = ResultStore(tmp_path / "w.sqlite")
    subset = eval_subset(len(standard.data.x_test), 12, seed=2)
    a = run_cell(standard, "pgd", 1.0, subset, store, {"norm": "L2", "steps": 3}, progress=False)
    b = run_cell(standard, "square", 1.0, subset, store, {"n_queries": 20}, progress=False)
    rows_a = {r.sample_id: r.robust for r in store.rows(a.cell_id)}
    rows_b = {r.sample_id: r.robust for r in store.rows(b.cell_id)}
    expected = sum(rows_a[i] and rows_b[i] for i in subset.ids) / 12
    worst = worst_case(store, [a.cell_id, b.cell_id], subset.ids)
    assert worst == {"n": 12, "robust_accuracy": expected}
    assert worst["robust_accuracy"] <= min(a.robust_accuracy, b.robust_accuracy)

    # a report table's `worst` column finds the same cells (each attack with its own settings) and agrees
    from otbench.report.render import collect
    from otbench.report.spec import Column, Row, TableSpec

    worst_col = Column("worst", "worst", 1.0, "worst", attacks=("pgd", "square"),
                       attack_overrides={"pgd": {"norm": "L2", "steps": 3}, "square": {"n_queries": 20}})
    spec = TableSpec("t", "t", "otad", "II/III", "mnist", (Row("net", "standard", None, {"train": dict(TINY_TRAIN)}),),
                     (worst_col,))
    (cell,) = collect(spec, store, "quick")
    assert cell.status == "measured" and cell.n == 12 and cell.measured == pytest.approx(100 * expected)


def test_merge_copies_missing_cells_once(tmp_path):
    from otbench.cli import main

    a, b = ResultStore(tmp_path / "a.sqlite"), ResultStore(tmp_path / "b.sqlite")
    meta = {"dataset": "mnist", "defense": "standard", "defense_config": {}, "attack": "pgd", "attack_config": {},
            "eps": 1.0, "seed": 0, "subset_seed": 0, "preset": "quick"}
    rec = {"wall_seconds": 1.0, "versions": {}, "device": "cuda", "machine": "gpu"}
    b.ensure_cell("c1", meta)
    b.add_chunk("c1", 0, [SampleRow(i, 1, 1, i % 2, 0.5, None) for i in range(4)], rec)
    b.start_run("c1", "otbench run", [0, 1, 2, 3], "gpu", {})
    a.ensure_cell("c0", {**meta, "eps": 2.0})
    b.close()
    assert main(["merge", str(tmp_path / "b.sqlite"), "--results", str(tmp_path / "a.sqlite")]) == 0
    assert main(["merge", str(tmp_path / "b.sqlite"), "--results", str(tmp_path / "a.sqlite")]) == 0  # idempotent
    assert {c["cell_id"] for c in a.cells()} == {"c0", "c1"}
    assert [r.adv_pred for r in a.rows("c1")] == [0, 1, 0, 1] and len(a.runs("c1")) == 1
    assert main(["merge", str(tmp_path / "missing.sqlite"), "--results", str(tmp_path / "a.sqlite")]) == 2
