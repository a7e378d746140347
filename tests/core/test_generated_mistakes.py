"""Generated inputs (Hypothesis), not only the enumerated mistakes of test_user_mistakes.py: the CLI's argument
grammar (--eps, --set, --n, names), the sweep TOML schema and the results/merge file paths. Every generated input
either runs (--dry-run: nothing heavy) or is refused with exit 2 and one line; never a traceback, a hang, or a write
to a file otbench does not own. In-process (main()), so the CI profile's 50 examples per test take seconds;
HYPOTHESIS_PROFILE=long runs 2000 (tests/conftest.py)."""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import signal
import sqlite3
from pathlib import Path

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from otbench.cli import main
from otbench.registry import ATTACKS, DATASETS, DEFENSES
from otbench.store import COLUMNS, ResultStore

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)  # no lone surrogates: not encodable
NUMBER = st.one_of(st.integers(-10, 10**6).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
                   st.sampled_from(["1e30", "1e-300", "-0", "0x10", "1_000", " 2", "2,", ",", "nan", "2,3,-inf"]))


def outcome(capsys, argv: list[str]) -> tuple[int, str]:
    """main(argv)'s exit code and stderr; anything but exit 0 or 2 with one line fails the test."""
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's usage errors (our parser prints one line)
        rc = exc.code
    err = capsys.readouterr().err.strip()
    assert rc in (0, 2), (argv, rc, err)
    event(f"exit {rc}")  # --hypothesis-show-statistics: how many generated inputs ran, how many were refused
    if rc == 2:
        assert len(err.splitlines()) == 1 and err.startswith("otbench"), (argv, err)
    return rc, err


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A cwd whose contents are checked after each example (a dry run or a refusal creates nothing), and an alarm
    that turns a hang (a FIFO opened) into a failure."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OTBENCH_RESULTS", raising=False)

    def hung(signum, frame):
        raise TimeoutError("otbench blocked")
    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(300)
    yield tmp_path
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def names(registry) -> st.SearchStrategy[str]:
    real = registry.names()
    return st.one_of(st.sampled_from(real), st.lists(st.sampled_from(real), min_size=2, max_size=3).map(",".join),
                     TEXT, st.sampled_from(["", ",", " otad ", "OTAD", real[0] + ",", "otad,,square"]))


SECTIONS = st.sampled_from(["defense", "train", "attack", "attack.square", "attack.pgd", "model", "", "defense.K"])
SETTINGS = st.one_of(st.sampled_from(["K", "epochs", "lr", "norm", "n_queries", "steps", "p_init", "schedule", "x"]),
                     TEXT)
VALUES = st.one_of(NUMBER, TEXT, st.sampled_from(["true", "[1,2]", "{\"a\": 1}", "null", "L2", "Linf", "\"5\""]))
SET = st.one_of(st.builds(lambda s, k, v: f"{s}.{k}={v}", SECTIONS, SETTINGS, VALUES), TEXT)


def mostly(valid: st.SearchStrategy, anything: st.SearchStrategy) -> st.SearchStrategy:
    """Three draws in four from `valid`: most generated commands get past the first check to the later ones."""
    return st.one_of(valid, valid, valid, anything)


@given(defense=mostly(st.sampled_from(["standard", "otad", "knn"]), names(DEFENSES)),
       attack=mostly(st.sampled_from(["square", "bpda-pgd", "gaussian-noise", "none"]), names(ATTACKS)),
       eps=st.none() | mostly(st.floats(0, 40).map(repr), NUMBER),
       n=st.none() | st.integers(1, 10_000).map(str) | st.integers(1, 10_000).map(str) | NUMBER,
       sets=st.lists(mostly(st.sampled_from(["train.epochs=1", "attack.n_queries=50", "attack.square.norm=Linf",
                                             "defense.K=3", "attack.p_init=0.5"]), SET), max_size=2),
       dataset=st.none() | st.none() | names(DATASETS),
       preset=st.none() | st.sampled_from(["quick", "paper", "paper-v1", "fast", ""]))
def test_generated_run_commands_run_or_are_one_line(capsys, workdir, defense, attack, eps, n, sets, dataset, preset):
    argv = ["run", "--defense", defense, "--attack", attack, "--dry-run"]
    for flag, value in (("--eps", eps), ("--n", n), ("--dataset", dataset), ("--preset", preset)):
        if value is not None:
            argv.append(f"{flag}={value}")  # `=`: a value that starts with '-' is the value, not an option
    argv += [f"--set={s}" for s in sets]
    outcome(capsys, argv)
    assert list(workdir.iterdir()) == []


# -- sweep files --------------------------------------------------------------------------------------------------
def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {toml_value(x)}" for k, x in v.items()) + "}"


def toml(doc: dict) -> str:
    return "".join(f"{json.dumps(k, ensure_ascii=False)} = {toml_value(v)}\n" for k, v in doc.items())


