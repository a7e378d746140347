"""otbench writes only what it owns, and trusts no file it is given (issue 23): a results database is written only
when it is new or otbench's (checked read-only first, by SQLite's application id), a foreign file stays
byte-identical; special files are refused by type at once (a FIFO never blocks); a failed merge leaves no new
target; read-only commands create nothing; nothing is created inside a data root; MNIST files are checked against
what they must be; two runs never compute the same cell at once. In-process (main()), each test a few seconds."""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import DATA, needs_mnist

from otbench.cli import main
from otbench.data.base import _LOADED
from otbench.errors import OTBenchError
from otbench.store import APPLICATION_ID, COLUMNS, OutputRow, ResultStore, SampleRow

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "results-v1.sqlite"
RUN = ["run", "--defense", "standard", "--attack", "square", "--eps", "2", "--n", "4", "--quiet"]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def no_hang():
    """A FIFO opened by mistake blocks forever: fail the test instead."""
    def hung(signum, frame):
        raise TimeoutError("otbench blocked (a FIFO opened?)")
    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def refused(capsys, argv: list[str], message: str) -> str:
    """main(argv) is refused with exit 2 and one line holding `message`."""
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        rc = exc.code
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert message in err, err
    return err


def foreign_db(path: Path, rows: int = 3, app_id: int = 0) -> Path:
    """Another program's database, with a table named `cells` (the case that was written into)."""
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE cells (id INTEGER PRIMARY KEY, colour TEXT)")
    db.executemany("INSERT INTO cells (colour) VALUES (?)", [(f"c{i}",) for i in range(rows)])
    if app_id:
        db.execute(f"PRAGMA application_id = {app_id}")
    db.commit()
    db.close()
    return path


def v1(tmp_path: Path, name: str = "v1.sqlite") -> Path:
    path = tmp_path / name
    shutil.copyfile(FIXTURE, path)
    return path


# -- results databases ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rows", [3, 0])
def test_a_foreign_database_with_a_cells_table_is_refused_and_left_byte_identical(tmp_path, capsys, rows):
    path = foreign_db(tmp_path / "other.sqlite", rows)
    before = sha(path)
    with pytest.raises(OTBenchError, match="not otbench's"):
        ResultStore(path)
    refused(capsys, [*RUN, "--results", str(path)], "not otbench's")
    refused(capsys, ["merge", str(path), "--results", str(tmp_path / "new.sqlite")], "not otbench's")
    refused(capsys, ["merge", str(v1(tmp_path)), "--results", str(path)], "not otbench's")
    assert sha(path) == before
    assert not (tmp_path / "new.sqlite").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.sqlite", "v1.sqlite"]  # no journal, no target


def test_otbench_tables_under_another_programs_application_id_are_refused(tmp_path):
    path = v1(tmp_path)
    db = sqlite3.connect(path)
    db.execute("PRAGMA application_id = 1234")
    db.commit()
    db.close()
    before = sha(path)
    with pytest.raises(OTBenchError, match="application id 0x4d2"):
        ResultStore(path)
    assert sha(path) == before


def test_a_new_database_is_stamped_and_an_old_one_on_its_first_write(tmp_path):
    def app_id(path):
        db = sqlite3.connect(path)
        try:
            return db.execute("PRAGMA application_id").fetchone()[0]
        finally:
            db.close()

    with ResultStore(tmp_path / "new.sqlite"):
        pass
    assert app_id(tmp_path / "new.sqlite") == APPLICATION_ID
    old = v1(tmp_path)
    assert app_id(old) == 0
    ResultStore(old).close()  # recognised by its exact tables and columns, migrated and stamped in one transaction
    assert app_id(old) == APPLICATION_ID


@pytest.mark.parametrize("kind,message", [
    ("fifo", "is a FIFO (named pipe), not a file"),
    ("devnull", "is a character device, not a file"),
    ("dir", "is a directory"),
    ("broken", "is a broken symbolic link"),
])
def test_special_files_are_refused_by_type_at_once(tmp_path, capsys, kind, message):
    path = tmp_path / "results.sqlite"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "devnull":
        path.symlink_to("/dev/null")
    elif kind == "dir":
        path.mkdir()
    else:
        path.symlink_to(tmp_path / "gone")
    start = time.time()
    refused(capsys, [*RUN, "--results", str(path)], message)
    refused(capsys, ["merge", str(v1(tmp_path)), "--results", str(path)], message)
    if kind != "dir":
        refused(capsys, ["merge", str(path), "--results", str(tmp_path / "t.sqlite")], message)
    assert time.time() - start < 30
    assert not (tmp_path / "t.sqlite").exists()


