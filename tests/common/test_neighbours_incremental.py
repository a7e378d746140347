"""ExactKNN's incremental search (otbench/common/neighbour_cache.py): the same indices as the search without it,
on random walks with exact and near ties, and on every query of a real Square attack through the runner."""
from __future__ import annotations

import pytest
import torch
from support import evaluate_cell
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otbench.common.neighbour_cache import QueryCache
from otbench.common.neighbours import ExactKNN, incremental_search
from otbench.data import eval_subset
from otbench.store import ResultStore

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]


def tied_points(n: int, d: int, seed: int) -> torch.Tensor:
    """Points on a coarse grid (many exactly equal distances), with duplicates and one-ulp neighbours (near
    ties)."""
    g = torch.Generator().manual_seed(seed)
    pts = torch.randint(0, 5, (n, d), generator=g).float() / 4
    pts[n // 2:n // 2 + n // 8] = pts[:n // 8]  # duplicates: exact ties
    near = pts[n // 8:n // 4].clone()
    pts[-(n // 8):] = torch.nextafter(near, near + 1)[:n // 8]  # one ulp away: near ties
    return pts


def walk(start: torch.Tensor, steps: int, changed: int, seed: int) -> list[torch.Tensor]:
    """Batches of queries, each row changing `changed` coordinates of the previous one (sometimes by a few
    ulps only, as Square's renormalisation does), and sometimes going back to an earlier row."""
    g = torch.Generator().manual_seed(seed)
    x, out = start.clone(), []
    for _ in range(steps):
        new = x.clone()
        for row in new:
            cols = torch.randperm(len(row), generator=g)[:changed]
            row[cols] = torch.randint(0, 9, (changed,), generator=g).float() / 8
        if torch.rand(1, generator=g) < 0.3:
            new = torch.nextafter(new, new + 1)  # every coordinate moves by one ulp
        out.append(new)
        if torch.rand(1, generator=g) < 0.5:  # accepted, as an attack keeps an improvement
            x = new
    return out


def searches(points: torch.Tensor, queries: list[torch.Tensor], k: int, incremental: bool,
             **knn_args) -> tuple[list[torch.Tensor], ExactKNN]:
    knn = ExactKNN(points, **knn_args)
    with incremental_search(incremental):
        return [knn.search(q, k) for q in queries], knn


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2 ** 16), n=st.integers(40, 160), d=st.integers(4, 24), k=st.integers(1, 6),
       changed=st.integers(1, 3), margin=st.integers(0, 4), shortlist=st.integers(8, 48),
       reserve=st.integers(8, 160), prefetch=st.integers(0, 6), room=st.floats(1.0, 4.0))
def test_random_walks_give_the_same_indices_with_and_without_the_incremental_search(seed, n, d, k, changed, margin,
                                                                                     shortlist, reserve, prefetch,
                                                                                     room):
    points = tied_points(n, d, seed)
    start = points[torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:5]]  # exactly on points
    queries = walk(start, 12, changed, seed)
    args = {"margin": margin, "shortlist": shortlist, "max_changed": d, "reserve": reserve, "prefetch": prefetch,
            "prefetch_room": room}
    want, _ = searches(points, queries, k, False, **args)
    got, knn = searches(points, queries, k, True, **args)
    for w, g in zip(want, got):
        assert torch.equal(w, g)


@pytest.mark.parametrize("device", DEVICES)
def test_the_incremental_search_answers_most_rows_of_a_local_walk(device):
    points = tied_points(400, 32, 0).to(device)
    queries = [q.to(device) for q in walk(points[:8] + 0.01, 40, 2, 1)]
    args = {"margin": 4, "shortlist": 64, "max_changed": 8, "reserve": 256}
    want, _ = searches(points, queries, 5, False, **args)
    got, knn = searches(points, queries, 5, True, **args)
    assert all(torch.equal(w, g) for w, g in zip(want, got))
    assert got[0].device == points.device
    assert knn.counts["incremental"] > 0.6 * sum(len(q) for q in queries)
    assert knn.counts["rerooted"] > 0


def test_parents_near_their_proof_limit_are_rerooted_in_the_batch_full_search():
    """Prefetch: a parent whose children are barely proved joins a full search that runs anyway and becomes a
    root in place; the answers stay the same, and fewer rows fail their proof than without it."""
    points = tied_points(400, 32, 0)
    queries = walk(points[:8] + 0.01, 60, 2, 1)
    args = {"margin": 4, "shortlist": 64, "max_changed": 8, "reserve": 128}
    want, _ = searches(points, queries, 5, False, **args)
    got, on = searches(points, queries, 5, True, **args, prefetch=8, prefetch_room=2.0)
    _, off = searches(points, queries, 5, True, **args, prefetch=0)
    assert all(torch.equal(w, g) for w, g in zip(want, got))
    assert on.counts["prefetched"] > 0 and off.counts["prefetched"] == 0
    assert on.counts["uncertified"] < off.counts["uncertified"]


def test_a_dropped_coordinate_is_caught(monkeypatch):
    """The comparison above has teeth: an update that forgets one changed coordinate (in the distances and in
    their error bound) gives other neighbours on the same walk."""
    real = QueryCache.advance

    def forgetful(self, x, slot, mask):
        parent = self.slots["row"][slot]
        lost = x.clone()
        first = mask.float().argmax(1)  # the first changed coordinate of each row
        rows = torch.arange(len(x))
        lost[rows, first] = parent[rows, first]
        entry = real(self, lost, slot, (lost - parent).abs() > self.tiny)
        entry["row"] = x  # cached as the row it was asked for
        return entry

    monkeypatch.setattr(QueryCache, "advance", forgetful)
    points = tied_points(400, 32, 0)
    queries = walk(points[:8] + 0.01, 40, 2, 1)
    args = {"margin": 4, "shortlist": 128, "max_changed": 8}
    want, _ = searches(points, queries, 5, False, **args)
    got, _ = searches(points, queries, 5, True, **args)
    assert not all(torch.equal(w, g) for w, g in zip(want, got))


@pytest.mark.parametrize("banks", [1, 2, 3])
def test_fewer_banks_than_chains_give_the_same_indices(banks):
    """Eight chains share `banks` banks of shortlisted coordinates: banks are evicted and rebuilt for other chains
    (a row must never read a bank rebuilt since its chain bound it), and rows that find none free read the
    points directly. Same answers as the search without the cache, and still mostly incremental."""
    points = tied_points(400, 32, 0)
    queries = walk(points[:8] + 0.01, 30, 2, 1)
    args = {"margin": 4, "shortlist": 64, "max_changed": 8, "reserve": 256, "banks": banks}
    want, _ = searches(points, queries, 5, False, **args)
    got, knn = searches(points, queries, 5, True, **args)
    assert all(torch.equal(w, g) for w, g in zip(want, got))
    assert knn.counts["incremental"] > 0.5 * sum(len(q) for q in queries)
    assert int(knn.cache.bank_gen.sum()) > banks  # banks were rebuilt for other chains


def test_a_stale_bank_is_caught(monkeypatch):
    """The generation check has teeth: binding a slot's bank without it (so a row reads the coordinates of
    another chain's shortlist after its bank was rebuilt) gives other neighbours."""
    def careless(self, slot):
        parents = slot.unique()
        bank = self.slots["bank"][parents]
        need = parents[bank < 0]  # a bank rebuilt for another chain still counts as this slot's
        free = torch.arange(self.n_banks)
        for i, p in enumerate(need.tolist()):
            b = free[(self.clock + i) % self.n_banks]
            self.banks[b] = self.points[self.slots["idx"][p]].T
            self.slots["bank"][p] = b
        return self.slots["bank"][slot]

    monkeypatch.setattr(QueryCache, "_bind", careless)
    points = tied_points(400, 32, 0)
    queries = walk(points[:8] + 0.01, 30, 2, 1)
    args = {"margin": 4, "shortlist": 64, "max_changed": 8, "reserve": 256, "banks": 2}
    want, _ = searches(points, queries, 5, False, **args)
    got, _ = searches(points, queries, 5, True, **args)
    assert not all(torch.equal(w, g) for w, g in zip(want, got))


def test_the_whole_set_fallback_follows_the_definition():
    """`_exact_rows` (the float64 pass over every point, for rows whose certified band is too wide) returns the
    first k by (float64 distance, index), for one row and for several."""
    points = tied_points(300, 16, 3)
    x = points[:3] + 0.125
    knn = ExactKNN(points)
    for rows in (x[:1], x):
        want = torch.stack([torch.tensor(sorted(range(len(points)), key=lambda i: (
            float(((r.double() - points[i].double()) ** 2).sum()), i))[:7]) for r in rows])
        assert torch.equal(knn._exact_rows(rows, 7, chunk=64), want)


def _square_cell(defense, incremental: bool, path) -> tuple[list, list[torch.Tensor]]:
    """Square (100 queries) on 6 MNIST test samples through the runner, recording every neighbour search."""
    found: list[torch.Tensor] = []
    real = defense.knn.search

    def recording(x, k):
        idx = real(x, k)
        found.append(idx.clone())
        return idx

    defense.knn.search = recording
    store = ResultStore(path)
    try:
        with incremental_search(incremental):
            subset = eval_subset(len(defense.data.x_test), 6, seed=3)
            evaluate_cell(defense, "square", 3.0, subset, store, {"n_queries": 100}, progress=False)
    finally:
        del defense.knn.search
    (cell,) = store.cells()
    return [tuple(vars(r).values()) for r in store.rows(cell["cell_id"])], found


@pytest.mark.parametrize("name", ["otad", "knn"])
def test_square_finds_the_same_neighbours_on_every_query_and_stores_the_same_rows(request, tmp_path, name):
    defense = request.getfixturevalue(name)
    rows_off, found_off = _square_cell(defense, False, tmp_path / "off.sqlite")
    before = dict(defense.knn.counts)
    rows_on, found_on = _square_cell(defense, True, tmp_path / "on.sqlite")
    assert rows_on == rows_off
    assert len(found_on) == len(found_off) > 50
    assert all(torch.equal(a, b) for a, b in zip(found_on, found_off))
    counts = {key: defense.knn.counts[key] - before.get(key, 0) for key in ("incremental", "full")}
    assert counts["incremental"] > 0.6 * sum(len(f) for f in found_on), counts  # not vacuous
