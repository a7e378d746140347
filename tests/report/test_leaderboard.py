"""The leaderboard's numbers against the raw rows of a store filled through the real runner on real MNIST, the
minimum-norm curves, the paper's reference attack, the flags, and `otbench report --html` leaving the store as it
was."""
from __future__ import annotations

import hashlib
import json

import pytest
from site_support import FIXED_EPS, MIN_NORM_EPS, expected_board, raw_cells

from otbench.checks import Flag
from otbench.cli import main
from otbench.report import leaderboard
from otbench.curves import area, robust_accuracy, smallest_distances
from otbench.runner import worst_case
from otbench.store import ResultStore


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_each_board_ranks_by_the_per_sample_worst_case_over_every_attack(leaderboard_store, min_norm_registered):
    store = ResultStore(leaderboard_store, read_only=True)
    boards, groups, _ = leaderboard.leaderboards(store)
    assert sorted(b.eps for b in boards if b.dataset == "mnist" and b.norm == "L2") == [1.0, MIN_NORM_EPS, 2.0]
    for eps in FIXED_EPS + (MIN_NORM_EPS,):
        (board,) = [b for b in boards if b.eps == eps]
        got = [(e.defense, round(100 * e.robust, 6), round(100 * e.clean, 6), e.n) for e in board.entries]
        want = [(d, round(r, 6), round(c, 6), n) for d, r, c, n in expected_board(leaderboard_store, eps)]
        assert got == want
        for e in board.entries:  # the worst case is never above any attack's own number on the same samples
            assert all(e.robust <= a.robust_common + 1e-12 for a in e.cells)
            assert e.best_attack == min(e.cells, key=lambda a: (a.robust_common, a.label)).label
    # the minimum-norm cell counts at every budget; at eps 1.5 it is the only attack
    (mid,) = [b for b in boards if b.eps == MIN_NORM_EPS]
    assert all([a.attack for a in e.cells] == ["toward-other-class"] for e in mid.entries)
    store.close()


def test_minimum_norm_curve_is_the_share_whose_smallest_perturbation_exceeds_eps(leaderboard_store,
                                                                                   min_norm_registered):
    store = ResultStore(leaderboard_store, read_only=True)
    cells = [c for c in raw_cells(leaderboard_store) if c["attack"] == "toward-other-class"]
    assert len(cells) == 2
    for c in cells:
        d = smallest_distances(store, [c["cell_id"]])
        norms = sorted({r[3] for r in c["rows"].values() if r[3] > 0})
        assert norms, "the attack found adversarial inputs"
        for eps in [0.0, *norms, norms[0] / 2, norms[-1] + 1]:  # at a stored norm exactly: not robust (strict >)
            want = sum(lab == clean and (adv == lab or nrm > eps) for lab, clean, adv, nrm in c["rows"].values())
            assert robust_accuracy(d, eps) == pytest.approx(want / len(c["rows"]))
            # the leaderboard reads the cell at a budget through the same rule
            assert worst_case(store, [c["cell_id"]], None, {c["cell_id"]: eps})["robust_accuracy"] == \
                pytest.approx(want / len(c["rows"]))
        top = norms[-1] + 1
        grid = [top * i / 4000 for i in range(4001)]
        riemann = sum(robust_accuracy(d, e) for e in grid[:-1]) / (len(grid) - 1)
        assert area(d, top) == pytest.approx(riemann, abs=2e-3)
    both = smallest_distances(store, [c["cell_id"] for c in cells])  # different defenses share sample ids
    assert all(v <= smallest_distances(store, [cells[0]["cell_id"]])[i] for i, v in both.items())
    store.close()


def test_reference_attack_and_flags_are_shown_beside_the_best_known_number(leaderboard_store, monkeypatch,
                                                                          min_norm_registered):
    monkeypatch.setitem(leaderboard._REFERENCES, ("mnist", "L2"),
                        leaderboard.ReferenceAttack("square", {"n_queries": 20}, "Square (test)"))
    copy = leaderboard_store.parent / "flagged.sqlite"
    copy.write_bytes(leaderboard_store.read_bytes())
    cells = [c for c in raw_cells(copy) if c["defense"] == "standard" and c["eps"] == 2.0]
    pgd, square = (next(c["cell_id"] for c in cells if c["attack"] == a) for a in ("pgd", "square"))
    writer = ResultStore(copy)
    writer.add_flags([Flag("gradient-free-beats-gradient", "warning", "test", [pgd, square])])
    writer.close()
    store = ResultStore(copy, read_only=True)
    boards, _, _ = leaderboard.leaderboards(store)
    for board in boards:
        for e in board.entries:
            want = next(c for c in raw_cells(copy) if c["defense"] == e.defense and c["attack"] == "square"
                        and c["eps"] == e.eps) if board.eps in FIXED_EPS else None
            if want is None:
                assert e.reference is None
                continue
            rows = want["rows"].values()
            assert e.reference.n == len(rows) and e.reference_label == "Square (test)"
            assert e.reference.robust == pytest.approx(sum(lab == c == a for lab, c, a, _ in rows) / len(rows))
            marked = e.defense == "standard" and e.eps == 2.0
            flagged = [m for m in e.marks if not m.startswith("partial battery")]
            assert flagged == (["gradient attacks unreliable"] if marked else [])
            # knn (BPDA surrogate declared) faced Square and the label-only search only: no gradient attack
            partial = ["partial battery: no gradient attack"] if e.defense == "knn" else []
            assert e.gaps == partial and e.marks[len(flagged):] == partial
    store.close()


