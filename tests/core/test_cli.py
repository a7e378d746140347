"""The CLI end to end on a small real-MNIST subset, and its handling of user mistakes."""
from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
from support import DATA, TINY_TRAIN

from otbench.cli import main
from otbench.registry import TABLES
from otbench.report.spec import Column, Row, TableSpec


def run_json(capsys, argv):
    assert main(argv + ["--json"] + ([] if argv[0] == "list" else ["--quiet"])) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture()
def tiny_table():
    rows = (Row("OTAD", "otad", "OTAD", {"train": dict(TINY_TRAIN)}),
            Row("no defense", "standard", None, {"train": dict(TINY_TRAIN)}))
    spec = TableSpec("tiny-table-3", "tiny Table III", "otad", "III", "mnist", rows,
                     (Column("Standard Acc", "square", 2.0, "clean", "clean", {"n_queries": 30}),
                      Column("Robust Acc eps=2", "square", 2.0, "robust", "eps=2", {"n_queries": 30})),
                     figure=True)
    with TABLES.temporary(spec.name, lambda: spec):
        yield spec


def cli(*args):
    return subprocess.run([sys.executable, "-m", "otbench", *args], capture_output=True, text=True, timeout=300)


def test_list_shows_every_kind_with_capabilities(capsys):
    out = run_json(capsys, ["list"])
    assert out["defenses"]["otad"]["differentiable"] is False
    assert "surrogate" in out["defenses"]["otad"] and out["defenses"]["standard"]["differentiable"] is True
    assert "needs scores" in out["attacks"]["square"]["threat_model"]
    assert "mnist" in out["datasets"] and "otad-table-3" in out["tables"]


