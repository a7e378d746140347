"""kill -9 while a results database is migrated or merged into: each file is left as it was or fully done (one
transaction; a new merge target appears only whole, by a rename). The process is stopped at a known point inside
the work (a step that prints and sleeps), then killed."""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from otbench.migrations import SCHEMA_VERSION
from otbench.store import ResultStore

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "results-v1.sqlite"

# a v1 -> v3 migration that stops (prints, sleeps) after its first step, inside the transaction
MIGRATE = """
import sys, time
from otbench import migrations
from otbench.store import ResultStore
first = migrations.MIGRATIONS[1]
def slow(db):
    note = first(db)
    print("inside", flush=True)
    time.sleep(120)
    return note
migrations.MIGRATIONS[1] = slow
ResultStore(sys.argv[1])
"""

# a merge that stops at its last statement (the runs), after every other table was copied, inside the transaction
MERGE = """
import sys, time
from otbench import store
attached = store.ResultStore._merge_attached
def slow(self, other):
    def trace(sql):
        if sql.startswith("INSERT INTO runs"):
            print("inside", flush=True)
            time.sleep(120)
    self.db.set_trace_callback(trace)
    return attached(self, other)
store.ResultStore._merge_attached = slow
from otbench.cli import main
sys.exit(main(["merge", sys.argv[1], "--results", sys.argv[2]]))
"""


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def kill_inside(script: str, *args: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    line = proc.stdout.readline()
    assert line.strip() == "inside", proc.stderr.read()[-3000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def counts(path: Path) -> dict[str, int]:
    db = sqlite3.connect(path)
    try:
        return {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("cells", "samples", "runs")}
    finally:
        db.close()


def version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return db.execute("PRAGMA user_version").fetchone()[0]
    finally:
        db.close()


@pytest.mark.slow
def test_a_migration_killed_inside_leaves_the_file_as_it_was(tmp_path):
    path = tmp_path / "v1.sqlite"
    shutil.copyfile(FIXTURE, path)
    before, rows = sha(path), counts(path)
    kill_inside(MIGRATE, path)
    assert sha(path) == before  # nothing of the transaction reached the file (its journal is rolled back later)
    assert version(path) == 0 and counts(path) == rows
    with ResultStore(path) as store:  # and the next open migrates it whole
        assert len(store.migrated) == SCHEMA_VERSION - 1
    assert version(path) == SCHEMA_VERSION and counts(path)["samples"] == rows["samples"]


@pytest.mark.slow
@pytest.mark.parametrize("target_exists", [False, True])
def test_a_merge_killed_inside_leaves_both_files_as_they_were(tmp_path, target_exists):
    source = tmp_path / "v1.sqlite"
    shutil.copyfile(FIXTURE, source)
    target = tmp_path / "target.sqlite"
    if target_exists:
        ResultStore(target).close()
        target_rows = counts(target)
    source_sha = sha(source)
    kill_inside(MERGE, source, target)
    assert sha(source) == source_sha
    if target_exists:
        assert counts(target) == target_rows  # the killed transaction's rows are not there
    else:
        assert not target.exists()  # only a hidden work file, never a half target under the asked name
        assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == ["v1.sqlite"]
    assert subprocess.run([sys.executable, "-m", "otbench", "merge", str(source), "--results", str(target)],
                          capture_output=True).returncode == 0  # the same merge, rerun, completes
    assert counts(target) == counts(source)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["target.sqlite", "v1.sqlite"]  # the killed work file too
