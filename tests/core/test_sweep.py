"""`otbench sweep FILE.toml`: a declared grid, every plan validated before anything runs, one progress bar,
and the same cells as `otbench run`; bad files are one-line errors naming the valid choices."""
from __future__ import annotations

import json
import re

import pytest
from support import DATA, TINY_TRAIN

from otbench.cli import main

TRAIN = "[train]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in TINY_TRAIN.items())
GOOD = f"""
defenses = ["standard"]
attacks = ["square", "none"]
eps = {{ square = [1.0, 1.5] }}
presets = ["quick"]
n = 4
seeds = [0, 1]
chunk = 2
checks = false

[attack.square]
n_queries = 10

{TRAIN}"""


def sweep_file(tmp_path, text):
    path = tmp_path / "grid.toml"
    path.write_text(text)
    return path


def sweep(capsys, tmp_path, text, *extra):
    rc = main(["sweep", str(sweep_file(tmp_path, text)), "--results", str(tmp_path / "r.sqlite"),
               "--data-root", str(DATA), *extra])
    out = capsys.readouterr()
    return rc, out


@pytest.mark.parametrize("text,message", [
    ('attacks = ["square"]', "missing key 'defenses' (a list of defense names); required: defenses, attacks"),
    ('defenses = ["otad"]', "missing key 'attacks'"),
    ('defences = ["otad"]\nattacks = ["square"]', "unknown key 'defences'. Did you mean 'defenses'? Valid keys: defenses"),
    ('defenses = "otad"\nattacks = ["square"]', "'defenses' must be a list of defense names, got 'otad'"),
    ('defenses = ["otad"]\nattacks = ["square"]\nn = "ten"', "'n' must be an integer, got 'ten'"),
    ('defenses = ["otad"]\nattacks = ["square"]\nseeds = [0, "one"]', "'seeds' must be a list of integers"),
    ('defenses = ["otad"]\nattacks = ["square"]\neps = ["two"]', "'eps' must be a list of numbers, or a table"),
    ('defenses = ["otad"]\nattacks = ["square"]\nchecks = "yes"', "'checks' must be true or false"),
    ('defenses = ["otda"]\nattacks = ["square"]', "unknown defense 'otda'. Did you mean 'otad'?"),
    ('defenses = ["otad"]\nattacks = ["sqare"]', "unknown attack 'sqare'. Did you mean 'square'?"),
    ('defenses = ["otad"]\nattacks = ["square"]\npresets = ["huge"]', "unknown preset 'huge' for defense 'otad'; valid: paper, paper-v1, quick"),
    ('defenses = ["otad"]\nattacks = ["pgd"]', "not differentiable. Use 'bpda-pgd'"),
    ('defenses = ["otad"]\nattacks = ["square"]\neps = { pgd = [1.0] }', "eps given for attack 'pgd', which the sweep does not run"),
    ('defenses = ["otad"]\nattacks = ["square"]\n[attack]\nstepz = 3', "unknown attack setting 'stepz'"),
    ('defenses = ["otad"]\nattacks = ["square"]\n[defense]\nKK = 3', "unknown otad defense setting 'KK'; valid:"),
    ('defenses = ["otad"]\nattacks = ["square"]\ndataset = "cifar"', "unknown dataset 'cifar'"),
    ('defenses = ["otad"\nattacks = ["square"]', "is not valid TOML"),
])
def test_a_bad_sweep_file_is_a_one_line_error(capsys, tmp_path, text, message):
    rc, out = sweep(capsys, tmp_path, text)
    assert rc == 2 and message in out.err and "Traceback" not in out.err
    assert len(out.err.strip().splitlines()) == 1 and "grid.toml" in out.err  # the error names the file
    assert not (tmp_path / "r.sqlite").exists()


def test_a_missing_file_and_a_bad_executor_are_one_line_errors(capsys, tmp_path):
    assert main(["sweep", str(tmp_path / "none.toml")]) == 2
    assert "sweep file" in capsys.readouterr().err
    rc, out = sweep(capsys, tmp_path, GOOD, "--executor", "dask")
    assert rc == 2 and out.err.strip() == "otbench: error: unknown executor 'dask'; valid: local, ray"


def test_every_plan_is_validated_before_anything_runs(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("OTBENCH_CACHE", str(tmp_path / "cache"))
    rc, out = sweep(capsys, tmp_path, GOOD.replace("seeds = [0, 1]", "seeds = [0, -1]"))
    assert rc == 2 and "--seed must be an integer >= 0, got -1" in out.err
    assert not (tmp_path / "r.sqlite").exists() and not (tmp_path / "cache" / "models").exists()


def test_dry_run_prints_every_plan(capsys, tmp_path):
    rc, out = sweep(capsys, tmp_path, GOOD, "--dry-run")
    assert rc == 0 and out.out.count("defense standard [preset quick]") == 2
    assert "attack seed 0" in out.out and "attack seed 1" in out.out and "square at eps 1, 1.5" in out.out
    assert "executor local" in out.out and not (tmp_path / "r.sqlite").exists()


def test_a_sweep_runs_its_grid_with_one_bar_and_stores_the_cells_of_otbench_run(capsys, tmp_path):
    rc, out = sweep(capsys, tmp_path, GOOD, "--json")
    assert rc == 0
    cells = json.loads(out.out)["cells"]
    assert sorted((c["attack"], c["eps"]) for c in cells) == [("none", 0.0)] * 2 + [("square", 1.0), ("square", 1.0),
                                                                                     ("square", 1.5), ("square", 1.5)]
    assert all(c["n"] == 4 and c["computed"] == 4 for c in cells)
    bars = re.findall(r"(\d+) cells:.*?(\d+)/(\d+) \[", out.err)
    assert bars and {(c, total) for c, _, total in bars} == {("6", "12")}  # one bar: 6 cells, 12 chunks

    rc, again = sweep(capsys, tmp_path, GOOD, "--json", "--quiet")  # resumed: all from the store
    assert rc == 0 and [c["computed"] for c in json.loads(again.out)["cells"]] == [0] * 6

    sets = [a for k, v in TINY_TRAIN.items() for a in ("--set", f"train.{k}={json.dumps(v)}")]
    assert main(["run", "--defense", "standard", "--attack", "square", "--eps", "1,1.5", "--n", "4", "--chunk", "2",
                 "--seed", "1", "--set", "attack.n_queries=10", "--no-checks", "--results", str(tmp_path / "r.sqlite"),
                 "--data-root", str(DATA), "--json", "--quiet", *sets]) == 0
    ran = json.loads(capsys.readouterr().out)["cells"]
    assert [c["computed"] for c in ran] == [0, 0]  # the sweep's cells are otbench run's