def test_a_failed_merge_leaves_no_new_target(tmp_path, capsys):
    bad = v1(tmp_path, "bad.sqlite")  # otbench's layout, but a cell that does not match its stored settings
    db = sqlite3.connect(bad)
    db.execute("UPDATE cells SET cell_id = 'x' || cell_id")
    db.commit()
    db.close()
    target = tmp_path / "merged.sqlite"
    refused(capsys, ["merge", str(v1(tmp_path)), str(bad), "--results", str(target)], "does not match its stored")
    assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.sqlite", "v1.sqlite"]


def test_a_merge_into_a_new_target_makes_it_whole(tmp_path, capsys):
    target = tmp_path / "merged.sqlite"
    assert main(["merge", str(v1(tmp_path)), "--results", str(target)]) == 0
    with ResultStore(target, read_only=True) as store:
        assert len(store.cells()) > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged.sqlite", "v1.sqlite"]


# -- the store's API --------------------------------------------------------------------------------------------
def test_cells_filters_are_checked_against_the_schema(tmp_path):
    with ResultStore(tmp_path / "r.sqlite") as store:
        with pytest.raises(ValueError, match="cells can be filtered by cell_id"):
            store.cells(**{"1=1 OR dataset": "x"})
        assert store.cells(dataset="mnist") == []


def test_rows_are_written_by_column_name(tmp_path):
    """A table whose columns are in another order (an ALTER TABLE appends) still gets each value in its column."""
    path = tmp_path / "r.sqlite"
    with ResultStore(path) as store:
        store.db.execute("DROP TABLE outputs")
        store.db.execute("CREATE TABLE outputs (adv_out REAL, clean_out REAL, target REAL, sample_id INTEGER, "
                         "cell_id TEXT, PRIMARY KEY (cell_id, sample_id))")
        store.db.commit()
        meta = {"wall_seconds": 1.0, "device": "cpu", "versions": {}, "machine": "m"}
        store.add_chunk("c", 0, [SampleRow(7, 1, 1, 2, 0.5, 3)], meta, [OutputRow(7, 1.0, 2.0, 3.0)])
        assert store.outputs("c") == [OutputRow(7, 1.0, 2.0, 3.0)]
        assert store.chunk_records("c")[0]["n"] == 1 and set(store.chunk_records("c")[0]) == set(COLUMNS["chunks"])


def test_the_store_is_a_context_manager_that_closes_on_an_error(tmp_path):
    with pytest.raises(RuntimeError):
        with ResultStore(tmp_path / "r.sqlite") as store:
            raise RuntimeError("boom")
    with pytest.raises(sqlite3.ProgrammingError):
        store.db.execute("SELECT 1")


