"""kill -9, the way runs really die: during a run nothing committed is lost and the rerun gives the numbers an
unbroken run gives; during a training the finished epochs are kept and the retrained network is bitwise the one
an unbroken training makes; no half file is left and the killed run's record says so."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from support import DATA, TINY_TRAIN, needs_mnist

SETS = [a for k, v in TINY_TRAIN.items() for a in ("--set", f"train.{k}={json.dumps(v)}")]


def env(cache: Path) -> dict[str, str]:
    return {**os.environ, "OTBENCH_DATA": str(DATA), "OTBENCH_CACHE": str(cache), "OMP_NUM_THREADS": "1"}


def otbench(args: list[str], cache: Path, cwd: Path) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "otbench", *args], capture_output=True, text=True, env=env(cache),
                         cwd=cwd, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def kill_when(args: list[str], cache: Path, cwd: Path, ready) -> None:
    """Start otbench, SIGKILL it as soon as `ready()` holds (checked every 20 ms)."""
    proc = subprocess.Popen([sys.executable, "-m", "otbench", *args], env=env(cache), cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not ready():
        assert proc.poll() is None, "otbench finished before it could be killed: make its work longer"
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def rows(db: Path) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT sample_id, clean_pred, adv_pred, round(pert_norm, 6) FROM samples "
                           "ORDER BY sample_id").fetchall()
    finally:
        con.close()


def chunks(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(db, timeout=1)
        try:
            return con.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


@pytest.mark.slow
@needs_mnist
def test_kill_9_during_a_run_loses_nothing_committed_and_resumes_to_the_same_numbers(tmp_path):
    cache = tmp_path / "cache"
    run = ["run", "--defense", "standard", "--attack", "pgd", "--eps", "0.3", "--n", "24", "--chunk", "2",
           "--set", "attack.steps=150", "--no-checks", "--quiet", *SETS]
    otbench(["train", "--defense", "standard", "--quiet", *SETS], cache, tmp_path)  # the model first: a run to kill
    killed = tmp_path / "killed.sqlite"
    kill_when([*run, "--results", str(killed)], cache, tmp_path, lambda: chunks(killed) >= 2)
    kept = rows(killed)
    assert 4 <= len(kept) < 24 and len(kept) % 2 == 0  # whole chunks only
    otbench([*run, "--results", str(killed)], cache, tmp_path)
    assert set(kept) <= set(rows(killed))  # what was committed stays as it was
    whole = tmp_path / "whole.sqlite"
    otbench([*run, "--results", str(whole)], cache, tmp_path)
    assert rows(killed) == rows(whole) and len(rows(whole)) == 24
    con = sqlite3.connect(killed)
    statuses = [s for (s,) in con.execute("SELECT status FROM runs ORDER BY run_id")]
    con.close()
    assert statuses == ["killed", "complete"]  # the killed run does not stay `running` forever


@pytest.mark.slow
@needs_mnist
def test_kill_9_during_a_training_keeps_its_finished_epochs_and_ends_with_the_same_network(tmp_path):
    sets = [a for k, v in {**TINY_TRAIN, "epochs": 6}.items() for a in ("--set", f"train.{k}={json.dumps(v)}")]
    train = ["train", "--defense", "standard", "--quiet", *sets]
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    models = killed / "models"
    kill_when(train, killed, tmp_path, lambda: any(models.glob("*.partial")) if models.exists() else False)
    assert not list(models.glob("*.pt")) and not list(models.glob("*tmp"))  # no checkpoint yet, no half file
    out = otbench(train, killed, tmp_path)
    assert "resuming train fc-resnet on mnist at epoch" in out.stderr
    assert not list(models.glob("*.partial")) and not list(models.glob("*tmp"))  # cleaned up once written
    otbench(train, whole, tmp_path)
    (a,), (b,) = list(models.glob("*.pt")), list((whole / "models").glob("*.pt"))
    sa, sb = (torch.load(p, weights_only=True)["state_dict"] for p in (a, b))
    assert a.name == b.name and all(torch.equal(sa[k], sb[k]) for k in sb)
