"""otbench.evaluate and `--defense FILE.py:NAME` on real MNIST: a plain nn.Module defined here, evaluated through the
Python API and, written to a file, through the CLI; both store the same rows, the cells carry the model's identity
(its fingerprint, the file's hash), and editing the file or the weights makes new cells."""
from __future__ import annotations

import json
import sqlite3

import pytest
import torch
from torch import nn

import otbench
from otbench.cli import main
from otbench.errors import OTBenchError
from otbench.user_model import module_fingerprint

ATTACKS = ["pgd", "fab"]
EPS = [1.5]
SETTINGS = {"attack": {"pgd.steps": 10, "fab.steps": 20}}
CLI_SETTINGS = ["--set", "attack.pgd.steps=10", "--set", "attack.fab.steps=20", "--set", "attack.norm=L2"]
N = 20

FILE = '''
import torch
from torch import nn

WEIGHTS = {weights!r}


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        return self.body(x)


def trained():
    net = SmallNet()
    net.load_state_dict(torch.load(WEIGHTS))
    return net
'''


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        return self.body(x)


@pytest.fixture(scope="module")
def small_net(mnist):
    """One epoch on 3000 real MNIST training images (about a second)."""
    torch.manual_seed(0)
    net = SmallNet()
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    x, y = mnist.x_train[:3000], mnist.y_train[:3000]
    for i in range(0, len(x), 50):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x[i:i + 50]), y[i:i + 50]).backward()
        opt.step()
    return net.eval()


@pytest.fixture()
def defense_file(tmp_path, small_net):
    weights = tmp_path / "weights.pt"
    torch.save(small_net.state_dict(), weights)
    path = tmp_path / "my_defense.py"
    path.write_text(FILE.format(weights=str(weights)))
    return path


def cells(db):
    with sqlite3.connect(db) as con:
        return {r[0]: (r[1], r[2], json.loads(r[3]), r[4]) for r in con.execute(
            "SELECT cell_id, defense, attack, defense_config, eps FROM cells")}


def rows(db, cell_id):
    with sqlite3.connect(db) as con:
        return con.execute("SELECT sample_id, label, clean_pred, adv_pred, pert_norm, queries FROM samples WHERE "
                           "cell_id = ? ORDER BY sample_id", (cell_id,)).fetchall()


def cli_run(capsys, defense, db):
    argv = ["run", "--defense", defense, "--attack", ",".join(ATTACKS), "--eps", ",".join(map(str, EPS)),
            "--n", str(N), "--device", "cpu", "--results", str(db), "--json", "--quiet", *CLI_SETTINGS]
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_a_module_through_the_api_and_through_a_file_stores_the_same_rows(tmp_path, small_net, defense_file,
                                                                          capsys):
    db_api, db_cli = tmp_path / "api.sqlite", tmp_path / "cli.sqlite"
    result = otbench.evaluate(small_net, attacks=ATTACKS, eps=EPS, n=N, results=db_api, device="cpu",
                              settings=SETTINGS)
    out = cli_run(capsys, f"{defense_file}:trained", db_cli)
    api_cells, cli_cells = cells(db_api), cells(db_cli)
    # the run plan's cells and nothing else (no undefended-network cells: a module declares no surrogate)
    assert sorted(c[1] for c in api_cells.values()) == sorted(c[1] for c in cli_cells.values()) == sorted(ATTACKS)
    by_attack = {c[1]: k for k, c in cli_cells.items()}
    for cell_id, (name, attack, config, eps) in api_cells.items():
        assert name == result.defense and name.startswith("SmallNet@")
        assert config["model"]["fingerprint"] == module_fingerprint(small_net)
        other = cli_cells[by_attack[attack]]
        assert other[2]["model"]["sha256"]  # the file's hash is in the file defense's identity
        assert other[2]["model"]["fingerprint"] != config["model"]["fingerprint"]  # classes of two sources
        a, b = rows(db_api, cell_id), rows(db_cli, by_attack[attack])
        assert len(a) == N and [r[:4] + r[5:] for r in a] == [r[:4] + r[5:] for r in b]
        assert [r[4] for r in a] == pytest.approx([r[4] for r in b], abs=1e-6)
    # the API's table is the stored cells' summary, and the CLI's JSON says the same numbers
    table = result.table.set_index("attack")
    for cell in out["cells"]:
        assert table.loc[cell["attack"], "robust"] == cell["robust_accuracy"]
        assert table.loc[cell["attack"], "clean"] == cell["clean_accuracy"]
        assert table.loc[cell["attack"], "n"] == N
    assert table["robust"].max() < table["clean"].min()  # the attacks did something
    assert (table["worst_case"] <= table["robust"]).all()


