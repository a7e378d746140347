"""Executors without Ray: the choice is validated with the rest of the plan, the local executor gives the
runner's own numbers, Ctrl-C keeps committed chunks, and otbench works with Ray absent."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from ray_support import SQUARE, grid, run_grid, stored
from support import DATA, TINY_TRAIN

from otbench.attacks.square import Square
from otbench.cli import main
from otbench.data import eval_subset
from otbench.errors import OTBenchError
from otbench.executors import EXECUTORS, ExecutorOptions, ray_available
from otbench.registry import ATTACKS
from otbench.plan import evaluate_defense
from otbench.store import ResultStore


@pytest.mark.parametrize("options,message", [
    ({"executor": "dask"}, "unknown executor 'dask'; valid: local, ray"),
    ({"executor": "ray", "workers": 0}, "--workers must be an integer of at least 1, got 0"),
    ({"executor": "ray", "threads": 0}, "--threads must be an integer of at least 1"),
    ({"executor": "ray", "gpus_per_worker": -1.0}, "--gpus-per-worker must be a number >= 0"),
    ({"executor": "local", "workers": 2}, "for --workers 2 use --executor ray"),
    ({"executor": "local", "ray_address": "auto"}, "--ray-address applies to --executor ray only"),
    ({"executor": "ray", "ray_address": "head-node"}, "--ray-address 'head-node': expected HOST:PORT"),
])
def test_the_executor_is_validated_with_the_plan(options, message):
    with pytest.raises(OTBenchError, match=message):
        grid(**options).validate()


def test_an_unknown_executor_is_a_one_line_cli_error(capsys, tmp_path):
    db = tmp_path / "r.sqlite"
    assert main(["run", "--defense", "standard", "--attack", "square", "--executor", "dask",
                 "--results", str(db)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "otbench: error: unknown executor 'dask'; valid: local, ray"
    assert not db.exists()  # refused before the store was opened
    assert main(["report", "--tables", "otad-table-3", "--executor", "dask", "--results", str(db)]) == 2
    assert "valid: local, ray" in capsys.readouterr().err and not db.exists()
    assert EXECUTORS == ("local", "ray")


def test_the_local_executor_gives_the_runners_own_rows(standard, tmp_path):
    """A plan through the executor layer stores exactly what the runner computes cell by cell in-process."""
    plan = grid(attacks=SQUARE, defenses=("standard",))  # the session's tiny model
    through_plan = run_grid(tmp_path / "plan.sqlite", plan)
    store = ResultStore(tmp_path / "suite.sqlite")
    evaluate_defense(standard, {"square": [1.5]}, eval_subset(len(standard.data.x_test), 8, 0), store,
              {"square": {"n_queries": 20}}, chunk=4, progress=False)
    store.close()
    assert through_plan == stored(tmp_path / "suite.sqlite") and len(through_plan) == 2  # cell + undefended check


class CtrlCSquare(Square):
    """Square, interrupted (Ctrl-C) while the third chunk of the grid is being computed."""

    calls = 0

    def run(self, images, labels, seed):
        CtrlCSquare.calls += 1
        if CtrlCSquare.calls == 3:
            raise KeyboardInterrupt
        return super().run(images, labels, seed)


def test_ctrl_c_stops_the_grid_and_keeps_every_committed_chunk(tmp_path):
    plan = grid(attacks={"ctrl-c-square": ((1.0, 1.5), {"n_queries": 20})}, checks=False)
    db = tmp_path / "a.sqlite"
    with ATTACKS.temporary("ctrl-c-square", CtrlCSquare):
        plan.validate()
        store = ResultStore(db)
        with pytest.raises(KeyboardInterrupt):
            plan.execute(store, progress=False)
        cells = store.cells()
        assert sum(store.count_rows(c["cell_id"]) for c in cells) == 8  # two chunks of 4 were committed
        assert sorted(r["status"] for c in cells for r in store.runs(c["cell_id"])) == ["complete"] + ["interrupted"] * 3
        store.close()
        resumed = run_grid(db, plan)  # the same plan again: only the missing chunks
        fresh = run_grid(tmp_path / "b.sqlite", plan)
    assert resumed == fresh and sum(len(v) for v in fresh.values()) == 32


def test_ray_is_optional(tmp_path):
    """With `import ray` failing, otbench imports, lists, runs and reports; --executor ray is a one-line error
    naming the extra. Runs in a subprocess whose import system refuses Ray."""
    script = textwrap.dedent(f"""
        import json, sys

        class NoRay:
            def find_spec(self, name, path=None, target=None):
                if name == "ray" or name.startswith("ray."):
                    raise ModuleNotFoundError("No module named 'ray' (blocked by the test)")
                return None

        sys.meta_path.insert(0, NoRay())
        import otbench
        from otbench.cli import main
        sets = [a for k, v in {TINY_TRAIN!r}.items() for a in ("--set", f"train.{{k}}={{json.dumps(v)}}")]
        run = ["run", "--defense", "standard", "--attack", "square", "--eps", "1.5", "--n", "4", "--chunk", "2",
               "--set", "attack.n_queries=10", "--data-root", {str(DATA)!r}, "--results", {str(tmp_path / 'r.sqlite')!r},
               "--quiet", *sets]
        codes = [main(["list", "attacks"]), main(run), main(run + ["--executor", "ray"]),
                 main(["report", "--tables", "otad-table-3", "--preset", "quick", "--results",
                       {str(tmp_path / 'r.sqlite')!r}, "--out", {str(tmp_path / 'rep')!r}, "--quiet"])]
        print("CODES", json.dumps(codes), "ray" in sys.modules)
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert "CODES [0, 0, 2, 0] False" in res.stdout, res.stderr[-2000:]
    assert "otbench: error: --executor ray needs Ray, which is not installed: pip install 'otbench[ray]'" in res.stderr
    assert "Traceback" not in res.stderr


