"""The results database: an embedded SQLite file of cells and their per-sample rows.

A cell is (dataset, defense and its config, attack and its config, eps, seed); its rows are keyed by test
sample id. Rows are committed one chunk at a time, so a killed run keeps every finished chunk and the
next run of the same command computes only what is missing. A regression cell also keeps, per sample, the
target and the defense's clean and perturbed outputs (table `outputs`, written with the chunk; one scalar
each, enough for the single-output wine data of OTAD's Table V).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .config import config_hash
from .errors import OTBenchError
from .files import file_kind
from .identity import network_signature
from .migrations import SCHEMA_VERSION, migrate

RESULTS_ENV = "OTBENCH_RESULTS"
DEFAULT_RESULTS = "otbench-results.sqlite"
# SQLite's `PRAGMA application_id` of an otbench results database ("OTBR"): stamped when a file is made (and on
# the first write to a file made before it was), so otbench writes only into a file that is its own.
APPLICATION_ID = 0x4F544252

# every table's columns, in order: statements name them (no positional INSERT, no SELECT *)
COLUMNS: dict[str, tuple[str, ...]] = {
    "cells": ("cell_id", "dataset", "defense", "defense_config", "attack", "attack_config", "eps", "seed",
              "subset_seed", "preset", "created_at"),
    "samples": ("cell_id", "sample_id", "label", "clean_pred", "adv_pred", "pert_norm", "queries", "chunk"),
    "chunks": ("cell_id", "chunk", "n", "wall_seconds", "device", "versions", "machine", "finished_at"),
    "runs": ("run_id", "cell_id", "command", "sample_ids", "n", "wall_seconds", "status", "started_at",
             "finished_at", "machine", "versions", "pid", "host"),
    "outputs": ("cell_id", "sample_id", "target", "clean_out", "adv_out"),
    "flags": ("flag_key", "code", "level", "message", "cells", "created_at"),
    "analyses": ("key", "kind", "dataset", "defense", "identity", "sample_ids", "vals", "wall_seconds", "machine",
                 "device", "versions", "command", "created_at"),
}
# the tables a file made by otbench can hold (sqlite_sequence: SQLite's own, for runs' AUTOINCREMENT)
OTBENCH_TABLES = frozenset(COLUMNS) | {"sqlite_sequence"}

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS cells (cell_id TEXT PRIMARY KEY, dataset TEXT, defense TEXT, defense_config TEXT, "
    "attack TEXT, attack_config TEXT, eps REAL, seed INTEGER, subset_seed INTEGER, preset TEXT, created_at REAL)",
    "CREATE TABLE IF NOT EXISTS samples (cell_id TEXT, sample_id INTEGER, label INTEGER, clean_pred INTEGER, "
    "adv_pred INTEGER, pert_norm REAL, queries INTEGER, chunk INTEGER, PRIMARY KEY (cell_id, sample_id))",
    "CREATE TABLE IF NOT EXISTS chunks (cell_id TEXT, chunk INTEGER, n INTEGER, wall_seconds REAL, device TEXT, "
    "versions TEXT, machine TEXT, finished_at REAL, PRIMARY KEY (cell_id, chunk))",
    "CREATE TABLE IF NOT EXISTS runs (run_id INTEGER PRIMARY KEY AUTOINCREMENT, cell_id TEXT, command TEXT, "
    "sample_ids TEXT, n INTEGER, wall_seconds REAL, status TEXT, started_at REAL, finished_at REAL, machine TEXT, "
    "versions TEXT, pid INTEGER, host TEXT)",
    "CREATE TABLE IF NOT EXISTS outputs (cell_id TEXT, sample_id INTEGER, target REAL, clean_out REAL, "
    "adv_out REAL, PRIMARY KEY (cell_id, sample_id))",
    "CREATE TABLE IF NOT EXISTS flags (flag_key TEXT PRIMARY KEY, code TEXT, level TEXT, message TEXT, cells TEXT, "
    "created_at REAL)",
    "CREATE TABLE IF NOT EXISTS analyses (key TEXT PRIMARY KEY, kind TEXT, dataset TEXT, defense TEXT, "
    "identity TEXT, sample_ids TEXT, vals TEXT, wall_seconds REAL, machine TEXT, device TEXT, versions TEXT, "
    "command TEXT, created_at REAL)",
]


def _cols(table: str, skip: tuple[str, ...] = ()) -> str:
    return ", ".join(c for c in COLUMNS[table] if c not in skip)


def _where(table: str, where: dict[str, Any], allowed: tuple[str, ...] | None = None) -> str:
    """`a = ? AND b = ?` for keyword filters, each name checked against the table's columns (or `allowed`)."""
    valid = allowed or COLUMNS[table]
    unknown = sorted(set(where) - set(valid))
    if unknown:
        raise ValueError(f"{table} can be filtered by {', '.join(valid)}, not {unknown}")
    return " AND ".join(f"{k} = ?" for k in where) or "1"


