"""The Ray executor on a real local Ray (2 CPUs): the same rows as the local executor whatever the number of
workers, for `otbench run` and `otbench report --fill`; a worker killed mid-chunk loses only that chunk."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
from contextlib import closing, contextmanager

import pytest
import torch
from ray_support import HERE, KILL_CHUNK, KILL_MARKER_ENV, SQUARE, KillOnceSquare, grid, run_grid, stored
from support import DATA, TINY_TRAIN, Overstep

from otbench import errors
from otbench.cli import main
from otbench.registry import ATTACKS, TABLES
from otbench.report.spec import Column, Row, TableSpec
from otbench.store import ResultStore

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow


def json_out(out: str) -> dict:
    """The CLI's --json object. Ray's driver prints a killed worker's retried tasks on stdout, at its own pace
    (an earlier test kills one), so a notice may come first: the object starts at the first line that is '{'."""
    start = 0 if out.startswith("{\n") else out.index("\n{\n") + 1
    return json.loads(out[start:])


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """A local Ray of 2 CPUs whose workers import this folder (the test attack) and know the kill marker."""
    marker = tmp_path_factory.mktemp("kill") / "killed"
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)]),
                                       KILL_MARKER_ENV: str(marker)}})
    yield marker
    ray.shutdown()


@pytest.fixture(scope="module")
def local_rows(tmp_path_factory):
    """The grid through the local executor: the reference every Ray run must match exactly."""
    return run_grid(tmp_path_factory.mktemp("local") / "local.sqlite", grid("local"))


@contextmanager
def driver_threads(n: int):
    """The test process computes with n torch threads (the session's default is 1), so a chunk record's
    device, `cpu (1 threads)` for a Ray worker's, tells that a worker computed it and not this process."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def computed_by_workers(path) -> bool:
    store = ResultStore(path)
    devices = {r["device"] for c in store.cells() for r in store.chunk_records(c["cell_id"])}
    store.close()
    return devices == {"cpu (1 threads)"}


@pytest.mark.parametrize("workers", [1, 2])
def test_ray_stores_the_local_executors_rows(local_ray, local_rows, tmp_path, workers):
    db = tmp_path / "ray.sqlite"
    with driver_threads(2):
        assert run_grid(db, grid("ray", workers=workers)) == local_rows
    assert len(local_rows) == 6 and all(len(rows) == 8 for rows in local_rows.values())
    assert computed_by_workers(db)
    store = ResultStore(db)
    for cell in store.cells():  # provenance as before: every chunk with its worker's device and machine
        assert [r["status"] for r in store.runs(cell["cell_id"])] == ["complete"]
        for record in store.chunk_records(cell["cell_id"]):
            assert record["machine"] and "torch" in record["versions"]
    store.close()


def test_a_worker_killed_mid_chunk_loses_only_that_chunk(local_ray, tmp_path):
    attack = {"kill-once-square": SQUARE["square"]}
    with ATTACKS.temporary("kill-once-square", KillOnceSquare):
        reference = run_grid(tmp_path / "local.sqlite", grid("local", attacks=attack))
        assert not local_ray.exists()  # the test process never kills itself
        with driver_threads(2):
            killed = run_grid(tmp_path / "ray.sqlite", grid("ray", workers=2, attacks=attack))
    assert local_ray.exists(), "no worker was killed: the test did not test anything"
    assert int(local_ray.read_text()) != os.getpid()
    assert killed == reference and sum(len(r) for r in killed.values()) == 8 * 2 + 8 * 2
    store = ResultStore(tmp_path / "ray.sqlite")
    chunks = {(c["cell_id"], r["chunk"]) for c in store.cells() for r in store.chunk_records(c["cell_id"])}
    store.close()
    assert len(chunks) == 2 * 2 + 2 and KILL_CHUNK in {chunk for _, chunk in chunks}
    assert computed_by_workers(tmp_path / "ray.sqlite")


def test_report_fill_dispatches_through_ray(local_ray, capsys, tmp_path):
    rows = (Row("no defense", "standard", None, {"train": dict(TINY_TRAIN)}),
            Row("KNN", "knn", None, {"train": dict(TINY_TRAIN)}))
    spec = TableSpec("tiny-ray-table", "tiny", "otad", "III", "mnist", rows,
                     (Column("Robust Acc eps=1.5", "square", 1.5, "robust", "eps=1.5", {"n_queries": 20}),))
    argv = ["report", "--tables", spec.name, "--preset", "quick", "--fill", "--n", "8", "--chunk", "4",
            "--data-root", str(DATA), "--quiet", "--json"]
    with TABLES.temporary(spec.name, lambda: spec):
        for name, extra, threads in (("local", [], 1), ("ray", ["--executor", "ray", "--workers", "2"], 2)):
            with driver_threads(threads):
                assert main(argv + ["--results", str(tmp_path / f"{name}.sqlite"), "--out", str(tmp_path / name),
                                    *extra]) == 0
            json_out(capsys.readouterr().out)
    assert computed_by_workers(tmp_path / "ray.sqlite")
    local, through_ray = stored(tmp_path / "local.sqlite"), stored(tmp_path / "ray.sqlite")
    assert through_ray == local and len(local) == 2
    assert (tmp_path / "ray" / "tiny-ray-table.csv").read_text() == (tmp_path / "local" / "tiny-ray-table.csv").read_text()


def test_the_workers_evaluate_through_the_threat_model_guard(local_ray, capsys, tmp_path):
    """A cheating attack computed by a Ray worker is refused there: one line on the driver, nothing stored."""
    db = tmp_path / "r.sqlite"
    sets = [a for k, v in TINY_TRAIN.items() for a in ("--set", f"train.{k}={json.dumps(v)}")]
    with ATTACKS.temporary("overstep", Overstep):
        rc = main(["run", "--defense", "standard", "--attack", "overstep", "--eps", "1", "--n", "8", "--chunk", "4",
                   "--no-checks", "--executor", "ray", "--workers", "2", "--data-root", str(DATA), "--results",
                   str(db), "--quiet", *sets])
    err = capsys.readouterr().err
    assert rc == 2 and "overstep overstepped its threat model" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    store = ResultStore(db)
    assert [store.count_rows(c["cell_id"]) for c in store.cells()] == [0]
    store.close()


def test_a_sweep_on_ray_stores_the_local_sweeps_rows(local_ray, capsys, tmp_path):
    """Two attack seeds (two run plans, one grid, one defense built once for both) through 2 workers."""
    grid_file = tmp_path / "grid.toml"
    grid_file.write_text('defenses = ["standard"]\nattacks = ["square", "ngopt-cw"]\n'
                         'eps = { square = [1.5], ngopt-cw = [0.1] }\nn = 8\nchunk = 4\nseeds = [0, 1]\n'
                         '[attack.square]\nn_queries = 20\n[attack.ngopt-cw]\nbudget = 8\n[train]\n'
                         + "".join(f"{k} = {json.dumps(v)}\n" for k, v in TINY_TRAIN.items()))
    for name, extra, threads in (("local", [], 1), ("ray", ["--executor", "ray", "--workers", "2"], 2)):
        with driver_threads(threads):
            assert main(["sweep", str(grid_file), "--results", str(tmp_path / f"{name}.sqlite"), "--data-root",
                         str(DATA), "--quiet", "--json", *extra]) == 0
        assert len(json_out(capsys.readouterr().out)["cells"]) == 4
    local = stored(tmp_path / "local.sqlite")
    assert stored(tmp_path / "ray.sqlite") == local and len(local) == 4 + 2  # + the undefended checks' cells
    assert computed_by_workers(tmp_path / "ray.sqlite")


def test_an_actor_keeps_a_bounded_number_of_defenses(standard):
    """The actor class itself, in this process: each defense built once and reused; past MAX_DEFENSES the least
    recently used one is dropped (a long `report --fill` meets many defenses)."""
    from otbench.executors.ray import MAX_DEFENSES, ChunkTask, ChunkWorker, DefenseSpec

    worker = ChunkWorker("cpu", 1)
    specs = []
    for i in range(MAX_DEFENSES + 1):  # the same defense under as many dataset keys: built from the cache
        worker.data[f"mnist#{i}"] = standard.data
        specs.append(DefenseSpec(type(standard), "standard", json.dumps(standard.config, sort_keys=True),
                                 f"mnist#{i}"))
    none = ATTACKS.get("none")

    def run(spec):
        result = worker.run(ChunkTask(spec, none, "none", 0.0, {}, [0, 1], 0), [None], {})
        assert len(result.rows) == 2 and result.machine

    for spec in specs:
        run(spec)
    built = worker.defenses[specs[1].key]
    run(specs[1])  # reused, and now the most recently used
    assert worker.defenses[specs[1].key] is built and list(worker.defenses)[-1] == specs[1].key
    assert len(worker.defenses) == MAX_DEFENSES and specs[0].key not in worker.defenses
    assert len(worker.attacks) == MAX_DEFENSES


def test_a_ctrl_c_that_ray_swallowed_still_stops_the_grid(local_ray, tmp_path):
    """Ray's wait can swallow the KeyboardInterrupt raised inside it; the remembered signal still stops the grid
    (the executor looks for it between waits), and no `runs` row is left running. Last in this module: Ray
    reports the chunks it was computing when the actors were killed on stdout, later, into another test's capture."""
    try:
        errors.interrupt(signal.SIGINT, None)  # the handler ran ...
    except KeyboardInterrupt:
        pass  # ... and a library swallowed what it raised
    try:
        with pytest.raises(KeyboardInterrupt):
            run_grid(tmp_path / "ray.sqlite", grid("ray", workers=2, attacks=SQUARE))
    finally:
        errors.clear_interrupt()
    with closing(sqlite3.connect(tmp_path / "ray.sqlite")) as con:
        statuses = [s for (s,) in con.execute("SELECT status FROM runs")]
    assert statuses and set(statuses) == {"interrupted"}