test_ray_is_optional = pytest.mark.slow(test_ray_is_optional)


def test_ray_available_says_whether_ray_imports():
    try:
        import ray  # noqa: F401
        expected = True
    except ImportError:
        expected = False
    assert ray_available() is expected
    if not expected:
        with pytest.raises(OTBenchError, match=r"pip install 'otbench\[ray\]'"):
            ExecutorOptions("ray").check()


@pytest.mark.parametrize("resources,options,shape", [
    ({"CPU": 2.0}, {}, (2, 1, 0.0)),  # a laptop: one worker per CPU
    ({"CPU": 16.0, "GPU": 4.0}, {}, (4, 1, 1.0)),  # a GPU box: one worker per GPU
    ({"CPU": 16.0, "GPU": 4.0}, {"device": "cpu"}, (16, 1, 0.0)),  # the GPUs left alone
    ({"CPU": 16.0, "GPU": 4.0}, {"gpus_per_worker": 0.5}, (8, 1, 0.5)),  # two workers share a GPU
    ({"CPU": 16.0, "GPU": 4.0}, {"threads": 4}, (4, 4, 1.0)),
    ({"CPU": 8.0}, {"threads": 4}, (2, 4, 0.0)),
])
def test_workers_follow_the_clusters_cpus_and_gpus(resources, options, shape):
    from otbench.executors.ray import worker_shape  # imports no Ray: the shape is arithmetic on resources

    assert worker_shape(resources, **options) == shape


@pytest.mark.parametrize("resources,options,message", [
    ({"CPU": 2.0}, {"workers": 3}, "too few for 3 workers"),
    ({"CPU": 8.0, "GPU": 1.0}, {"workers": 2}, "too few for 2 workers of 1 CPU.s. and 1 GPU"),
    ({"CPU": 2.0}, {"device": "cuda"}, "--device cuda: the Ray cluster has no GPU"),
])
def test_a_cluster_too_small_is_refused_not_waited_for(resources, options, message):
    from otbench.executors.ray import worker_shape

    with pytest.raises(OTBenchError, match=message):
        worker_shape(resources, **options)


def test_an_unreachable_cluster_is_one_line_at_once():
    """ray.init would retry an address nobody answers at for minutes; a closed loopback port is refused now."""
    import socket

    from otbench.executors.ray import reachable

    with socket.socket() as sock:  # a port that was free a moment ago, nobody listening on it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(OTBenchError, match=f"no Ray cluster answers at 127.0.0.1:{port} .*ray start --head"):
        reachable(f"127.0.0.1:{port}", timeout=2.0)
    with socket.socket() as sock:  # and one that answers passes
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        reachable(f"127.0.0.1:{sock.getsockname()[1]}", timeout=2.0)
    reachable("auto")  # left to Ray
    reachable(None)


def test_a_randomized_defenses_rows_depend_on_the_chunk_alone(standard, tmp_path):
    """A randomized defense draws from torch's global generator (its clean predictions too). Seeded by the chunk,
    a chunk's rows do not depend on what the process drew before: any worker, any order, a resumed run."""
    from otbench.defense import Defense
    from support import evaluate_cell

    class Jittery(Defense):
        name, randomized = "jittery-test", True

        def logits(self, x):
            return standard.logits((x + torch.randn_like(x)).clamp(0, 1))

    jittery = Jittery(standard.data, {"preset": "quick", "model": "jittery"}, standard.device)
    subset = eval_subset(len(standard.data.x_test), 12, 0)
    rows = []
    for name, draws in (("a", 0), ("b", 1000)):  # b: the process drew from the global generator before
        torch.rand(draws)
        store = ResultStore(tmp_path / f"{name}.sqlite")
        evaluate_cell(jittery, "none", 0.0, subset, store, chunk_size=4, progress=False)
        store.close()
        rows.append(stored(tmp_path / f"{name}.sqlite"))
    assert rows[0] == rows[1]
    preds = [r[2] for cell in rows[0].values() for r in cell]
    assert len(set(preds)) > 2  # the noise is strong enough to matter