def test_run_store_resume_and_report_end_to_end(capsys, tmp_path, tiny_table):
    db = str(tmp_path / "results.sqlite")
    config = tmp_path / "tiny.toml"  # the training settings come from a config file, the attack's from --set
    config.write_text("[train]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in TINY_TRAIN.items()))
    argv = ["run", "--defense", "otad,standard", "--attack", "square", "--dataset", "mnist", "--eps", "2",
            "--n", "6", "--chunk", "3", "--results", db, "--set", "attack.n_queries=30", "--config", str(config), "--data-root", str(DATA)]
    first = run_json(capsys, argv)
    assert [c["defense"] for c in first["cells"]] == ["otad", "standard"]
    assert all(c["n"] == 6 and c["computed"] == 6 for c in first["cells"])
    assert all(c["robust_accuracy"] <= c["clean_accuracy"] for c in first["cells"])
    assert len(first["sample_ids"]) == 6

    second = run_json(capsys, argv)  # everything comes from the store
    assert [c["computed"] for c in second["cells"]] == [0, 0]
    assert [c["robust_accuracy"] for c in second["cells"]] == [c["robust_accuracy"] for c in first["cells"]]

    out_dir = tmp_path / "reports"
    written = run_json(capsys, ["report", "--tables", "tiny-table-3", "--preset", "quick", "--results", db,
                                "--out", str(out_dir)])
    assert {p.rsplit(".", 1)[1] for p in written["written"]["tiny-table-3"]} == {"csv", "md", "tex", "png"}
    md = (out_dir / "tiny-table-3.md").read_text()
    otad_clean = 100 * first["cells"][0]["clean_accuracy"]
    assert f"| OTAD | {otad_clean:.1f} / 96.3 ({otad_clean - 96.3:+.1f})" in md
    assert "n = 6" in md and "`otbench run --defense otad,standard" in md and "trained network of OTAD" in md and "test accuracy" in md

    # nothing at preset paper: without a fallback every row is 'not run'; with one, rows are taken and marked
    run_json(capsys, ["report", "--tables", "tiny-table-3", "--preset", "paper", "--results", db, "--out", str(out_dir)])
    assert "| OTAD | not run / 96.3" in (out_dir / "tiny-table-3.md").read_text()
    run_json(capsys, ["report", "--tables", "tiny-table-3", "--preset", "paper", "--fallback", "quick",
                      "--results", db, "--out", str(out_dir)])
    md = (out_dir / "tiny-table-3.md").read_text()
    assert f"| OTAD [preset quick] | {otad_clean:.1f} / 96.3" in md and "Rows marked `[preset quick]`" in md
    assert set(pd.read_csv(out_dir / "tiny-table-3.csv")["preset"]) == {"quick"}


def test_report_fill_runs_the_missing_cells(capsys, tmp_path):
    rows = (Row("KNN K=5", "knn", "KNN", {"train": dict(TINY_TRAIN), "defense": {"K": 5}}),)
    spec = TableSpec("tiny-table-12", "tiny XII", "otad", "XII", "mnist", rows,
                     (Column("Standard Acc", "none", 0.0, "clean", "K={K}"),))
    db, out_dir = str(tmp_path / "r.sqlite"), tmp_path / "rep"
    with TABLES.temporary(spec.name, lambda: spec):
        run_json(capsys, ["report", "--tables", spec.name, "--preset", "quick", "--results", db, "--out",
                          str(out_dir), "--fill", "--n", "5", "--data-root", str(DATA)])
    lines = (out_dir / "tiny-table-12.csv").read_text().splitlines()
    assert lines[1].split(",")[3] == "96.2" and lines[1].split(",")[6] == "measured"  # paper value K=5


@pytest.mark.parametrize("args,message", [
    (["run", "--defense", "otda", "--attack", "square"], "Did you mean 'otad'?"),
    (["run", "--defense", "otad", "--attack", "sqare"], "Did you mean 'square'?"),
    (["run", "--defense", "otad", "--attack", "square", "--set", "K=5"], "expected SECTION.KEY=VALUE"),
    (["run", "--defense", "otad", "--attack", "square", "--eps", "two"], "comma-separated numbers"),
    (["run", "--defense", "otad", "--attack", "square", "--dataset", "cifar"], "unknown dataset 'cifar'"),
    (["run", "--defense", "otad", "--attack", "square", "--config", "/nonexistent.toml"], "does not exist"),
    (["run", "--defense", "otad", "--attack", "square", "--chunk", "0"], "--chunk must be an integer of at least 1"),
    (["run", "--defense", "otad", "--attack", "pgd"], "not differentiable. Use 'bpda-pgd'"),
    (["run", "--defense", "otad", "--attack", "square", "--preset", "fast"], "valid: paper, paper-v1, quick"),
    (["run", "--defense", "otad", "--attack", "square", "--set", "attack.stepz=3"], "unknown attack setting 'stepz'"),
    (["run", "--defense", "otad", "--attack", "square", "--set", "attack.pgd.steps=3"], "does not use"),
    (["run", "--defense", "otad", "--attack", "square", "--set", "attack.eot_samples=5"], "unknown attack setting"),
    (["run", "--defense", "standard", "--attack", "dml-attack"], "metric"),
    (["merge", "/nonexistent.sqlite"], "does not exist"),
    (["report", "--preset", "papr"], "unknown --preset 'papr'; valid: cpu, paper, paper-v1, quick"),
    (["report", "--fallback", "qick"], "unknown --fallback 'qick'"),
])
def test_user_mistakes_are_one_line_errors(args, message, capsys):
    try:
        rc = main(args)
    except SystemExit as exc:  # argparse's own usage errors
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_user_mistake_in_a_real_process_prints_no_traceback():
    res = cli("run", "--defense", "otda", "--attack", "square")
    assert res.returncode == 2 and "Did you mean 'otad'?" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("quiet", [True, False])
def test_quiet_silences_training_bars_started_inside_defenses(capsys, tmp_path, monkeypatch, quiet):
    from otbench import training

    monkeypatch.setenv("OTBENCH_CACHE", str(tmp_path))  # an empty cache: the network must really be trained
    sets = [a for k, v in TINY_TRAIN.items() for a in ("--set", f"train.{k}={json.dumps(v)}")]
    try:
        assert main(["train", "--defense", "standard", "--data-root", str(DATA), *sets]
                    + (["--quiet"] if quiet else [])) == 0
    finally:
        training.set_quiet(False)
    assert ("train fc-resnet" in capsys.readouterr().err) is not quiet
