"""reports/reproduce-baselines.sh, the issue-20 campaign, on a tiny job list: both queues run side by side,
a SIGKILL of the whole campaign (its process group) loses no committed chunk, and the rerun ends with the numbers
an unbroken campaign gives; a job with a bad setting stops the campaign before anything runs (exit 2)."""
from __future__ import annotations

import json
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import DATA, TINY_TRAIN, needs_mnist

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "reports" / "reproduce-baselines.sh"
SETS = [a for k, v in TINY_TRAIN.items() for a in ("--set", f"train.{k}={json.dumps(v)}")]
RUN = ["run", "--dataset", "mnist", "--preset", "quick", "--defense", "standard", "--attack", "pgd", "--n", "24",
       "--chunk", "2", "--set", "attack.steps=150", "--no-checks", "--quiet", *SETS]


def jobs(path: Path, bad: bool = False) -> Path:
    """Queue 0 trains the shared network; A and B attack it at two eps (two cells, one per core)."""
    a = [*RUN, "--eps", "0.3"]
    b = [*RUN, "--eps", "0.2", "--set", "train.epochs=0"] if bad else [*RUN, "--eps", "0.2"]
    path.write_text(f"0: {shlex.join(['train', '--defense', 'standard', '--quiet', *SETS])}\n"
                    f"A: {shlex.join(a)}\nB: {shlex.join(b)}\n")
    return path


def campaign(tmp: Path, db: Path, job_file: Path) -> subprocess.Popen:
    env = {**os.environ, "OTBENCH_DATA": str(DATA), "OTBENCH_CACHE": str(tmp / "cache"), "OTBENCH_RESULTS": str(db),
           "PY": sys.executable, "LOGS": str(tmp / f"logs-{db.stem}")}
    return subprocess.Popen(["bash", str(SCRIPT), str(job_file)], env=env, cwd=tmp, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out + err


def rows(db: Path) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT c.eps, s.sample_id, s.clean_pred, s.adv_pred, round(s.pert_norm, 6) FROM samples s "
                           "JOIN cells c USING (cell_id) ORDER BY c.eps, s.sample_id").fetchall()
    finally:
        con.close()


def chunk_records(db: Path) -> set[tuple]:
    """Each committed chunk with the time it was finished: a recomputed chunk gets a new time."""
    con = sqlite3.connect(db)
    try:
        return set(con.execute("SELECT cell_id, chunk, finished_at FROM chunks").fetchall())
    finally:
        con.close()


def chunks(db: Path) -> int:
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
def test_a_killed_campaign_loses_no_finished_chunk_and_resumes_to_the_unbroken_numbers(tmp_path):
    job_file = jobs(tmp_path / "jobs.txt")
    killed = tmp_path / "killed.sqlite"
    proc = campaign(tmp_path, killed, job_file)
    deadline = time.time() + 300
    while chunks(killed) < 3:  # both queues under way: kill the whole campaign, every process of it
        assert proc.poll() is None, "the campaign finished before it could be killed: " + finish(proc)[1][-2000:]
        assert time.time() < deadline
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    kept, committed = rows(killed), chunk_records(killed)
    assert 2 <= len(kept) < 48 and len(kept) % 2 == 0  # whole chunks only
    rc, log = finish(campaign(tmp_path, killed, job_file))  # the rerun
    assert rc == 0 and "campaign complete" in log, log[-3000:]
    assert set(kept) <= set(rows(killed))  # every committed chunk stays as it was,
    assert committed < chunk_records(killed)  # not recomputed: the rerun only added the missing ones
    whole = tmp_path / "whole.sqlite"
    rc, log = finish(campaign(tmp_path, whole, job_file))
    assert rc == 0, log[-3000:]
    assert rows(killed) == rows(whole) and len(rows(whole)) == 48  # 24 samples at each of the two eps
    logs = {q: (tmp_path / "logs-whole" / f"queue-{q}.log").read_text() for q in "AB"}
    assert "--eps 0.3" in logs["A"] and "--eps 0.2" in logs["B"]  # one cell per queue (per core)


@needs_mnist
def test_a_job_with_a_bad_setting_stops_the_campaign_before_anything_runs(tmp_path):
    db = tmp_path / "r.sqlite"
    rc, log = finish(campaign(tmp_path, db, jobs(tmp_path / "jobs.txt", bad=True)))
    assert rc == 2 and "invalid job (nothing run)" in log and "epochs" in log, log[-2000:]
    assert not db.exists() and not (tmp_path / "cache" / "models").exists()  # nothing trained, nothing stored


def test_the_job_list_covers_every_cell_of_the_tables_at_each_defenses_campaign_preset():
    import importlib.util

    from otbench.papers.otad.strongest import BASELINE_ROWS, battery
    from otbench.registry import DEFENSES

    spec = importlib.util.spec_from_file_location("baselines_jobs", ROOT / "reports" / "baselines_jobs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    lines = module.job_lines(500, 200)
    parsed = [(line[0], shlex.split(line[3:])) for line in lines]
    runs = [(q, dict(zip(a[1::2], a[2::2]))) for q, a in parsed if a[0] == "run"]  # "--flag value" pairs
    queues: dict[str, set[str]] = {}
    for q, args in runs:
        queues.setdefault(args["--defense"], set()).add(q)
        assert args["--preset"] == ("cpu" if args["--defense"] in ("soc-plus", "linf-dist-net") else "paper")
    assert all(len(qs) == 1 for qs in queues.values())  # no defense in both queues: no network trained twice
    assert {q for qs in queues.values() for q in qs} == {"A", "B"}
    for _, defense in BASELINE_ROWS:  # every attack of each battery is a job
        mine = {args["--attack"] for _, args in runs if args["--defense"] == defense}
        assert {a for _, a, _ in battery(DEFENSES.get(defense))} <= mine
    assert {"ot-cla-adv", "cnn-pgd-at", "defense-gan"} <= set(queues)  # otc-table-1-mnist, otc-table-2
    assert parsed[0][0] == "0" and parsed[-1][0] == "Z" and "--fallback" in parsed[-1][1]
