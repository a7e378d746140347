"""An outside package adds a defense, an attack and a report table, one file each, through the entry points
(a real installed distribution: a dist-info folder on the path), and all three run through the real CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from support import DATA, needs_mnist

DEFENSE = '''
"""A defense in one file: nearest class mean of the training images (no training run)."""
import torch

from otbench.defense import Defense
from otbench.registry import register_defense


@register_defense("plug-nearest-mean")
class NearestMean(Defense):
    description = "nearest class mean of the training images"
    surrogate_description = "itself"
    presets = {"quick": {"defense": {"train_size": 2000}}, "paper": {"defense": {"train_size": None}}}

    def __init__(self, data, config, device):
        super().__init__(data, config, device)
        part = data.take_train(config["defense"]["train_size"])
        x = part.x_train.flatten(1)
        self.means = torch.stack([x[part.y_train == k].mean(0) for k in range(data.num_classes)])

    def logits(self, x):
        return -torch.cdist(x.flatten(1).to(self.means), self.means) ** 2

    def surrogate(self):
        return self.module()
'''
ATTACK = '''
"""An attack in one file: a step of L2 norm eps toward the nearest other class mean of the training images."""
import torch

from otbench.attacks import Attack, AttackOutput
from otbench.registry import register_attack


@register_attack("plug-toward-mean")
class TowardMean(Attack):
    description = "one L2 step of eps toward the nearest other class mean (label-only)"
    needs = "labels"
    norms = ("L2",)
    defaults = {"norm": "L2"}
    default_eps = (2.0,)

    def run(self, images, labels, seed):
        data = self.defense.data
        x = data.x_train.flatten(1)
        means = torch.stack([x[data.y_train == k].mean(0) for k in range(data.num_classes)])
        flat = images.flatten(1)
        dist = torch.cdist(flat, means)
        dist[torch.arange(len(flat)), labels] = float("inf")
        step = means[dist.argmin(1)] - flat
        step = step / step.norm(dim=1, keepdim=True).clamp_min(1e-12) * self.eps
        adv = (flat + step).clamp(0, 1).view_as(images)
        return AttackOutput(adv, torch.ones(len(images), dtype=torch.long))
'''
TABLE = '''
"""A report table in one file, with its own published values."""
from pathlib import Path

from otbench.registry import register_table
from otbench.report.paper import register_paper_values
from otbench.report.spec import Column, Row, TableSpec

register_paper_values("plug-paper", Path(__file__).with_name("values.csv"))


@register_table("plug-table")
def plug_table():
    return TableSpec("plug-table", "Nearest class mean under a step toward another mean", "plug-paper", "1", "mnist",
                     rows=(Row("nearest mean", "plug-nearest-mean", "nearest mean"),),
                     columns=(Column("clean", "plug-toward-mean", 2.0, "clean", "clean"),
                              Column("robust eps=2", "plug-toward-mean", 2.0, "robust", "eps=2")))
'''
VALUES = "paper,table,dataset,method,setting,metric,value\\nplug-paper,1,mnist,nearest mean,clean,accuracy,82.0\\n"


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    root = tmp_path_factory.mktemp("plugin")
    pkg = root / "plug_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name, text in (("defense", DEFENSE), ("attack", ATTACK), ("table", TABLE)):
        (pkg / f"{name}.py").write_text(textwrap.dedent(text))
    (pkg / "values.csv").write_text(VALUES.replace("\\n", "\n"))
    info = root / "plug_pkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: plug-pkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[otbench.defenses]\nplug = plug_pkg.defense\n\n"
                                           "[otbench.attacks]\nplug = plug_pkg.attack\n\n"
                                           "[otbench.tables]\nplug = plug_pkg.table\n")
    return root


def cli(plugin, tmp_path, *args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin), os.environ.get("PYTHONPATH", "")]),
           "OTBENCH_DATA": str(DATA), "OTBENCH_CACHE": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-m", "otbench", *args], capture_output=True, text=True, env=env,
                         timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.slow
def test_outside_entries_are_listed(plugin, tmp_path):
    listed = json.loads(cli(plugin, tmp_path, "list", "--json"))
    assert listed["defenses"]["plug-nearest-mean"]["surrogate"] == "itself"
    assert listed["attacks"]["plug-toward-mean"]["default_eps"] == [2.0]
    assert listed["tables"]["plug-table"].startswith("Nearest class mean")


@needs_mnist
@pytest.mark.slow
def test_an_outside_defense_attack_and_table_run_through_the_cli(plugin, tmp_path):
    db = str(tmp_path / "r.sqlite")
    run = json.loads(cli(plugin, tmp_path, "run", "--defense", "plug-nearest-mean", "--attack", "plug-toward-mean",
                         "--n", "30", "--results", db, "--json", "--quiet"))
    (cell,) = run["cells"]
    assert cell["n"] == 30 and cell["eps"] == 2.0  # the attack's own default budget
    assert 0.5 < cell["clean_accuracy"] and cell["robust_accuracy"] < cell["clean_accuracy"]
    cli(plugin, tmp_path, "report", "--tables", "plug-table", "--preset", "quick", "--results", db, "--out", "out")
    md = (tmp_path / "out" / "plug-table.md").read_text()
    clean = 100 * cell["clean_accuracy"]
    assert f"| nearest mean | {clean:.1f} / 82.0 ({clean - 82.0:+.1f}) | {100 * cell['robust_accuracy']:.1f} | 30 |" in md
    assert "Each cell: **measured / paper (gap)** where the paper has a number, else measured alone" in md
    # and the table fills itself on an empty database, through the same run plan
    cli(plugin, tmp_path, "report", "--tables", "plug-table", "--preset", "quick", "--results", "fresh.sqlite",
        "--out", "out2", "--fill", "--n", "30")
    assert (tmp_path / "out2" / "plug-table.md").read_text().split("## Diagnostics")[0] == md.split("## Diagnostics")[0]
