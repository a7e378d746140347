"""What the leaderboard tests share. Their store (conftest.py) is filled through the real runner on real MNIST: the
tiny `standard` and `knn` defenses under Square (and PGD on the differentiable one) at two L2 budgets, and the
small minimum-norm attack defined here (registered only while a test needs it, through `ATTACKS.temporary`). The
expected numbers are computed here from the raw rows, with sqlite3 alone."""
from __future__ import annotations

import sqlite3
from contextlib import contextmanager

import torch

from otbench.attacks import Attack, AttackOutput
from otbench.registry import ATTACKS

FIXED_EPS = (1.0, 2.0)
MIN_NORM_EPS = 1.5  # the budget the minimum-norm cell searched up to; it is read at every budget up to it
N = 20


class TowardOtherClass(Attack):
    """Minimum norm, label-only: walk each input toward its nearest input of another class in the batch, in
    `steps` equal steps, and keep the first that the defense misclassifies (the clean input where none is)."""

    description = "test minimum-norm attack: first misclassified point on the segment to the nearest other class"
    needs = "labels"
    norms = ("L2",)
    bounded = False
    minimum_norm = True
    defaults = {"norm": "L2", "steps": 12}

    def run(self, images, labels, seed):
        flat = images.flatten(1)
        dist = torch.cdist(flat, flat)
        dist[labels[:, None] == labels[None, :]] = float("inf")
        direction = images[dist.argmin(1)] - images
        best, found = images.clone(), torch.zeros(len(images), dtype=torch.bool)
        steps = self.config["steps"]
        for k in range(1, steps + 1):
            cand = images + (k / steps) * direction
            new = (~found) & (self.defense.predict(cand) != labels)
            best[new] = cand[new]
            found |= new
        return AttackOutput(best, torch.full((len(images),), steps))


@contextmanager
def min_norm_attack():
    with ATTACKS.temporary("toward-other-class", TowardOtherClass):
        yield "toward-other-class"


def raw_cells(path) -> list[dict]:
    """The stored cells and their rows, read with sqlite3 alone (independent of otbench's readers)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    cells = []
    for cell_id, defense, attack, eps in db.execute("SELECT cell_id, defense, attack, eps FROM cells"):
        rows = {s: (lab, c, a, nrm) for s, lab, c, a, nrm in db.execute(
            "SELECT sample_id, label, clean_pred, adv_pred, pert_norm FROM samples WHERE cell_id = ?", (cell_id,))}
        cells.append({"cell_id": cell_id, "defense": defense, "attack": attack, "eps": eps, "rows": rows})
    db.close()
    return cells


def expected_board(path, eps: float) -> list[tuple[str, float, float, int]]:
    """(defense, best-known robust %, clean %, n) per defense at `eps`, ranked, computed from the raw rows: per
    sample robust only if clean-correct and unbroken by every fixed-eps cell at eps and with no minimum-norm
    adversarial within eps."""
    out = []
    cells = [c for c in raw_cells(path) if c["defense"] != "undefended"]
    for defense in sorted({c["defense"] for c in cells}):
        mine = [c for c in cells if c["defense"] == defense and
                ((c["attack"] == "toward-other-class" and c["eps"] >= eps) or abs(c["eps"] - eps) < 1e-12)]
        common = set.intersection(*(set(c["rows"]) for c in mine))

        def robust(c, s):
            lab, clean, adv, nrm = c["rows"][s]
            ok = adv == lab or (c["attack"] == "toward-other-class" and nrm > eps)
            return clean == lab and ok

        rob = 100 * sum(all(robust(c, s) for c in mine) for s in common) / len(common)
        clean = 100 * sum(mine[0]["rows"][s][0] == mine[0]["rows"][s][1] for s in common) / len(common)
        out.append((defense, rob, clean, len(common), _partial(defense, [c["attack"] for c in mine])))
    # rows that have not faced both a gradient-free and (where the defense offers gradients or a surrogate) a
    # gradient attack rank after the complete ones
    return [t[:4] for t in sorted(out, key=lambda t: (t[4], -t[1], -t[2], t[0]))]


def _partial(defense: str, attacks: list[str]) -> bool:
    from otbench.registry import ATTACKS, DEFENSES

    needs = {ATTACKS.get(a).needs for a in attacks}
    cls = DEFENSES.get(defense)
    gradients = cls.differentiable or cls.piecewise_differentiable or cls.surrogate_description is not None
    return not needs & {"scores", "labels"} or (gradients and not needs & {"gradients", "surrogate-gradients",
                                                                            "piecewise-gradients"})