def test_editing_the_file_makes_new_cells_and_a_rerun_reuses_them(tmp_path, defense_file, capsys):
    db = tmp_path / "r.sqlite"
    first = cli_run(capsys, f"{defense_file}:trained", db)
    again = cli_run(capsys, f"{defense_file}:trained", db)
    assert [c["computed"] for c in again["cells"]] == [0, 0]  # the same file: resumed, nothing recomputed
    defense_file.write_text(defense_file.read_text() + "\n# an edit that changes nothing but the file\n")
    edited = cli_run(capsys, f"{defense_file}:trained", db)
    assert [c["computed"] for c in edited["cells"]] == [N, N]
    old, new = {c["cell_id"] for c in first["cells"]}, {c["cell_id"] for c in edited["cells"]}
    assert not old & new and len(cells(db)) == 4
    assert {c["defense"] for c in first["cells"]} != {c["defense"] for c in edited["cells"]}  # name@hash


def test_other_weights_are_another_model(tmp_path, small_net):
    db = tmp_path / "r.sqlite"
    first = otbench.evaluate(small_net, attacks=["pgd"], eps=EPS, n=5, results=db, device="cpu",
                             settings={"attack": {"steps": 2}})
    again = otbench.evaluate(small_net, attacks=["pgd"], eps=EPS, n=5, results=db, device="cpu",
                             settings={"attack": {"steps": 2}})
    assert list(again.table["cell_id"]) == list(first.table["cell_id"])
    other = SmallNet()
    other.load_state_dict(small_net.state_dict())
    with torch.no_grad():
        other.body[1].bias[0] += 1e-3
    moved = otbench.evaluate(other, attacks=["pgd"], eps=EPS, n=5, results=db, device="cpu",
                             settings={"attack": {"steps": 2}})
    assert set(moved.table["cell_id"]).isdisjoint(first.table["cell_id"]) and moved.defense != first.defense
    assert len(cells(db)) == 2


