"""User mistakes through the real CLI (a subprocess each, as a new user meets them): every one is refused with a
non-zero exit and one line that names the problem and, where there are some, the valid choices; no traceback; no
file or model created and nothing stored. The processes run a few at a time, once per session."""
from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from support import DATA

RUN = ["run", "--defense", "otad", "--attack", "square", "--eps", "2", "--n", "5"]
SQUARE = RUN  # a valid run to which each mistake adds one thing
FILE_RUN = ["run", "--attack", "pgd", "--eps", "0.3", "--n", "5", "--set", "attack.steps=2", "--defense"]

# the defenses of one file that the mistakes name (FILE.py:NAME); Net is a valid one
GOOD_DEFENSES = """
import torch
from torch import nn

from otbench.defense import Defense

THRESHOLD = 3


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))


class FiveLogits(Net):
    def forward(self, x):
        return super().forward(x)[:, :5]


class NaNNet(Net):
    def forward(self, x):
        return super().forward(x) * float("nan")


class TupleNet(Net):
    def forward(self, x):
        return super().forward(x), x


class CifarNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, 10)

    def forward(self, x):
        return self.fc(x.reshape(len(x), 3 * 32 * 32))


class MinusOneToOne(Net):
    def forward(self, x):
        assert x.min() < 0, "expects inputs in [-1, 1]"
        return super().forward(x)


class Undecided(Net):
    differentiable = "yes"


class Opaque(Net):
    differentiable = False


class NoPresets(Defense):
    def logits(self, x):
        return x.flatten(1)[:, :10]


def not_a_module():
    return {"weights": None}


def broken_factory():
    raise ValueError("no checkpoint at ./weights.pt")
"""

