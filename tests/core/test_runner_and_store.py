"""The runner and the results store: resumable chunks, provenance, worst case per sample, merging, regression cells."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from support import TINY_REG, TINY_TRAIN, evaluate_cell

from otbench.attacks.pgd import PGD
from otbench.data import eval_subset
from otbench.metrics import mse
from otbench.registry import ATTACKS
from otbench.store import ResultStore, SampleRow

# 2 blocks, 15 epochs on the 1279 training wines: about a second, test MSE near 0.45
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


def test_killed_run_keeps_finished_chunks_and_resumes_to_the_same_numbers(standard, tmp_path):
    subset = eval_subset(len(standard.data.x_test), 20, seed=1)
    store = ResultStore(tmp_path / "a.sqlite")
    with ATTACKS.temporary("pgd", InterruptedPGD), pytest.raises(KeyboardInterrupt):
        evaluate_cell(standard, "pgd", 1.5, subset, store, PGD_CFG, chunk_size=5, progress=False)
    assert len(_rows(store)) == 10  # two chunks were committed before the kill
    (cell,) = store.cells()
    assert [r["status"] for r in store.runs(cell["cell_id"])] == ["interrupted"]

    resumed = evaluate_cell(standard, "pgd", 1.5, subset, store, PGD_CFG, chunk_size=5, progress=False)
    assert resumed.computed == 10 and resumed.n == 20

    again = evaluate_cell(standard, "pgd", 1.5, subset, store, PGD_CFG, chunk_size=5, progress=False)
    assert again.computed == 0 and again.robust_accuracy == resumed.robust_accuracy

    fresh = ResultStore(tmp_path / "b.sqlite")
    evaluate_cell(standard, "pgd", 1.5, subset, fresh, PGD_CFG, chunk_size=5, progress=False)
    assert _rows(fresh) == _rows(store)


def test_cells_record_provenance(standard, tmp_path):
    store = ResultStore(tmp_path / "c.sqlite")
    subset = eval_subset(len(standard.data.x_test), 4, seed=0)
    evaluate_cell(standard, "none", 0.0, subset, store, progress=False)
    (cell,) = store.cells()
    assert cell["defense_config"]["train"]["seed"] == 0 and cell["seed"] == 0 and cell["preset"] == "quick"
    assert cell["defense_config"]["trained"]["test_accuracy"] > 0.5
    (chunk,) = store.chunk_records(cell["cell_id"])
    assert '"torch"' in chunk["versions"] and chunk["machine"] and chunk["device"].startswith("cpu")
    (run,) = store.runs(cell["cell_id"])
    assert run["status"] == "complete" and run["n"] == 4 and run["wall_seconds"] >= 0


def test_a_cell_is_never_extended_with_another_network(standard, tmp_path):
    """A cell's key holds the settings, not the weights: rows of a network trained elsewhere (another CPU model
    or thread count: another float reduction order) must not be topped up with this one's."""
    import json

    from otbench.errors import OTBenchError

    store = ResultStore(tmp_path / "c.sqlite")
    data = standard.data
    evaluate_cell(standard, "none", 0.0, eval_subset(len(data.x_test), 4, seed=0), store)
    evaluate_cell(standard, "none", 0.0, eval_subset(len(data.x_test), 6, seed=0), store)  # the same network: fine
    (cell,) = store.cells()
    other = dict(cell["defense_config"])
    other["trained"] = {**other["trained"], "train_seconds": 1.0, "threads": 7}  # another run of the same network
    store.db.execute("UPDATE cells SET defense_config = ? WHERE cell_id = ?", (json.dumps(other), cell["cell_id"]))
    store.db.commit()
    evaluate_cell(standard, "none", 0.0, eval_subset(len(data.x_test), 7, seed=0), store)
    other["trained"]["test_accuracy"] += 0.0007  # another network
    store.db.execute("UPDATE cells SET defense_config = ? WHERE cell_id = ?", (json.dumps(other), cell["cell_id"]))
    store.db.commit()
    with pytest.raises(OTBenchError, match="computed with another network"):
        evaluate_cell(standard, "none", 0.0, eval_subset(len(data.x_test), 9, seed=0), store)
    assert len(store.rows(cell["cell_id"])) == 7  # nothing added
    store.close()