def test_a_cell_being_computed_by_a_live_run_is_not_computed_again(tmp_path):
    """Two runs on one file: the second is refused for a cell the first (alive) is running, and runs it once
    the first is gone."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        with ResultStore(tmp_path / "r.sqlite") as store:
            store.ensure_cell("c1", {"dataset": "mnist", "defense": "otad", "defense_config": {}, "attack": "square",
                                     "attack_config": {}, "eps": 2.0, "seed": 0, "subset_seed": 0, "preset": "quick"})
            store.db.execute("INSERT INTO runs (cell_id, status, pid, host, started_at) VALUES (?,?,?,?,?)",
                             ("c1", "running", other.pid, socket.gethostname(), time.time()))
            store.db.commit()
            with pytest.raises(OTBenchError, match=f"otad under square at eps 2 is being computed by another otbench "
                                                   f"run \\(pid {other.pid}"):
                store.start_run("c1", "otbench run", [1, 2], "m", {})
            assert [r["pid"] for r in store.runs("c1")] == [other.pid]  # the refused claim wrote nothing
            other.kill()
            other.wait()
            store.start_run("c1", "otbench run", [1, 2], "m", {})
            assert len(store.runs("c1")) == 2
    finally:
        other.kill()


# -- read-only commands and empty options -----------------------------------------------------------------------
def test_read_only_commands_create_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OTBENCH_RESULTS", raising=False)
    assert main(["list", "tables"]) == 0
    refused(capsys, ["report", "--tables", "otad-table-3", "--results", "typo.sqlite", "--out", str(tmp_path / "o")],
            "results database typo.sqlite does not exist")
    refused(capsys, ["report", "--tables", "otad-table-3", "--out", str(tmp_path / "o")],
            "otbench-results.sqlite does not exist")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv,message", [
    (["report", "--tables", ""], "--tables is empty"),
    (["report", "--tables", "otad-table-3", "--out", ""], "--out is empty"),
    (["report", "--tables", "otad-table-3", "--out", "/dev/null"], "--out /dev/null is a character device"),
    (["report", "--tables", "otad-table-3", "--out", "{file}"], "is a file, not a folder"),
    ([*RUN, "--config", ""], "--config is empty"),
    ([*RUN, "--results", ""], "--results is empty"),
    ([*RUN, "--dry-run", "--results", ""], "--results is empty"),
    (["train", "--defense", "standard", "--set", "attack.x=5"], "train uses no attack settings (got x)"),
    ([*RUN[:6], "1e30", "--dry-run"], "eps 1e+30 for attack 'square' is at least the L2 diameter 28"),
    ([*RUN[:4], "pgd", "--eps", "1", "--set", "attack.norm=Linf", "--dry-run"], "at least the width 1"),
])
def test_empty_options_unused_settings_and_vacuous_budgets_are_refused(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("x")
    results = v1(tmp_path, "r.sqlite")
    argv = [a.format(file=tmp_path / "file") for a in argv]
    if argv[0] == "report" and "--out" in argv:
        argv += ["--results", str(results)]
    refused(capsys, argv, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "r.sqlite"]


def test_a_vacuous_budget_runs_only_when_asked(capsys):
    assert main([*RUN[:6], "1e30", "--dry-run", "--allow-vacuous-eps"]) == 0
    assert main([*RUN[:6], "27.9", "--dry-run"]) == 0  # just inside the L2 diameter of [0, 1]^784


# -- text inputs ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind,message", [
    ("binary", "is not text (not UTF-8"),
    ("latin1", "is not text (not UTF-8: byte 13 is e9)"),
    ("dir", "is a directory, not a file"),
    ("fifo", "is a FIFO (named pipe), not a file"),
    ("devnull", "is a character device, not a file"),
    ("seeds", "'seeds' lists 0 more than once"),
])
def test_sweep_files_are_read_with_clear_errors(tmp_path, capsys, kind, message):
    path = tmp_path / "sweep.toml"
    if kind == "binary":
        path.write_bytes(bytes(range(256)) * 4)
    elif kind == "latin1":
        path.write_bytes('defenses = ["\xe9"]\nattacks = ["square"]\n'.encode("latin-1"))
    elif kind == "dir":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "devnull":
        path.symlink_to("/dev/null")
    else:
        path.write_text('defenses = ["standard"]\nattacks = ["square"]\neps = [2]\nn = 4\nseeds = [0, 0]\n')
    refused(capsys, ["sweep", str(path), "--dry-run"], message)


# -- data roots and dataset files -------------------------------------------------------------------------------
@pytest.fixture
def offline_downloads(monkeypatch):
    """torchvision's download fails as it does without a network (an OSError), without touching the network."""
    from torchvision.datasets import mnist

    def no_network(*args, **kwargs):
        raise OSError("no network in tests")

    monkeypatch.setattr(mnist, "download_and_extract_archive", no_network)
    monkeypatch.delenv("OTBENCH_OFFLINE", raising=False)
    _LOADED.clear()
    yield
    _LOADED.clear()


@pytest.mark.parametrize("given", ["empty", "raw"])
def test_nothing_is_created_inside_a_data_root(tmp_path, offline_downloads, given):
    root = tmp_path / "data"
    root.mkdir()
    if given == "raw":  # the raw folder itself given as the root
        root = root / "MNIST" / "raw"
        root.mkdir(parents=True)
        for f in (DATA / "MNIST" / "raw").glob("*.gz"):
            (root / f.name).symlink_to(f)
    before = sorted(str(p) for p in root.rglob("*"))
    with pytest.raises(OTBenchError, match="could not be downloaded"):
        from otbench.data import load_dataset
        load_dataset("mnist", root)
    assert sorted(str(p) for p in root.rglob("*")) == before


def _mnist_root(tmp_path: Path, links: dict[str, str]) -> Path:
    """An MNIST root of links to the real unpacked files; `links` maps a file name to the file it points at."""
    raw = tmp_path / "root" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        target = links.get(name, name)
        if isinstance(target, bytes):
            (raw / name).write_bytes(target)
        else:
            (raw / name).symlink_to(DATA / "MNIST" / "raw" / target)
    return tmp_path / "root"