# (name, argv, what the one line must say). Arguments may name the inputs the fixture makes: {dir}, {text},
# {binary}, {truncated}, {readonly}, {foreign}, {toml_bad}, {toml_int}, {toml_section}, {v1}, {defenses} (a folder of
# defense files), {sweep_raises}, {foreign_cells}, {fifo}, {devnull}, {latin1}, {toml_seeds}.
MISTAKES = [
    ("defense typo", ["run", "--defense", "otda", "--attack", "square"], "Did you mean 'otad'?"),
    ("attack typo", ["run", "--defense", "otad", "--attack", "sqare"], "Did you mean 'square'?"),
    ("dataset typo", [*RUN, "--dataset", "mnsit"], "Did you mean 'mnist'?"),
    ("eps not a number", ["run", "--defense", "otad", "--attack", "square", "--eps", "two"], "comma-separated numbers"),
    ("eps NaN", ["run", "--defense", "otad", "--attack", "square", "--eps", "nan"], "finite number"),
    ("eps inf", ["run", "--defense", "otad", "--attack", "square", "--eps", "inf"], "finite number"),
    ("eps negative", ["run", "--defense", "otad", "--attack", "square", "--eps", "-1"], "finite number >= 0"),
    ("n zero", [*RUN, "--n", "0"], "--n must be an integer of at least 1"),
    ("n beyond the test set", [*RUN, "--n", "20000"], "more than the 10000 test samples of 'mnist'; valid: 1 to 10000"),
    ("n not an integer", [*RUN, "--n", "ten"], "invalid int value"),
    ("chunk zero", [*RUN, "--chunk", "0"], "--chunk must be an integer of at least 1"),
    ("subset seed negative", [*RUN, "--subset-seed", "-1"], "--subset-seed must be an integer >= 0"),
    ("seed negative", [*RUN, "--seed", "-3"], "--seed must be an integer >= 0"),
    ("preset typo", [*RUN, "--preset", "fast"], "valid: paper, paper-v1, quick"),
    ("set without section", [*RUN, "--set", "K=5"], "expected SECTION.KEY=VALUE"),
    ("set without value", [*RUN, "--set", "defense.K"], "expected SECTION.KEY=VALUE"),
    ("set bad section", [*RUN, "--set", "model.K=5"], "SECTION one of defense, train, attack"),
    ("defense setting typo", [*RUN, "--set", "defense.Kk=5"], "unknown otad defense setting 'Kk'; valid:"),
    ("defense setting type", [*RUN, "--set", "defense.K=ten"], "'K' must be an integer"),
    ("K too small", [*RUN, "--set", "defense.K=1"], "K must be an integer of at least 2"),
    ("formulation typo", [*RUN, "--set", "defense.formulation=exact"], "valid: paper, reference-code"),
    ("potentials typo", [*RUN, "--set", "defense.potentials=most"], "unknown potentials 'most'; valid:"),
    ("l above L", [*RUN, "--set", "defense.l=3"], "OTAD needs l < L"),
    ("lr NaN", [*RUN, "--set", "train.lr=NaN"], "'lr' must be a finite number"),
    ("lr negative", [*RUN, "--set", "train.lr=-0.1"], "'lr' must be > 0"),
    ("epochs zero", [*RUN, "--set", "train.epochs=0"], "'epochs' must be an integer of at least 1"),
    ("batch size zero", [*RUN, "--set", "train.batch_size=0"], "'batch_size' must be an integer of at least 1"),
    ("train size zero", [*RUN, "--set", "train.train_size=0"], "'train_size' must be an integer of at least 1"),
    ("momentum above 1", [*RUN, "--set", "train.momentum=1.5"], "'momentum' must be in [0, 1)"),
    ("schedule typo", [*RUN, "--set", "train.schedule=linear"], "valid: cosine, one-cycle"),
    ("train setting typo", [*RUN, "--set", "train.epoch=3"], "unknown otad train setting 'epoch'"),
    ("attack setting typo", [*RUN, "--set", "attack.stepz=3"], "unknown attack setting 'stepz'"),
    ("attack not in the run", [*RUN, "--set", "attack.pgd.steps=3"], "does not use"),
    ("queries zero", [*RUN, "--set", "attack.n_queries=0"], "'n_queries' must be an integer of at least 1"),
    ("norm typo", [*RUN, "--set", "attack.square.norm=L1"], "unknown norm 'L1'; valid: L2, Linf"),
    ("eot on a score attack", [*RUN, "--set", "attack.eot_samples=5"], "unknown attack setting 'eot_samples'"),
    ("p_init above 1", [*RUN, "--set", "attack.square.p_init=2"], "'p_init' must be in (0, 1]"),
    ("schedule of square", [*RUN, "--set", "attack.square.schedule=slow"], "valid: rescaled, fixed"),
    ("gradient attack on otad", ["run", "--defense", "otad", "--attack", "pgd"], "not differentiable. Use 'bpda-pgd'"),
    ("dml attack without metric net", ["run", "--defense", "standard", "--attack", "dml-attack"], "no metric network"),
    ("exact gradient on knn", ["run", "--defense", "knn", "--attack", "otad-exact-grad"], "needs exact gradients"),
    ("regression attack on a classifier", ["run", "--defense", "otad", "--attack", "regression-l2"],
     "applies to regression defenses"),
    ("regression defense on images", ["run", "--defense", "regressor", "--attack", "regression-l2"],
     "is a regression defense and dataset 'mnist' is a classification dataset"),
    ("image attack on unbounded data", ["run", "--defense", "regressor", "--attack", "pgd", "--dataset",
                                        "winequality-red-z"], "applies to classification"),
    ("ngopt sigma zero", ["run", "--defense", "standard", "--attack", "ngopt-cw", "--eps", "0"], "sigma and must be > 0"),
    ("none at a budget", ["run", "--defense", "standard", "--attack", "none", "--eps", "2"], "its eps must be 0"),
    ("nevergrad optimizer typo", ["run", "--defense", "standard", "--attack", "ngopt-cw", "--set",
                                  "attack.optimizer=Foo"], "unknown nevergrad optimizer 'Foo'"),
    ("no attack", ["run", "--defense", "otad"], "the following arguments are required: --attack"),
    ("empty attack list", ["run", "--defense", "otad", "--attack", ""], "the run plan is empty"),
    ("config missing", [*RUN, "--config", "/nonexistent.toml"], "does not exist"),
    ("config a directory", [*RUN, "--config", "{dir}"], "is a directory, not a file"),
    ("config binary", [*RUN, "--config", "{binary}"], "is not text"),
    ("config bad TOML", [*RUN, "--config", "{toml_bad}"], "is not valid TOML"),
    ("config section a number", [*RUN, "--config", "{toml_int}"], "`defense` must be a table of settings"),
    ("config unknown section", [*RUN, "--config", "{toml_section}"], "unknown sections ['model']; valid:"),
    ("results a directory", [*RUN, "--results", "{dir}"], "is a directory; give a file"),
    ("results a text file", [*RUN, "--results", "{text}"], "is not an SQLite file"),
    ("results truncated", [*RUN, "--results", "{truncated}"], "cannot be read"),
    ("results in a read-only folder", [*RUN, "--results", "{readonly}/r.sqlite"], "is read-only"),
    ("results in a missing folder", [*RUN, "--results", "/nonexistent/r.sqlite"], "does not exist"),
    ("results not otbench's", [*RUN, "--results", "{foreign}"], "not otbench's (tables songs)"),
    ("data root missing", [*RUN, "--data-root", "/nonexistent-data"], "data root /nonexistent-data (--data-root) "
                                                                     "does not exist"),
    ("device mps", [*RUN, "--device", "mps"], "not supported by otbench; valid: auto, cpu, cuda, cuda:N"),
    ("device typo", [*RUN, "--device", "gpu"], "unknown device 'gpu'; valid: auto, cpu, cuda, cuda:N"),
    ("cache read-only", [*RUN, "--cache-env", "{readonly}"], "is not writable"),
    ("train defense typo", ["train", "--defense", "otda"], "Did you mean 'otad'?"),
    ("train preset typo", ["train", "--defense", "standard", "--preset", "big"], "valid: paper, paper-v1, quick"),
    ("train epochs zero", ["train", "--defense", "standard", "--set", "train.epochs=0"], "at least 1"),
    ("train regression mismatch", ["train", "--defense", "regressor"], "is a regression defense"),
    ("train device", ["train", "--defense", "standard", "--device", "tpu"], "unknown device 'tpu'"),
    ("report preset typo", ["report", "--preset", "papr"], "unknown --preset 'papr'; valid: cpu, paper, paper-v1, quick, reference-code"),
    ("report fallback typo", ["report", "--fallback", "paper-v1,qick"], "unknown --fallback 'qick'"),
    ("report table typo", ["report", "--tables", "otad-tabel-3"], "Did you mean 'otad-table-3'?"),
    ("report results text", ["report", "--tables", "otad-table-3", "--results", "{text}"], "is not an SQLite file"),
    ("merge source missing", ["merge", "/nonexistent.sqlite"], "does not exist"),
    ("merge source text", ["merge", "{text}"], "is not an SQLite file"),
    ("merge source not otbench's", ["merge", "{foreign}"], "not otbench's (tables songs)"),
    ("merge into a text file", ["merge", "{v1}", "--results", "{text}"], "is not an SQLite file"),
    ("list kind typo", ["list", "defence"], "invalid choice: 'defence'"),
    # a defense from one file (--defense FILE.py:NAME; otbench.user_model): the file, then the built module
    ("defense file missing", [*FILE_RUN, "/nonexistent/my_defense.py:Net"], "does not exist (--defense FILE.py:NAME)"),
    ("defense file without NAME", [*FILE_RUN, "{defenses}/good.py"], "is given as FILE.py:NAME"),
    ("defense file a folder", [*FILE_RUN, "{defenses}/folder.py:Net"], "is not a file"),
    ("defense file not text", [*FILE_RUN, "{defenses}/binary.py:Net"], "is not UTF-8 text"),
    ("defense file syntax error", [*FILE_RUN, "{defenses}/syntax.py:Net"], "line 2: not valid Python"),
    ("defense file raises on import", [*FILE_RUN, "{defenses}/raises.py:Net"],
     "failed on import: RuntimeError: no GPU here"),
    ("defense file imports a missing package", [*FILE_RUN, "{defenses}/imports.py:Net"],
     "failed on import: ModuleNotFoundError: No module named 'not_a_package_otbench'"),
    ("defense name missing", [*FILE_RUN, "{defenses}/good.py:Nett"], "has no 'Nett'; it defines: "),
    ("defense name a number", [*FILE_RUN, "{defenses}/good.py:THRESHOLD"],
     "is a int, not a Defense subclass, a torch.nn.Module"),
    ("defense factory returns a dict", [*FILE_RUN, "{defenses}/good.py:not_a_module"],
     "gave a dict, not a torch.nn.Module"),
    ("defense factory raises", [*FILE_RUN, "{defenses}/good.py:broken_factory"],
     "building the module failed: ValueError: no checkpoint"),
    ("module output shape", [*FILE_RUN, "{defenses}/good.py:FiveLogits"], "expected (16, 10): one logit per class"),
    ("module NaN logits", [*FILE_RUN, "{defenses}/good.py:NaNNet"], "returned non-finite outputs (NaN or inf)"),
    ("module returns a tuple", [*FILE_RUN, "{defenses}/good.py:TupleNet"], "returned a tuple, not a tensor"),
    ("module for another input shape", [*FILE_RUN, "{defenses}/good.py:CifarNet"],
     "failed on 16 test inputs of 'mnist' (shape (1, 28, 28), values in [0, 1]): RuntimeError"),
    ("module for another input domain", [*FILE_RUN, "{defenses}/good.py:MinusOneToOne"],
     "values in [0, 1]): AssertionError: expects inputs in [-1, 1]"),
    ("defense class declarations", [*FILE_RUN, "{defenses}/good.py:NoPresets"], "declares no presets"),
    ("module capability not a bool", [*FILE_RUN, "{defenses}/good.py:Undecided"],
     "differentiable must be True or False"),
    ("gradient attack on an opaque module", [*FILE_RUN, "{defenses}/good.py:Opaque"],
     "needs gradients, but defense 'good.py:Opaque@"),
    ("defense file on ray", [*FILE_RUN, "{defenses}/good.py:Net", "--executor", "ray"],
     "Ray workers cannot import; use --executor local"),
    ("defense file preset typo", [*FILE_RUN, "{defenses}/good.py:Net", "--preset", "papr"], "valid: quick, paper"),
    ("defense file setting", [*FILE_RUN, "{defenses}/good.py:Net", "--set", "defense.K=3"], "has no defense settings"),
    ("sweep with a broken defense file", ["sweep", "{sweep_raises}"], "failed on import: RuntimeError"),
    ("train a defense file without NAME", ["train", "--defense", "{defenses}/good.py"], "FILE.py:NAME"),
    # issue 23: files otbench does not own, special files, text inputs, read-only commands, empty options, budgets
    ("results another program's cells table", [*RUN, "--results", "{foreign_cells}"], "not otbench's (tables cells)"),
    ("results a FIFO", [*RUN, "--results", "{fifo}"], "is a FIFO (named pipe), not a file"),
    ("results a link to /dev/null", [*RUN, "--results", "{devnull}"], "is a character device, not a file"),
    ("results empty", [*RUN, "--results", ""], "--results is empty"),
    ("merge another program's cells table", ["merge", "{foreign_cells}"], "not otbench's (tables cells)"),
    ("merge into another program's cells table", ["merge", "{v1}", "--results", "{foreign_cells}"], "not otbench's"),
    ("merge into a FIFO", ["merge", "{v1}", "--results", "{fifo}"], "is a FIFO (named pipe), not a file"),
    ("merge from a FIFO", ["merge", "{fifo}"], "is a FIFO (named pipe), not a file"),
    ("sweep binary", ["sweep", "{binary}"], "is not text (not UTF-8"),
    ("sweep a Latin-1 byte", ["sweep", "{latin1}"], "is not text (not UTF-8: byte 13 is e9)"),
    ("sweep a directory", ["sweep", "{dir}"], "is a directory, not a file"),
    ("sweep a FIFO", ["sweep", "{fifo}"], "is a FIFO (named pipe), not a file"),
    ("sweep /dev/null", ["sweep", "{devnull}"], "is a character device, not a file"),
    ("sweep seeds repeated", ["sweep", "{toml_seeds}"], "'seeds' lists 0 more than once"),
    ("report results typo", ["report", "--tables", "otad-table-3", "--results", "typo.sqlite"],
     "results database typo.sqlite does not exist"),
    ("report tables empty", ["report", "--tables", ""], "--tables is empty"),
    ("report out a file", ["report", "--tables", "otad-table-3", "--results", "{v1}", "--out", "{text}"],
     "is a file, not a folder"),
    ("report out /dev/null", ["report", "--tables", "otad-table-3", "--results", "{v1}", "--out", "/dev/null"],
     "--out /dev/null is a character device, not a folder"),
    ("config empty", [*RUN, "--config", ""], "--config is empty"),
    ("train with attack settings", ["train", "--defense", "standard", "--set", "attack.x=5"],
     "train uses no attack settings"),
    ("eps beyond the L2 diameter", ["run", "--defense", "otad", "--attack", "square", "--eps", "1e30", "--n", "5"],
     "is at least the L2 diameter 28 of the input domain [0, 1]^784"),
    ("eps Linf of 2", [*RUN, "--set", "attack.square.norm=Linf"], "is at least the width 1 of the input domain"),
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    (root / "folder").mkdir()
    (root / "text.sqlite").write_text("these are not results\n")
    (root / "binary.toml").write_bytes(bytes(range(256)) * 4)
    (root / "bad.toml").write_text("[train\nepochs = 3\n")
    (root / "int.toml").write_text("defense = 5\n")
    (root / "section.toml").write_text("[model]\nK = 5\n")
    db = sqlite3.connect(root / "whole.sqlite")
    db.execute("CREATE TABLE cells (cell_id TEXT)")
    db.executemany("INSERT INTO cells VALUES (?)", [(str(i) * 200,) for i in range(200)])
    db.commit()
    db.close()
    data = (root / "whole.sqlite").read_bytes()
    (root / "truncated.sqlite").write_bytes(data[:len(data) // 2 + 100])  # an SQLite header, half the pages
    (root / "whole.sqlite").unlink()
    foreign = sqlite3.connect(root / "foreign.sqlite")
    foreign.execute("CREATE TABLE songs (title TEXT)")
    foreign.commit()
    foreign.close()
    shutil.copyfile(Path(__file__).resolve().parents[1] / "fixtures" / "results-v1.sqlite", root / "v1.sqlite")
    defenses = root / "defenses"
    defenses.mkdir()
    (defenses / "good.py").write_text(GOOD_DEFENSES)
    (defenses / "folder.py").mkdir()
    (defenses / "binary.py").write_bytes(bytes(range(128, 256)) * 4)
    (defenses / "syntax.py").write_text("import torch\nclass Net(nn.Module)\n    pass\n")
    (defenses / "raises.py").write_text("raise RuntimeError('no GPU here')\n")
    (defenses / "imports.py").write_text("import not_a_package_otbench\n")
    (root / "sweep-raises.toml").write_text(f'dataset = "mnist"\ndefenses = ["{defenses}/raises.py:Net"]\n'
                                            'attacks = ["pgd"]\neps = [1.0]\nn = 5\n')
    foreign_cells = sqlite3.connect(root / "foreign-cells.sqlite")  # another program's, with a table named `cells`
    foreign_cells.execute("CREATE TABLE cells (id INTEGER PRIMARY KEY, colour TEXT)")
    foreign_cells.executemany("INSERT INTO cells (colour) VALUES (?)", [("red",), ("blue",)])
    foreign_cells.commit()
    foreign_cells.close()
    os.mkfifo(root / "fifo")
    (root / "devnull").symlink_to("/dev/null")
    (root / "latin1.toml").write_bytes('defenses = ["\xe9"]\nattacks = ["square"]\n'.encode("latin-1"))
    (root / "seeds.toml").write_text('defenses = ["otad"]\nattacks = ["square"]\neps = [2]\nn = 5\nseeds = [0, 0]\n')
    readonly = root / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    return {"dir": str(root / "folder"), "text": str(root / "text.sqlite"), "binary": str(root / "binary.toml"),
            "toml_bad": str(root / "bad.toml"), "toml_int": str(root / "int.toml"),
            "toml_section": str(root / "section.toml"), "truncated": str(root / "truncated.sqlite"),
            "foreign": str(root / "foreign.sqlite"), "readonly": str(readonly), "v1": str(root / "v1.sqlite"),
            "defenses": str(defenses), "sweep_raises": str(root / "sweep-raises.toml"),
            "foreign_cells": str(root / "foreign-cells.sqlite"), "fifo": str(root / "fifo"),
            "devnull": str(root / "devnull"), "latin1": str(root / "latin1.toml"),
            "toml_seeds": str(root / "seeds.toml")}


def files_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


def checksum(path: Path) -> str:
    """A regular file's content (is_file() is False for a FIFO or a device, which are never read)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_mistake(argv: list[str], inputs: dict[str, str], work: Path) -> dict:
    work.mkdir()
    cache = work / "cache"
    env = {k: v for k, v in os.environ.items() if k not in ("OTBENCH_RESULTS", "OTBENCH_CACHE")}
    env.update(OTBENCH_DATA=str(DATA), OTBENCH_CACHE=str(cache))
    args = [a.format(**inputs) for a in argv]
    if "--cache-env" in args:  # not a flag: the mistake is the environment's
        i = args.index("--cache-env")
        env["OTBENCH_CACHE"] = args[i + 1]
        args = args[:i] + args[i + 2:]
    before = {name: files_under(Path(path)) for name, path in inputs.items() if Path(path).is_dir()}
    sums = {name: checksum(Path(path)) for name, path in inputs.items() if Path(path).is_file()}
    out = subprocess.run([sys.executable, "-m", "otbench", *args], capture_output=True, text=True, env=env,
                         cwd=work, timeout=600)
    return {"rc": out.returncode, "stderr": out.stderr, "stdout": out.stdout, "created": files_under(work),
            "inputs_changed": [n for n, p in inputs.items() if (Path(p).is_dir() and files_under(Path(p)) != before[n])
                               or (Path(p).is_file() and checksum(Path(p)) != sums[n])]}


@pytest.fixture(scope="module")
def outcomes(inputs, tmp_path_factory):
    """Every mistake, four processes at a time (they spend most of their time importing)."""
    root = tmp_path_factory.mktemp("work")
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(run_mistake, argv, inputs, root / f"m{i}")
                   for i, (name, argv, _) in enumerate(MISTAKES)}
    return {name: f.result() for name, f in futures.items()}


def test_there_are_at_least_sixty_distinct_mistakes():
    assert len({name for name, _, _ in MISTAKES}) == len(MISTAKES) >= 60
    assert len({tuple(argv) for _, argv, _ in MISTAKES}) == len(MISTAKES)


@pytest.mark.slow
@pytest.mark.parametrize("name,argv,message", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_a_mistake_is_one_clean_line_and_leaves_nothing(outcomes, name, argv, message):
    out = outcomes[name]
    lines = out["stderr"].strip().splitlines()
    assert out["rc"] == 2, (out["rc"], out["stderr"][-2000:])
    assert "Traceback" not in out["stderr"] and len(lines) == 1, out["stderr"][-2000:]
    assert message in lines[0], lines[0]
    assert out["created"] == set(), f"files were created: {sorted(out['created'])}"  # no results, no cache, no model
    assert out["inputs_changed"] == [], f"inputs were written to: {out['inputs_changed']}"