def test_a_merge_never_mixes_two_networks_in_one_cell(standard, tmp_path):
    """`otbench merge` of a database whose cell shares a key with one here but came from another trained network
    (another CPU model: the same settings, other weights) is refused whole; another run of the same network
    (other threads, other seconds) merges."""
    import json

    from otbench.errors import OTBenchError

    data = standard.data
    with ResultStore(tmp_path / "here.sqlite") as here:
        evaluate_cell(standard, "none", 0.0, eval_subset(len(data.x_test), 4, seed=0), here)
    for name, change, merges in (("rerun", {"threads": 9, "train_seconds": 1.0}, True),
                                 ("other-net", {"test_accuracy": 0.123}, False)):
        with ResultStore(tmp_path / f"{name}.sqlite") as there:
            evaluate_cell(standard, "none", 0.0, eval_subset(len(data.x_test), 6 if merges else 8, seed=0), there)
            (cell,) = there.cells()
            cfg = {**cell["defense_config"], "trained": {**cell["defense_config"]["trained"], **change}}
            there.db.execute("UPDATE cells SET defense_config = ? WHERE cell_id = ?", (json.dumps(cfg), cell["cell_id"]))
            there.db.commit()
        with ResultStore(tmp_path / "here.sqlite") as here:
            before = len(here.rows(cell["cell_id"]))
            if merges:
                here.merge_from(tmp_path / f"{name}.sqlite")
                assert len(here.rows(cell["cell_id"])) == 6
            else:
                with pytest.raises(OTBenchError, match="from another trained network"):
                    here.merge_from(tmp_path / f"{name}.sqlite")
                assert len(here.rows(cell["cell_id"])) == before


def test_worst_case_over_attacks_is_per_sample(standard, tmp_path):
    from otbench.runner import worst_case

    store = ResultStore(tmp_path / "w.sqlite")
    subset = eval_subset(len(standard.data.x_test), 12, seed=2)
    a = evaluate_cell(standard, "pgd", 1.0, subset, store, {"norm": "L2", "steps": 3}, progress=False)
    b = evaluate_cell(standard, "square", 1.0, subset, store, {"n_queries": 20}, progress=False)
    rows_a = {r.sample_id: r.robust for r in store.rows(a.cell_id)}
    rows_b = {r.sample_id: r.robust for r in store.rows(b.cell_id)}
    expected = sum(rows_a[i] and rows_b[i] for i in subset.ids) / 12
    worst = worst_case(store, [a.cell_id, b.cell_id], subset.ids)
    assert (worst["n"], worst["robust_accuracy"]) == (12, expected)
    assert worst["per_cell"] == {a.cell_id: a.robust_accuracy, b.cell_id: b.robust_accuracy}
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


def test_no_worst_case_across_two_networks(standard, tmp_path):
    """A per-sample worst case over cells from different trained networks (one cell computed on another CPU) is
    no number of either network: `worst_case` refuses it, a report's worst column says "mixed networks", and the
    leaderboard gives each network its own row. Another run of the same network (threads, seconds) still counts."""
    import json

    from otbench.report.leaderboard import defense_groups
    from otbench.report.render import collect
    from otbench.report.spec import Column, Row, TableSpec
    from otbench.runner import MixedNetworks, worst_case

    store = ResultStore(tmp_path / "m.sqlite")
    subset = eval_subset(len(standard.data.x_test), 6, seed=2)
    a = evaluate_cell(standard, "pgd", 1.0, subset, store, {"norm": "L2", "steps": 2}, progress=False)
    b = evaluate_cell(standard, "square", 1.0, subset, store, {"n_queries": 10}, progress=False)
    worst_col = Column("worst", "worst", 1.0, "worst", attacks=("pgd", "square"),
                       attack_overrides={"pgd": {"norm": "L2", "steps": 2}, "square": {"n_queries": 10}})
    spec = TableSpec("t", "t", "otad", "II/III", "mnist", (Row("net", "standard", None, {"train": dict(TINY_TRAIN)}),),
                     (worst_col,))

    def retrain_b(change):
        (cell,) = store.cells(cell_id=b.cell_id)
        cfg = {**cell["defense_config"], "trained": {**cell["defense_config"]["trained"], **change}}
        store.db.execute("UPDATE cells SET defense_config = ? WHERE cell_id = ?", (json.dumps(cfg), b.cell_id))
        store.db.commit()

    retrain_b({"threads": 5, "train_seconds": 2.0})  # the same network, another run: one worst case, one row
    assert worst_case(store, [a.cell_id, b.cell_id])["n"] == 6
    assert collect(spec, store, "quick")[0].status == "measured" and len(defense_groups(store)) == 1
    retrain_b({"test_accuracy": 0.5})  # another network under the same settings
    with pytest.raises(MixedNetworks, match="2 different trained networks"):
        worst_case(store, [a.cell_id, b.cell_id])
    (cell,) = collect(spec, store, "quick")
    assert (cell.status, cell.measured) == ("mixed networks", None)
    groups = defense_groups(store)
    assert sorted(len(g.cells) for g in groups) == [1, 1] and len({g.key for g in groups}) == 2
    assert any("another network: test_accuracy 0.5" in g.label for g in groups)
    store.close()