def test_a_registered_name_runs_the_clis_plan(tmp_path, capsys):
    """The API's plan for a registered defense is the CLI's: the same cells and numbers."""
    db = tmp_path / "r.sqlite"
    settings = {"train": {"blocks": 2, "epochs": 1, "train_size": 3000}, "attack": {"steps": 3}}
    result = otbench.evaluate("standard", attacks=["pgd"], eps=[1.0], n=10, results=db, device="cpu",
                              settings=settings)
    argv = ["run", "--defense", "standard", "--attack", "pgd", "--eps", "1", "--n", "10", "--device", "cpu",
            "--results", str(db), "--set", "train.blocks=2", "--set", "train.epochs=1", "--set",
            "train.train_size=3000", "--set", "attack.steps=3", "--set", "attack.norm=L2", "--json", "--quiet"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert [c["cell_id"] for c in out["cells"]] == list(result.table["cell_id"])
    assert out["cells"][0]["computed"] == 0


def test_a_sweep_names_the_file_like_run(tmp_path, defense_file, capsys):
    """`otbench sweep` resolves FILE.py:NAME the same way: the cells `run` stored are the sweep's (nothing
    recomputed)."""
    db = tmp_path / "r.sqlite"
    first = cli_run(capsys, f"{defense_file}:trained", db)
    sweep = tmp_path / "grid.toml"
    sweep.write_text(f'defenses = ["{defense_file}:trained"]\nattacks = {json.dumps(ATTACKS)}\neps = {EPS}\n'
                     f'n = {N}\nchunk = 100\ndevice = "cpu"\n[attack]\nnorm = "L2"\n"pgd.steps" = 10\n'
                     f'"fab.steps" = 20\n')
    assert main(["sweep", str(sweep), "--results", str(db), "--json", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert sorted(c["cell_id"] for c in out["cells"]) == sorted(c["cell_id"] for c in first["cells"])
    assert [c["computed"] for c in out["cells"]] == [0, 0]


def test_declared_capabilities_of_a_module(tmp_path, small_net):
    db = tmp_path / "r.sqlite"
    with pytest.raises(OTBenchError, match="needs gradients, but defense 'SmallNet@"):
        otbench.evaluate(small_net, attacks=["pgd"], eps=EPS, n=5, results=db, device="cpu", differentiable=False)
    assert not db.exists()
    noisy = otbench.evaluate(small_net, attacks=["pgd"], eps=EPS, n=5, results=db, device="cpu", randomized=True,
                             settings={"attack": {"steps": 2}})
    (config,) = [c[2] for c in cells(db).values()]
    with sqlite3.connect(db) as con:
        (attack_config,) = [json.loads(r[0]) for r in con.execute("SELECT attack_config FROM cells")]
    assert attack_config["eot_samples"] > 1  # a randomized defense gets EOT, as on the CLI
    assert noisy.table["n"].tolist() == [5] and config["model"]["fingerprint"] == module_fingerprint(small_net)


def test_a_built_defense_instance(tmp_path, standard):
    db = tmp_path / "r.sqlite"
    result = otbench.evaluate(standard, attacks=["pgd"], eps=[1.0], n=5, results=db, device="cpu",
                              settings={"attack": {"steps": 2}})
    stored = cells(db)[result.table["cell_id"].iloc[0]]  # beside it: the undefended-network check's cell
    assert stored[0] == "standard" and stored[2]["train"] == standard.config["train"]
    assert result.table["clean"].iloc[0] == (standard.predict(standard.data.x_test[list(result.sample_ids)])
                                             == standard.data.y_test[list(result.sample_ids)]).double().mean().item()


@pytest.mark.parametrize("model,message", [
    (object(), "got a object"), ("SmallNet", "unknown defense 'SmallNet'"), ("./missing.py:Net", "does not exist")])
def test_api_mistakes_are_otbench_errors(tmp_path, model, message):
    with pytest.raises(OTBenchError, match=message):
        otbench.evaluate(model, attacks=["pgd"], n=5, results=tmp_path / "r.sqlite")
    assert list(tmp_path.iterdir()) == []


def test_report_fill_runs_a_file_defense_row(tmp_path, defense_file, capsys):
    """A report table whose row names FILE.py:NAME: `report --fill` runs its missing cells, the table shows them,
    and an edited file is a row not yet run (its cells are another version's)."""
    from otbench.registry import TABLES
    from otbench.report.spec import Column, Row, TableSpec

    db, out = tmp_path / "r.sqlite", tmp_path / "report"
    spec = TableSpec("mine-table", "my model", "mine", "1", "mnist", (Row("mine", f"{defense_file}:trained"),),
                     (Column("Clean", "pgd", 1.5, "clean", "clean", {"steps": 3, "norm": "L2"}),
                      Column("Robust eps=1.5", "pgd", 1.5, "robust", "eps=1.5", {"steps": 3, "norm": "L2"})))
    argv = ["report", "--tables", spec.name, "--preset", "quick", "--n", "10", "--results", str(db), "--out",
            str(out), "--device", "cpu", "--json", "--quiet"]
    with TABLES.temporary(spec.name, lambda: spec):
        assert main([*argv, "--fill"]) == 0
        capsys.readouterr()
        (cell,) = cells(db).values()
        assert cell[0].startswith("my_defense.py:trained@") and cell[1] == "pgd"
        csv = next(out.glob("*.csv")).read_text()
        assert "not run" not in csv and "mine" in csv
        defense_file.write_text(defense_file.read_text() + "\n# edited\n")
        assert main(argv) == 0
        capsys.readouterr()
        assert "not run" in next(out.glob("*.csv")).read_text()