@needs_mnist
@pytest.mark.parametrize("case,message", [
    ("swapped", "holds 10000 images, the train file holds 60000: it looks like the t10k file; are the train and "
                "test files swapped?"),
    ("header", "t10k-labels-idx1-ubyte is not an idx labels file (header 00000803, expected 00000801)"),
    ("changed", "t10k-labels-idx1-ubyte has an MD5 that is not the published file's"),
    ("short", "t10k-labels-idx1-ubyte is 9008 bytes, 10008 expected for 10000 labels"),
])
def test_mnist_files_are_checked_before_use(tmp_path, offline_downloads, case, message):
    from otbench.data import load_dataset

    labels = (DATA / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").read_bytes()
    links = {
        "swapped": {"train-images-idx3-ubyte": "t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte":
                    "train-images-idx3-ubyte", "train-labels-idx1-ubyte": "t10k-labels-idx1-ubyte",
                    "t10k-labels-idx1-ubyte": "train-labels-idx1-ubyte"},
        "header": {"t10k-labels-idx1-ubyte": bytes.fromhex("00000803") + labels[4:]},
        "changed": {"t10k-labels-idx1-ubyte": labels[:8] + bytes([(labels[8] + 1) % 10]) + labels[9:]},
        "short": {"t10k-labels-idx1-ubyte": labels[:-1000]},
    }[case]
    with pytest.raises(OTBenchError) as err:
        load_dataset("mnist", _mnist_root(tmp_path, links))
    assert message in str(err.value) and "\n" not in str(err.value)


@needs_mnist
def test_the_shared_mnist_files_are_the_published_ones():
    """The checksums otbench checks are those of the files in $OTBENCH_DATA (torchvision's, for the archives)."""
    from torchvision import datasets

    from otbench.data.vision import UNPACKED_MD5, _md5

    for cls, folder in ((datasets.MNIST, "MNIST"), (datasets.FashionMNIST, "FashionMNIST")):
        for name, md5 in cls.resources:
            assert _md5(DATA / folder / "raw" / name) == md5
        for name, md5 in UNPACKED_MD5[folder].items():
            if (DATA / folder / "raw" / name).exists():
                assert _md5(DATA / folder / "raw" / name) == md5


HOT = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1])
db.execute("PRAGMA cache_size = 5")  # the changed pages spill into the file: its journal is hot after a kill
db.execute("BEGIN")
db.execute(f"UPDATE {sys.argv[2]} SET {sys.argv[3]} = {sys.argv[3]} || 'changed'")
print("inside", flush=True)
time.sleep(120)
"""


def hot_journal(path: Path, table: str, column: str) -> None:
    """Leave `path` as a process killed inside a write leaves it: changed pages in the file, a hot journal beside."""
    proc = subprocess.Popen([sys.executable, "-c", HOT, str(path), table, column], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "inside"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert path.with_name(path.name + "-journal").exists()


def test_a_file_left_with_a_hot_journal_is_judged_without_being_rolled_back(tmp_path):
    """A foreign file killed mid-write is refused as not otbench's (not as corrupt), it and its journal untouched;
    otbench's own is opened (SQLite rolls it back) with every row."""
    path = tmp_path / "other.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE songs (title TEXT)")
    db.executemany("INSERT INTO songs VALUES (?)", [("x" * 400,) for _ in range(3000)])
    db.commit()
    db.close()
    hot_journal(path, "songs", "title")
    journal = path.with_name(path.name + "-journal")
    before = (sha(path), sha(journal))
    with pytest.raises(OTBenchError, match="not otbench's \\(tables songs\\)"):
        ResultStore(path)
    assert (sha(path), sha(journal)) == before
    ours = tmp_path / "ours.sqlite"
    with ResultStore(ours) as store:
        store.add_chunk("c", 0, [SampleRow(i, 1, 1, 1, 0.5, None) for i in range(3000)],
                        {"wall_seconds": 1.0, "device": "cpu", "versions": {}, "machine": "m"})
    hot_journal(ours, "samples", "cell_id")
    with ResultStore(ours) as store:
        assert store.count_rows("c") == 3000


@pytest.mark.parametrize("kind,message", [("devnull", "/dev/null is a character device, not a folder"),
                                          ("fifo", "is a FIFO (named pipe), not a folder"),
                                          ("file", "is a file, not a folder")])
def test_a_cache_that_is_not_a_folder_is_refused_by_what_it_is(tmp_path, capsys, monkeypatch, kind, message):
    cache = tmp_path / "cache"
    if kind == "devnull":
        cache = Path("/dev/null")
    elif kind == "fifo":
        os.mkfifo(cache)
    else:
        cache.write_text("mine")
    monkeypatch.setenv("OTBENCH_CACHE", str(cache))
    refused(capsys, [*RUN, "--dry-run"], message)
    if kind == "file":
        assert cache.read_text() == "mine"


def test_the_named_columns_are_the_tables_columns(tmp_path):
    """COLUMNS (what every statement names) and the schema that creates the tables agree, column for column."""
    with ResultStore(tmp_path / "r.sqlite") as store:
        for table, columns in COLUMNS.items():
            assert tuple(r[1] for r in store.db.execute(f"PRAGMA table_info({table})")) == columns, table


def test_reading_a_current_database_made_before_the_stamp_leaves_it_as_it_is(tmp_path):
    """`report` without --fill only reads: a v3 file from before the application id is not stamped by it."""
    path = tmp_path / "v3.sqlite"
    ResultStore(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA application_id = 0")
    db.commit()
    db.close()
    before = sha(path)
    with ResultStore(path, read_only=True) as store:
        assert store.cells() == []
    assert sha(path) == before