def test_report_html_reads_the_store_and_writes_every_download(leaderboard_store, tmp_path, min_norm_registered,
                                                               capsys):
    before = _digest(leaderboard_store)
    site = tmp_path / "site"
    assert main(["report", "--html", str(site), "--results", str(leaderboard_store), "--tables", "otad-table-3",
                 "--quiet"]) == 0
    assert _digest(leaderboard_store) == before  # opened read-only: not migrated, not marked, not written
    assert not (leaderboard_store.parent / "results.sqlite-journal").exists()
    index = (site / "index.html").read_text()
    assert "https://" not in index and "http://" not in index  # nothing from the network
    board = json.loads((site / "data" / "leaderboard-mnist-L2-eps2.json").read_text())
    want = expected_board(leaderboard_store, 2.0)
    assert [(r["name"], r["best_known_robust_accuracy"], r["n"]) for r in board] == \
        [(d, round(rob, 2), n) for d, rob, _, n in want]
    assert (site / "data" / "leaderboard-mnist-L2-eps1_5.csv").read_text().count("\n") == 3  # header + 2 rows
    for r in board:
        page = site / r["page"]
        assert page.exists() and 'class="curve"' in page.read_text()
    page = (site / "tables" / "otad-table-3.html").read_text()  # the report's grid, beside the published values
    assert "Robust Acc eps=2" in page and "not run /" in page and (site / "tables" / "otad-table-3.json").exists()
    assert json.loads((site / "data" / "table-otad-table-3.json").read_text())[0]["Method"] == "PGD adversarial training"
    assert (site / "static" / "otbench.js").exists() and (site / "static" / "LICENSE").exists()


@pytest.mark.parametrize("target, results, message", [("file", None, "not a folder"),
                                                       ("missing/site", None, "does not exist"),
                                                       ("site", "nothere.sqlite", "nothere.sqlite does not exist")])
def test_report_html_refuses_bad_paths_in_one_line(leaderboard_store, tmp_path, capsys, target, results, message):
    (tmp_path / "file").write_text("x")
    db = tmp_path / results if results else leaderboard_store
    assert main(["report", "--html", str(tmp_path / target), "--results", str(db)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err
    assert not (tmp_path / "missing").exists() and not (tmp_path / "site").exists()
    assert not (tmp_path / "nothere.sqlite").exists()


def test_a_v1_database_is_read_through_a_migrated_copy_and_left_as_it_was(tmp_path):
    """The real v1 excerpt of tests/fixtures (cells keyed before the defense's registered name was): read-only
    opening migrates a temporary copy and never the file; its cells then carry the current keys."""
    from pathlib import Path

    v1 = tmp_path / "v1.sqlite"
    v1.write_bytes((Path(__file__).resolve().parents[1] / "fixtures" / "results-v1.sqlite").read_bytes())
    before = _digest(v1)
    store = ResultStore(v1, read_only=True)
    read = {c["cell_id"] for c in store.cells()}
    store.close()
    assert _digest(v1) == before
    migrated = ResultStore(tmp_path / "target.sqlite")
    migrated.merge_from(v1)  # the migration merge_from runs on a copy, as the reference
    assert read == {c["cell_id"] for c in migrated.cells()} and len(read) == 9
    migrated.close()
    assert main(["report", "--html", str(tmp_path / "site"), "--results", str(v1), "--tables", "otad-table-3",
                 "--quiet"]) == 0
    assert _digest(v1) == before and (tmp_path / "site" / "index.html").exists()


def test_a_worst_case_curve_reads_each_minimum_norm_cell_only_up_to_the_budget_it_searched():
    """A cell that searched up to eps 2 says nothing at 2.5: beyond its bound the worst case is over the others,
    and beyond every bound it is unknown (None), never a flat line."""
    import math

    from otbench.curves import bounded_worst_curve

    upto_2 = {0: 0.5, 1: math.inf, 2: math.inf}
    upto_3 = {0: math.inf, 1: 1.0, 2: math.inf}
    got = bounded_worst_curve([(upto_2, 2.0), (upto_3, 3.0)], [0.25, 1.5, 2.0, 2.5, 3.5])
    assert got == [1.0, pytest.approx(1 / 3), pytest.approx(1 / 3), pytest.approx(2 / 3), None]


def test_a_defense_near_chance_is_marked_on_the_leaderboard_from_its_rows(tmp_path):
    """The chance check runs on the store as it is (no stored flag needed): a defense whose clean predictions
    are mostly wrong is marked, one that is right is not."""
    from otbench.store import SampleRow

    store = ResultStore(tmp_path / "r.sqlite")
    for defense, right in (("standard", 10), ("knn", 30)):  # 10 of 30: 33.3%, within 10 points of 8 of 30
        rows = [SampleRow(i, i % 4, i % 4 if i < right else (i + 1) % 4, 0, 0.0, None) for i in range(30)]
        store.ensure_cell(defense, {"dataset": "mnist", "defense": defense, "defense_config": {}, "attack": "pgd",
                                    "attack_config": {"norm": "L2"}, "eps": 2.0, "seed": 0, "subset_seed": 0,
                                    "preset": "quick"})
        store.add_chunk(defense, 0, rows, {"wall_seconds": 0, "versions": {}, "device": "cpu", "machine": "test"})
    boards, _, _ = leaderboard.leaderboards(store)
    marks = {e.defense: e.marks for b in boards for e in b.entries}
    assert "clean accuracy near chance" in marks["standard"]
    assert "clean accuracy near chance" not in marks["knn"]
    store.close()