def _insert(table: str, verb: str = "INSERT", skip: tuple[str, ...] = ()) -> str:
    """`VERB INTO table (its columns) VALUES (?, ...)`, by name."""
    names = [c for c in COLUMNS[table] if c not in skip]
    return f"{verb} INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"


SQLITE_HEADER = b"SQLite format 3\x00"
def resolve_results_path(path: str | os.PathLike | None = None) -> Path:
    if path is not None and not str(path).strip():
        raise OTBenchError("--results is empty; give a results database file, e.g. otbench-results.sqlite")
    return Path(path or os.environ.get(RESULTS_ENV) or DEFAULT_RESULTS).expanduser()


def writable(path: Path) -> bool:
    """Whether we may write `path`: the mode bits too, since root ignores them and would write anyway."""
    return os.access(path, os.W_OK) and bool(path.stat().st_mode & 0o200)


@dataclass(frozen=True)
class Inspected:
    """What a results database holds, read without writing: its schema version, tables and application id."""

    version: int
    tables: frozenset[str]
    application_id: int


def _header(uri: str) -> tuple[int, int, frozenset[str], tuple[str, ...]]:
    db = sqlite3.connect(uri, uri=True)
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        app = db.execute("PRAGMA application_id").fetchone()[0]
        tables = frozenset(r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
        cells = tuple(r[1] for r in db.execute("PRAGMA table_info(cells)"))
    finally:
        db.close()
    return version, app, tables, cells


def _inspect(path: Path) -> Inspected:
    """Open read-only (a `mode=ro` URI: SQLite writes nothing, makes no journal) and read the header facts. A file
    with a hot journal (a process killed while writing it) cannot be read so: it is read from a copy of both, rolled
    back there, so the file itself is still not touched before it is known to be otbench's."""
    journal = path.with_name(path.name + "-journal")
    try:
        try:
            version, app, tables, cells = _header(f"{path.resolve().as_uri()}?mode=ro")
        except sqlite3.OperationalError:
            if not journal.is_file():
                raise
            with tempfile.TemporaryDirectory() as tmp:
                copy = Path(tmp) / path.name
                shutil.copyfile(path, copy)
                shutil.copyfile(journal, copy.with_name(journal.name))
                version, app, tables, cells = _header(copy.as_uri())
    except sqlite3.DatabaseError as exc:
        raise OTBenchError(f"results database {path} cannot be read ({exc}): it is corrupt or truncated; give "
                           f"another file or move it away") from None
    if app != APPLICATION_ID:
        # a file from before the application id: otbench's exactly when it holds otbench's tables and nothing else,
        # and its `cells` table has otbench's columns
        legacy = app == 0 and {"cells", "samples"} <= tables <= OTBENCH_TABLES and cells == COLUMNS["cells"] \
            and version >= 0
        if not legacy:
            what = f"application id {app:#x}" if app else f"tables {', '.join(sorted(tables)) or 'none'}"
            raise OTBenchError(f"{path} is an SQLite database but not otbench's ({what}); otbench writes only its "
                               f"own results databases: give one, or a new file name")
    if version > SCHEMA_VERSION:
        raise OTBenchError(f"results database {path} has schema v{version}, written by a newer otbench (this one "
                           f"reads up to v{SCHEMA_VERSION}); upgrade otbench")
    return Inspected(version, tables, app)


def _current(found: Inspected | None) -> bool:
    """An otbench database of this schema, stamped, with every table: opening it writes nothing."""
    return found is not None and found.application_id == APPLICATION_ID and found.version == SCHEMA_VERSION \
        and set(COLUMNS) <= found.tables


def check_source_database(path: Path) -> Inspected:
    """A database to read from (a merge source, a report's results): a regular file, SQLite, otbench's, of a
    schema this code reads; opened read-only, so checking it changes nothing."""
    kind = file_kind(path)
    if kind is not None:
        raise OTBenchError(f"results database {path} is {kind}, not a file; give an otbench results database")
    if not path.exists():
        raise OTBenchError(f"results database {path} does not exist")
    with open(path, "rb") as f:
        if f.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
            raise OTBenchError(f"results database {path} is not an SQLite file; give an otbench results database")
    return _inspect(path)


def check_results_path(path: Path) -> Inspected | None:
    """Refuse, before any work and before a byte is written, a results path that is not a writable otbench
    database or a new file in a writable folder (nothing is created here: a mistyped folder must not appear on
    disk). Returns what the database holds; None for a new (or empty) file."""
    kind = file_kind(path)
    if kind == "a directory":
        raise OTBenchError(f"results database {path} is a directory; give a file, e.g. {path / DEFAULT_RESULTS}")
    if kind is not None:
        raise OTBenchError(f"results database {path} is {kind}, not a file; give an otbench results database or a "
                           f"new file name")
    if path.exists():
        if path.stat().st_size and not writable(path):
            check_source_database(path)  # a foreign file is named as such before its mode
        if not writable(path):
            raise OTBenchError(f"results database {path} is read-only; give a writable file or a new file name")
        return check_source_database(path) if path.stat().st_size else None
    if not path.parent.is_dir():
        raise OTBenchError(f"results database {path}: folder {path.parent} does not exist")
    if not writable(path.parent):
        raise OTBenchError(f"results database {path}: folder {path.parent} is read-only; give a path in a writable "
                           f"folder")
    return None


@dataclass
class SampleRow:
    sample_id: int
    label: int
    clean_pred: int
    adv_pred: int
    pert_norm: float
    queries: int | None

    @property
    def clean_correct(self) -> bool:
        return self.clean_pred == self.label

    @property
    def robust(self) -> bool:
        """Correct on the clean input and on the adversarial one (the usual robust-accuracy count)."""
        return self.clean_pred == self.label and self.adv_pred == self.label

    def robust_at(self, eps: float) -> bool:
        """A minimum-norm attack's row (`Attack.minimum_norm`; pert_norm = the smallest adversarial perturbation
        found): robust at budget eps when clean-correct and no adversarial input was found within eps."""
        return self.clean_pred == self.label and (self.adv_pred == self.label or self.pert_norm > eps)


@dataclass
class AnalysisRecord:
    """A stored analysis (a quantity that is not an attack cell: a relative error, a Lipschitz estimate, an
    inference time...): per-sample values under an identity (the analysis, the defense config and its
    parameters), with where and how it was computed."""

    key: str
    kind: str
    dataset: str
    defense: str
    identity: dict[str, Any]
    sample_ids: list[int]
    vals: dict[str, list[Any]]
    wall_seconds: float
    machine: str
    device: str
    versions: dict[str, str]
    command: str
    created_at: float


@dataclass
class OutputRow:
    """A regression sample: its target and the defense's outputs on the clean and perturbed input."""

    sample_id: int
    target: float
    clean_out: float
    adv_out: float


class ResultStore:
    """The results database, opened (created, or migrated to the current schema once) and checked as one; a
    context manager (`with ResultStore(path) as store:`) that closes it whatever happens."""

    def __init__(self, path: str | os.PathLike | None = None, read_only: bool = False) -> None:
        """`read_only`: the database must exist (nothing is created) and is never written, not even to migrate it or
        mark a killed run: one of an older schema is read from a migrated temporary copy (report, report --html)."""
        self.path = resolve_results_path(path)
        self.migrated: list[str] = []  # what opening it did to an older database
        self._tmp: tempfile.TemporaryDirectory | None = None
        if read_only:
            self._open_read_only(check_source_database(self.path))
            return
        found = check_results_path(self.path)  # read-only: a file that is not otbench's is never written
        self.db = sqlite3.connect(self.path, timeout=60)
        try:
            self._open(found)
            self._mark_killed_runs()
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise OTBenchError(f"results database {self.path} cannot be read ({exc}): it is corrupt or truncated; "
                               f"give another file or move it away") from None
        except BaseException:
            self.db.close()
            raise

    def _open(self, found: Inspected | None) -> None:
        """Create, stamp and migrate in one transaction: a process killed here leaves the file as it was."""
        if _current(found):
            return  # the common case: nothing to write
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA:  # tables a database from before them lacks
                self.db.execute(statement)
            if found is not None and found.version < SCHEMA_VERSION:
                self.migrated = migrate(self.db, max(found.version, 1))
            self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self.db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            self.db.commit()
        except BaseException:
            self.db.rollback()
            raise

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _mark_killed_runs(self) -> None:
        """A run whose process died without a word (kill -9, a crash) still says `running`: on this host, a run
        whose process is gone was killed."""
        host = socket.gethostname()
        dead = [run_id for run_id, pid in self.db.execute(
            "SELECT run_id, pid FROM runs WHERE status = 'running' AND host = ?", (host,)) if not _alive(pid)]
        if dead:
            with self.db:
                self.db.executemany("UPDATE runs SET status = 'killed' WHERE run_id = ?", [(r,) for r in dead])

    def _open_read_only(self, found: Inspected) -> None:
        """Only read: a current database in place (stamped or not), an older one through a migrated copy."""
        source = self.path
        if not (found.version == SCHEMA_VERSION and set(COLUMNS) <= found.tables):
            self._tmp = tempfile.TemporaryDirectory()
            source = Path(self._tmp.name) / self.path.name
            shutil.copyfile(self.path, source)
            ResultStore(source).close()  # migrated to this schema, in the copy
        self.db = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True, timeout=60)

    def close(self) -> None:
        self.db.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # -- cells -------------------------------------------------------------------------------------
    def ensure_cell(self, cell_id: str, meta: dict[str, Any]) -> None:
        self.db.execute(
            _insert("cells", "INSERT OR IGNORE"),
            (cell_id, meta["dataset"], meta["defense"], json.dumps(meta["defense_config"], sort_keys=True),
             meta["attack"], json.dumps(meta["attack_config"], sort_keys=True), meta["eps"], meta["seed"],
             meta["subset_seed"], meta["preset"], time.time()))
        self.db.commit()

    def cells(self, **where: Any) -> list[dict[str, Any]]:
        """Stored cells, filtered by column (dataset, defense, attack, eps...): names checked against the schema,
        never put into SQL unchecked."""
        clause = _where("cells", where)
        out = []
        for row in self.db.execute(f"SELECT {_cols('cells')} FROM cells WHERE {clause}", tuple(where.values())):
            cell = dict(zip(COLUMNS["cells"], row))
            cell["defense_config"] = json.loads(cell["defense_config"])
            cell["attack_config"] = json.loads(cell["attack_config"])
            out.append(cell)
        return out

    # -- rows --------------------------------------------------------------------------------------
    def done_ids(self, cell_id: str) -> set[int]:
        return {r[0] for r in self.db.execute("SELECT sample_id FROM samples WHERE cell_id = ?", (cell_id,))}

    def add_chunk(self, cell_id: str, chunk: int, rows: Iterable[SampleRow], meta: dict[str, Any],
                  outputs: Iterable[OutputRow] | None = None) -> None:
        """All rows of a chunk (and its regression outputs) and its record in one transaction: a chunk is
        stored whole or not at all."""
        rows = list(rows)
        with self.db:
            self.db.executemany(
                _insert("samples", "INSERT OR REPLACE"),
                [(cell_id, r.sample_id, r.label, r.clean_pred, r.adv_pred, r.pert_norm, r.queries, chunk)
                 for r in rows])
            if outputs is not None:
                self.db.executemany(_insert("outputs", "INSERT OR REPLACE"),
                                    [(cell_id, o.sample_id, o.target, o.clean_out, o.adv_out) for o in outputs])
            self.db.execute(_insert("chunks", "INSERT OR REPLACE"),
                            (cell_id, chunk, len(rows), meta["wall_seconds"], meta["device"],
                             json.dumps(meta["versions"], sort_keys=True), meta["machine"], time.time()))

    def rows(self, cell_id: str, ids: Iterable[int] | None = None) -> list[SampleRow]:
        cur = self.db.execute("SELECT sample_id, label, clean_pred, adv_pred, pert_norm, queries FROM samples "
                              "WHERE cell_id = ? ORDER BY sample_id", (cell_id,))
        rows = [SampleRow(*r) for r in cur.fetchall()]
        if ids is not None:
            wanted = set(ids)
            rows = [r for r in rows if r.sample_id in wanted]
        return rows

    def outputs(self, cell_id: str, ids: Iterable[int] | None = None) -> list[OutputRow]:
        """The regression outputs of a cell, by sample id (empty for a classification cell)."""
        cur = self.db.execute("SELECT sample_id, target, clean_out, adv_out FROM outputs WHERE cell_id = ? "
                              "ORDER BY sample_id", (cell_id,))
        out = [OutputRow(*r) for r in cur.fetchall()]
        if ids is not None:
            wanted = set(ids)
            out = [o for o in out if o.sample_id in wanted]
        return out

    def count_rows(self, cell_id: str) -> int:
        return self.db.execute("SELECT COUNT(*) FROM samples WHERE cell_id = ?", (cell_id,)).fetchone()[0]

    def chunk_records(self, cell_id: str) -> list[dict[str, Any]]:
        cur = self.db.execute(f"SELECT {_cols('chunks')} FROM chunks WHERE cell_id = ? ORDER BY chunk", (cell_id,))
        return [dict(zip(COLUMNS["chunks"], r)) for r in cur.fetchall()]

    # -- runs --------------------------------------------------------------------------------------
    def start_run(self, cell_id: str, command: str, ids: list[int], machine: str, versions: dict) -> int:
        """Claim the cell for this process: its `runs` row is written first (taking SQLite's write lock), then no
        other live process of this host may be running the cell, else nothing is written and the run is refused.
        So two runs on one results file never compute the same chunk; the second is told to wait."""
        host = socket.gethostname()
        with self.db:
            cur = self.db.execute(
                "INSERT INTO runs (cell_id, command, sample_ids, n, status, started_at, machine, versions, pid, host) "
                "VALUES (?,?,?,?,?,?,?,?,?,?)",
                (cell_id, command, json.dumps(ids), len(ids), "running", time.time(), machine,
                 json.dumps(versions, sort_keys=True), os.getpid(), host))
            others = self.db.execute("SELECT pid, started_at FROM runs WHERE cell_id = ? AND status = 'running' AND "
                                     "host = ? AND pid != ? AND run_id != ?",
                                     (cell_id, host, os.getpid(), cur.lastrowid)).fetchall()
            live = [(pid, started) for pid, started in others if _alive(pid)]
            if live:
                self.db.rollback()
                cell = self.db.execute("SELECT defense, attack, eps FROM cells WHERE cell_id = ?",
                                       (cell_id,)).fetchone()
                what = f"{cell[0]} under {cell[1]} at eps {cell[2]:g}" if cell else cell_id
                pid, started = live[0]
                raise OTBenchError(f"results database {self.path}: cell {what} is being computed by another otbench "
                                   f"run (pid {pid} on this machine, started {time.strftime('%H:%M:%S', time.localtime(started))}"
                                   f"); wait for it to finish and rerun the same command (it resumes from what is "
                                   f"stored), or give another --results file")
        return int(cur.lastrowid)

    def finish_run(self, run_id: int, wall_seconds: float, status: str = "complete") -> None:
        with self.db:
            self.db.execute("UPDATE runs SET status = ?, wall_seconds = ?, finished_at = ? WHERE run_id = ?",
                            (status, wall_seconds, time.time(), run_id))

    # -- diagnostics -------------------------------------------------------------------------------
    def add_flags(self, flags: Iterable[Any]) -> None:
        """Record soundness flags (otbench.checks.Flag); a flag replaces the earlier one of its check on the
        same cells (their verdict on fewer samples)."""
        with self.db:
            self.db.executemany(_insert("flags", "INSERT OR REPLACE"),
                                [(f.key, f.code, f.level, f.message, json.dumps(sorted(f.cells)), time.time())
                                 for f in flags])

    def flags(self, cell_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Stored flags, optionally only those touching one of `cell_ids`."""
        cur = self.db.execute("SELECT code, level, message, cells FROM flags ORDER BY created_at")
        out = [{"code": c, "level": lv, "message": m, "cells": json.loads(cs)} for c, lv, m, cs in cur.fetchall()]
        if cell_ids is not None:
            wanted = set(cell_ids)
            out = [f for f in out if wanted & set(f["cells"])]
        return out

    # -- merging -----------------------------------------------------------------------------------
    def merge_from(self, other: str | os.PathLike) -> dict[str, int]:
        """Copy every cell, row, chunk, run, flag and analysis of another results database that this one lacks
        (e.g. one filled on a GPU machine). Rows are keyed by (cell, sample), so merging is idempotent. An older
        database is migrated in a temporary copy first: the source file is only read."""
        source = Path(other)
        check_source_database(source)
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / source.name
            shutil.copyfile(source, copy)
            try:
                ResultStore(copy).close()  # checked, and migrated to this schema if older
            except OTBenchError as exc:
                raise OTBenchError(str(exc).replace(str(copy), str(source))) from None
            return self._merge_attached(copy)

    def _merge_attached(self, other: Path) -> dict[str, int]:
        self.db.execute("ATTACH DATABASE ? AS other", (str(other),))
        counts = {}
        try:
            self._check_same_networks()
            with self.db:
                tables = {r[0] for r in self.db.execute("SELECT name FROM other.sqlite_master WHERE type='table'")}
                for table in ("cells", "samples", "chunks", "outputs", "flags", "analyses"):
                    if table not in tables:  # a database from before the table existed
                        continue
                    before = self.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                    cols = _cols(table)
                    self.db.execute(f"INSERT OR IGNORE INTO {table} ({cols}) SELECT {cols} FROM other.{table}")
                    counts[table] = self.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] - before
                cols = _cols("runs", skip=("run_id",))  # the target numbers its own runs
                before = self.db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
                self.db.execute(f"INSERT INTO runs ({cols}) SELECT {cols} FROM other.runs o WHERE NOT EXISTS "
                                f"(SELECT 1 FROM runs r WHERE r.cell_id = o.cell_id AND r.started_at = o.started_at)")
                counts["runs"] = self.db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] - before
        finally:
            self.db.execute("DETACH DATABASE other")
        return counts

    def _check_same_networks(self) -> None:
        """Refuse, before anything is copied, a source whose cells share a key with cells here but came from
        another trained network (retrained on another CPU model or thread count): their rows would be mixed into
        one number. Nothing is merged then."""
        clash = []
        for cell_id, mine, theirs in self.db.execute(
                "SELECT c.cell_id, c.defense_config, o.defense_config FROM cells c JOIN other.cells o "
                "ON c.cell_id = o.cell_id WHERE c.defense_config != o.defense_config"):
            a, b = json.loads(mine).get("trained"), json.loads(theirs).get("trained")
            if network_signature(a) != network_signature(b):
                clash.append(cell_id)
        if clash:
            (cell,) = self.cells(cell_id=clash[0])
            raise OTBenchError(f"{len(clash)} cell(s) of the source are stored here under the same key from another "
                               f"trained network (e.g. {cell['defense']}/{cell['attack']} eps={cell['eps']:g}, cell "
                               f"{clash[0]}): merging would mix two models in one number; nothing was merged. Drop "
                               f"those cells from one side, or keep the results files apart")

    # -- analyses ----------------------------------------------------------------------------------
    @staticmethod
    def analysis_key(identity: dict[str, Any]) -> str:
        """An analysis identity holds `analysis` (its kind) and `defense` (a dict with `name` and `dataset`)."""
        return config_hash(identity, 24)

    def _analysis(self, row: tuple) -> AnalysisRecord:
        (key, kind, dataset, defense, identity, ids, vals, wall, host, device, versions, command, created) = row
        return AnalysisRecord(key, kind, dataset, defense, json.loads(identity), json.loads(ids), json.loads(vals),
                              wall, host, device, json.loads(versions), command, created)

    def analysis(self, identity: dict[str, Any]) -> AnalysisRecord | None:
        row = self.db.execute(f"SELECT {_cols('analyses')} FROM analyses WHERE key = ?",
                              (self.analysis_key(identity),)).fetchone()
        return None if row is None else self._analysis(row)

    def analyses(self, **where: Any) -> list[AnalysisRecord]:
        """Stored analyses, filtered by column (kind, dataset, defense)."""
        clause = _where("analyses", where, allowed=("kind", "dataset", "defense"))
        cur = self.db.execute(f"SELECT {_cols('analyses')} FROM analyses WHERE {clause} ORDER BY created_at",
                              tuple(where.values()))
        return [self._analysis(r) for r in cur.fetchall()]

    def save_analysis(self, identity: dict[str, Any], ids: list[int], vals: dict[str, list[Any]], wall: float,
                      device: str, command: str, host: str, versions: dict[str, str]) -> AnalysisRecord:
        """Store an analysis; samples already stored under the same identity are kept (a larger n only adds
        the missing ones), so their values, times and commands accumulate."""
        old = self.analysis(identity)
        if old is not None:
            keep = [i for i, s in enumerate(old.sample_ids) if s not in set(ids)]
            ids = [old.sample_ids[i] for i in keep] + list(ids)
            vals = {k: [old.vals[k][i] for i in keep] + list(v) for k, v in vals.items()}
            wall += old.wall_seconds
            command = old.command if command in old.command else old.command + " | " + command
        with self.db:
            self.db.execute(_insert("analyses", "INSERT OR REPLACE"),
                            (self.analysis_key(identity), identity["analysis"], identity["defense"]["dataset"],
                             identity["defense"]["name"], json.dumps(identity, sort_keys=True, default=str),
                             json.dumps(list(ids)), json.dumps(vals), wall, host, device,
                             json.dumps(versions, sort_keys=True), command, time.time()))
        return self.analysis(identity)  # type: ignore[return-value]

    def runs(self, cell_id: str) -> list[dict[str, Any]]:
        cur = self.db.execute(f"SELECT {_cols('runs')} FROM runs WHERE cell_id = ? ORDER BY run_id", (cell_id,))
        return [dict(zip(COLUMNS["runs"], r)) for r in cur.fetchall()]


def _alive(pid: int | None) -> bool:
    if pid is None:
        return True  # recorded before pids were: unknown, leave it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process of that pid
        return True
    return True


def merge_into(target: str | os.PathLike | None, sources: Iterable[str | os.PathLike],
               report: Any = None) -> tuple[Path, dict[str, dict[str, int]]]:
    """Merge `sources` into the results database `target`, every file checked (read-only) first. A new target
    is built beside itself under a temporary name and renamed into place once every source is in, so a merge that
    fails (or is killed) leaves no new target behind; an existing target takes each source in one transaction.
    `report(source, path, counts)` is called after each source."""
    sources = [Path(s) for s in sources]
    for source in sources:  # every source checked before the target is opened (or made)
        check_source_database(source)
    path = resolve_results_path(target)
    new = check_results_path(path) is None and not (path.exists() and path.stat().st_size)
    work = path
    if new:
        _remove_stale_merges(path)
        work = path.with_name(f".{path.name}.{os.getpid()}.merging")  # the folder's own permissions, as the target
    out: dict[str, dict[str, int]] = {}
    try:
        with ResultStore(work) as store:
            for source in sources:
                out[str(source)] = store.merge_from(source)
                if report is not None:
                    report(source, path, out[str(source)])
        if new:
            os.replace(work, path)
    finally:
        if new and work.exists():
            work.unlink()
    return path, out


def _remove_stale_merges(path: Path) -> None:
    """The hidden work files of merges into `path` killed before their rename (their process is gone)."""
    for work in path.parent.glob(f".{path.name}.*.merging"):
        pid = work.name[len(path.name) + 2:-len(".merging")]
        if pid.isdigit() and not _alive(int(pid)):
            for leftover in (work, work.with_name(work.name + "-journal")):
                leftover.unlink(missing_ok=True)