def test_a_network_summary_names_nested_records_and_leaves_out_the_run():
    """Messages and leaderboard labels tell networks apart by what the record says of the weights, including the
    nested records of multi-part defenses (a purifier's classifier), never by time, device or threads."""
    from otbench.identity import network_summary

    record = {"classifier": {"test_accuracy": 0.9831, "threads": 1}, "ape-gan": {"loss": 1.5}, "train_seconds": 9}
    assert network_summary(record) == "ape-gan.loss 1.5, classifier.test_accuracy 0.9831"
    assert network_summary({"test_accuracy": 0.5, "device": "cpu"}) == "test_accuracy 0.5"
    assert len(network_summary({f"k{i}": i for i in range(100)}, 40)) == 40


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


# -- regression cells through runner, store and report -------------------------------------------------
def test_regression_cell_stores_outputs_resumes_and_reports_mse(regressor, wine, tmp_path):
    from otbench.report.render import render_table
    from otbench.report.spec import Column, Row, TableSpec
    from otbench.plan import evaluate_defense
    from support import evaluate_cell
    from otbench.store import ResultStore

    store = ResultStore(tmp_path / "r.sqlite")
    first = evaluate_cell(regressor, "gaussian-noise", 0.2, eval_subset(320, 20, seed=1), store, chunk_size=10,
                     progress=False)
    subset = eval_subset(320, 30, seed=1)  # 20 is a prefix of 30: two chunks are reused
    s = evaluate_cell(regressor, "gaussian-noise", 0.2, subset, store, chunk_size=10, progress=False)
    assert (first.computed, s.computed, s.n) == (20, 10, 30) and s.clean_accuracy is None
    outs = store.outputs(s.cell_id)
    assert [o.sample_id for o in outs] == sorted(subset.ids)
    ids = torch.tensor([o.sample_id for o in outs])
    with torch.no_grad():
        clean = regressor.logits(wine.x_test[ids]).reshape(-1)
    np.testing.assert_allclose([o.clean_out for o in outs], clean.numpy(), rtol=1e-6)
    np.testing.assert_array_equal([o.target for o in outs], wine.y_test[ids].numpy())
    assert s.adv_mse == pytest.approx(mse([o.adv_out for o in outs], [o.target for o in outs]))
    assert s.clean_mse == pytest.approx(mse(clean.numpy(), wine.y_test[ids].numpy()), rel=1e-5)
    assert evaluate_cell(regressor, "gaussian-noise", 0.2, subset, store, chunk_size=10, progress=False).computed == 0

    # the soundness checks skip what assumes labels; the runner keeps the regression cells intact
    suite = evaluate_defense(regressor, {"gaussian-noise": [0.0, 0.2], "regression-l2": [0.2]}, subset, store,
                      {"regression-l2.steps": 5}, chunk=10, progress=False)
    assert not [f for f in suite.flags if f.level != "info"] and suite.worst_case == []

    spec = TableSpec("t5", "wine", "otad", "V", "winequality-red",
                     (Row("Random noise", "regressor", "Random noise", {"train": dict(TINY_REG)},
                          attack="gaussian-noise"),),
                     (Column("MSE0.2", "regression-l2", 0.2, "mse", "l2=0.2", paper_metric="MSE"),
                      Column("E0.2", "regression-l2", 0.2, "e", "l2=0.2", paper_metric="E")))
    render_table(spec, store, tmp_path / "rep", "quick")
    md = (tmp_path / "rep" / "t5.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| Random noise"))
    assert f"{s.adv_mse:.3f} / 0.404" in row and f"{s.e:.3f} / 0.043" in row  # measured beside the paper
    assert "test MSE" in md and "MSE, E and SMAPE" in md
    store.close()