SCALAR = st.one_of(st.booleans(), st.integers(-2**63, 2**63 - 1), st.floats(), TEXT)
VALUE = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                     max_leaves=6)
VALID = {  # what each key may hold (test_sweep.py checks their meaning); drawn three times in four
    "defenses": st.lists(st.sampled_from(["standard", "otad", "knn"]), min_size=1, max_size=2, unique=True),
    "attacks": st.lists(st.sampled_from(["square", "bpda-pgd", "none"]), min_size=1, max_size=2, unique=True),
    "eps": st.lists(st.floats(0, 40) | st.integers(0, 40), min_size=1, max_size=3)
    | st.dictionaries(st.sampled_from(["square", "bpda-pgd"]), st.lists(st.floats(0, 40), min_size=1, max_size=2)),
    "n": st.integers(1, 10_000), "seeds": st.lists(st.integers(0, 5), min_size=1, max_size=3),
    "chunk": st.integers(1, 200), "presets": st.lists(st.sampled_from(["quick", "paper"]), min_size=1, unique=True),
    "dataset": st.sampled_from(["mnist", "fashion-mnist"]), "checks": st.booleans(),
    "device": st.sampled_from(["auto", "cpu"]), "subset_seed": st.integers(0, 5),
    "attack": st.dictionaries(st.sampled_from(["n_queries", "norm", "p_init"]),
                              st.integers(1, 500) | st.sampled_from(["L2", "Linf"]) | st.floats(0, 1), max_size=2),
    "train": st.dictionaries(st.sampled_from(["epochs", "lr"]), st.integers(1, 3) | st.floats(0, 1), max_size=2),
    "defense": st.dictionaries(st.sampled_from(["K", "x"]), st.integers(1, 9), max_size=1),
}
STRATEGIES = {**{k: mostly(v, VALUE) for k, v in VALID.items()}, "stray": VALUE}
BASE = {"defenses": ["standard"], "attacks": ["square"], "eps": [2.0], "n": 4}  # a valid sweep, then changed
SWEEP = st.builds(lambda changed, dropped: {k: v for k, v in {**BASE, **changed}.items() if k not in dropped},
                  st.lists(st.sampled_from(sorted(STRATEGIES)), max_size=3, unique=True).flatmap(
                      lambda keys: st.fixed_dictionaries({k: STRATEGIES[k] for k in keys})),
                  st.sets(st.sampled_from(["defenses", "attacks"]), max_size=1))


@given(doc=SWEEP)
def test_generated_sweep_files_run_or_are_one_line(capsys, workdir, doc):
    path = workdir / "sweep.toml"
    path.write_text(toml(doc), encoding="utf-8")
    outcome(capsys, ["sweep", str(path), "--dry-run"])
    assert [p.name for p in workdir.iterdir()] == ["sweep.toml"]


@given(content=st.binary(max_size=200) | TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_generated_sweep_bytes_are_one_line(capsys, workdir, content):
    path = workdir / "sweep.toml"
    path.write_bytes(content)
    outcome(capsys, ["sweep", str(path), "--dry-run"])
    assert [p.name for p in workdir.iterdir()] == ["sweep.toml"]


# -- results and merge files --------------------------------------------------------------------------------------
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "results-v1.sqlite"
KINDS = ["missing", "missing-folder", "dir", "text", "binary", "empty", "foreign", "foreign-appid", "v1", "otbench",
         "truncated", "fifo", "devnull", "broken-link"]
FOREIGN_TABLES = st.lists(st.sampled_from(["cells", "samples", "runs", "songs", "chunks"]), min_size=1, max_size=3,
                          unique=True)
_counter = itertools.count()


def make(folder: Path, kind: str, tables: list[str]) -> Path:
    """A file of `kind` under `folder`; returns its path."""
    path = folder / f"{kind}.sqlite"
    if kind == "missing-folder":
        return folder / "no-such-folder" / "r.sqlite"
    if kind == "dir":
        path.mkdir()
    elif kind == "text":
        path.write_text("not results\n")
    elif kind == "binary":
        path.write_bytes(bytes(range(256)))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind in ("foreign", "foreign-appid"):
        db = sqlite3.connect(path)
        for t in tables:  # otbench's table names, but another program's columns
            db.execute(f"CREATE TABLE {t} (colour TEXT, {', '.join(COLUMNS.get(t, ('x',)))})")
            db.execute(f"INSERT INTO {t} (colour) VALUES ('red')")
        if kind == "foreign-appid":
            db.execute("PRAGMA application_id = 7")
        db.commit()
        db.close()
    elif kind == "v1":
        path.write_bytes(FIXTURE.read_bytes())
    elif kind == "otbench":
        ResultStore(path).close()
    elif kind == "truncated":
        path.write_bytes(FIXTURE.read_bytes()[:3000])
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "devnull":
        path.symlink_to("/dev/null")
    elif kind == "broken-link":
        path.symlink_to(folder / "gone")
    return path


def snapshot(folder: Path) -> dict[str, str]:
    """Every regular file under `folder` and its checksum (special files by name only)."""
    out = {}
    for p in folder.rglob("*"):
        if p.is_file() and not p.is_symlink():
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[str(p)] = "special"
    return out


@given(sources=st.lists(st.sampled_from(KINDS), min_size=1, max_size=2), target=st.sampled_from(KINDS),
       tables=FOREIGN_TABLES)
def test_generated_merge_files_are_merged_or_refused_untouched(capsys, workdir, sources, target, tables):
    folder = workdir / f"case{next(_counter)}"
    folder.mkdir()
    made = {kind: make(folder, kind, tables) for kind in {*sources, target}}
    before = snapshot(folder)
    rc, err = outcome(capsys, ["merge", *(str(made[s]) for s in sources), "--results", str(made[target])])
    after = snapshot(folder)
    owned = {str(made[k]) for k in ("v1", "otbench", "empty", "missing") if k in made} if rc == 0 else set()
    changed = {p for p in before if before[p] != after.get(p)}
    assert changed <= {str(made[target])} & owned, (sources, target, err, changed)  # only the target, only if ours
    new = set(after) - set(before)
    assert new <= ({str(made[target])} if rc == 0 else set()), (sources, target, err, new)
    if rc == 0:
        assert target in ("v1", "otbench", "empty", "missing") and set(sources) <= {"v1", "otbench"}
