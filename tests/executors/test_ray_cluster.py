"""The Ray executor on a two-node local cluster (ray.cluster_utils.Cluster) whose workers do not share the
driver's model cache, and Ctrl-C of a real `otbench run --executor ray` process."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import torch
from ray_support import HERE, SQUARE, grid, run_grid
from support import DATA, TINY_TRAIN

from otbench.data.base import cache_dir
from otbench.training import used_checkpoints

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow


def test_a_two_node_cluster_without_a_shared_cache_stores_the_local_rows(tmp_path, monkeypatch):
    """Each node has one CPU, so each holds one worker. The workers' cache is not the driver's: one file in it
    has the name of a driver's checkpoint and other bytes (trained elsewhere), the rest are missing; so the
    checkpoints must come from the driver through the object store, and they are the driver's byte for byte
    (its records carry a mark a worker's own training could not write)."""
    from ray.cluster_utils import Cluster

    monkeypatch.setenv("OTBENCH_CACHE", str(tmp_path / "driver-cache"))  # its files are marked below
    reference = run_grid(tmp_path / "local.sqlite", grid("local", attacks=SQUARE))
    worker_cache = tmp_path / "worker-cache"
    used = [p for p in used_checkpoints() if p.is_relative_to(cache_dir())]
    assert used
    for path in used:  # the same weights, a record only the driver's files have
        saved = torch.load(path, map_location="cpu", weights_only=True)
        saved["record"]["mark"] = "driver"
        torch.save(saved, path)
    stale = worker_cache / used[0].relative_to(cache_dir())
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"another model under the same name")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)]),
                                           "OTBENCH_CACHE": str(worker_cache)}})
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        rows = run_grid(tmp_path / "ray.sqlite", grid("ray", attacks=SQUARE))  # default: one worker per CPU
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert rows == reference and len(rows) == 4
    shipped = sorted(worker_cache.rglob("*.pt"))
    assert stale in shipped, "the workers' cache is empty: they did not build the defenses from it"
    for path in shipped:
        assert path.read_bytes() == (cache_dir() / path.relative_to(worker_cache)).read_bytes()
        assert torch.load(path, map_location="cpu", weights_only=True)["record"]["mark"] == "driver"


def _chunks(db) -> int:
    try:
        with sqlite3.connect(db) as con:
            return con.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_ctrl_c_stops_a_ray_grid_and_keeps_every_committed_chunk(tmp_path):
    db = tmp_path / "r.sqlite"
    sets = [a for k, v in TINY_TRAIN.items() for a in ("--set", f"train.{k}={json.dumps(v)}")]
    # 15 chunks of about half a second each (NGOpt, 2 samples, 150 steps): long enough to interrupt after two
    argv = [sys.executable, "-m", "otbench", "run", "--defense", "standard", "--attack", "ngopt-cw", "--eps", "0.1",
            "--n", "30", "--chunk", "2", "--set", "attack.budget=150", "--no-checks", "--data-root", str(DATA),
            "--results", str(db), "--quiet", *sets]
    proc = subprocess.Popen(argv + ["--executor", "ray", "--workers", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "RAY_ADDRESS": ""})
    deadline = time.time() + 240
    while _chunks(db) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, f"the run ended before it could be interrupted: {proc.communicate()[1][-2000:]}"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted; every finished chunk is stored" in err
    kept = _chunks(db)
    assert 2 <= kept < 15
    with sqlite3.connect(db) as con:
        statuses = [s for (s,) in con.execute("SELECT status FROM runs")]
    assert "interrupted" in statuses and "running" not in statuses
    # resumed by the local executor (one thread, as each Ray worker had: equal thread counts, equal numbers)
    resumed = subprocess.run(argv + ["--json", "--threads", "1"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    cells = json.loads(resumed.stdout)["cells"]
    assert [(c["computed"], c["n"]) for c in cells] == [(30 - 2 * kept, 30)]
