"""neighbour-shift(-labels), Square's new settings and transfer-pgd on tiny real-MNIST defenses.

Each attack must lower accuracy within eps where a do-nothing attack would not, count its queries, and
refuse bad settings in one line; Square's defaults must stay torchattacks' Square exactly."""
import pytest
import torch
import torchattacks

from otbench.attacks._training_points import TrainingPoints
from otbench.attacks._neighbour_sweep import SWEEP_DEFAULTS, margins, sweep, targets
from otbench.defense import Defense
from otbench.errors import OTBenchError
from otbench.guard import check_threat_model
from otbench.registry import ATTACKS


def accuracy(defense, x, y):
    return (defense.predict(x) == y).float().mean().item()


def sweep_queries(cfg):
    return cfg["classes"] * (cfg["points"] + 1) * cfg["steps"]


@pytest.mark.parametrize("fixture", ["otad", "knn"])
@pytest.mark.parametrize("name,cfg", [("neighbour-shift", {"refine_queries": 50}), ("neighbour-shift-labels", {})])
def test_neighbour_shift_breaks_neighbour_defenses_within_eps(request, test_batch, fixture, name, cfg):
    defense = request.getfixturevalue(fixture)
    x, y = test_batch[0][:16], test_batch[1][:16]
    out = ATTACKS.get(name)(defense, 3.0, **cfg)(x, y, seed=0)
    check_threat_model(x, out.adv, "L2", 3.0, name)
    assert accuracy(defense, out.adv, y) < accuracy(defense, x, y) - 0.2
    assert out.queries.min() > 0
    assert out.queries.max() <= sweep_queries(SWEEP_DEFAULTS) + cfg.get("refine_queries", 0)


def test_neighbour_shift_labels_changes_only_what_it_misclassifies(knn, test_batch):
    x, y = test_batch[0][:16], test_batch[1][:16]
    out = ATTACKS.get("neighbour-shift-labels")(knn, 3.0)(x, y, seed=0)
    changed = (out.adv != x).flatten(1).any(1)
    assert changed.any() and (knn.predict(out.adv[changed]) != y[changed]).all()


def test_targets_are_other_classes_nearest_training_points_and_local_means(mnist, test_batch):
    x, y = test_batch[0][:3].flatten(1), test_batch[1][:3]
    points = TrainingPoints.of(mnist)
    cfg = {"classes": 2, "points": 1, "k": 5}
    t = targets(points, x, y, cfg, 10)  # per sample: [nearest of class a, mean of a, nearest of b, mean of b]
    flat, labels = mnist.x_train.flatten(1), mnist.y_train
    for i in range(3):
        d = (flat - x[i]).norm(dim=1)
        d[labels == y[i]] = float("inf")
        nearest = d.argmin()
        assert torch.allclose(t[i, 0], flat[nearest])  # the nearest other-class point comes first
        cls = labels[nearest]
        d_cls = (flat - x[i]).norm(dim=1).masked_fill(labels != cls, float("inf"))
        assert torch.allclose(t[i, 1], flat[d_cls.topk(5, largest=False).indices].mean(0), atol=1e-5)
        assert labels[(flat - t[i, 2]).norm(dim=1).argmin()] not in (y[i], cls)  # a third class


def test_refinement_never_raises_the_margin(otad, test_batch):
    x, y = test_batch[0][:10], test_batch[1][:10]
    first = sweep(otad, x, y, 2.0, SWEEP_DEFAULTS)
    out = ATTACKS.get("neighbour-shift")(otad, 2.0, refine_queries=40)(x, y, seed=0)
    with torch.no_grad():
        after = margins(otad.logits(out.adv), y)
    assert (after <= first.margin + 1e-4).all() and (after < first.margin - 1e-4).any()


# -- Square's settings -------------------------------------------------------------------------------
@pytest.mark.parametrize("schedule,resc", [("rescaled", True), ("fixed", False)])
def test_square_is_torchattacks_square_with_the_schedule_named(standard, test_batch, schedule, resc):
    x, y = test_batch[0][:12], test_batch[1][:12]
    ours = ATTACKS.get("square")(standard, 2.0, n_queries=80, schedule=schedule)(x, y, seed=5)
    ref = torchattacks.Square(standard.module(), norm="L2", eps=2.0, n_queries=80, p_init=0.8, loss="margin",
                              resc_schedule=resc, seed=5)(x, y)
    assert torch.equal(ours.adv, ref)


def test_square_counts_queries_over_restarts(standard, test_batch):
    x, y = test_batch[0][:16], test_batch[1][:16]
    out = ATTACKS.get("square")(standard, 2.0, n_queries=40, n_restarts=3)(x, y, seed=3)
    wrong_before = standard.predict(x) != y
    robust_after = standard.predict(out.adv) == y
    assert (out.queries[wrong_before] == 0).all()
    assert robust_after.any() and (out.queries[robust_after] == 3 * 41).all()
    broken = ~wrong_before & ~robust_after
    assert broken.any() and (out.queries[broken] >= 1).all() and (out.queries <= 3 * 41).all()
    assert (out.queries[broken] > 41).any()  # some were broken by a later restart, and counted so


def test_square_neighbour_init_starts_from_the_sweep(otad, test_batch):
    x, y = test_batch[0][:12], test_batch[1][:12]
    first = sweep(otad, x, y, 3.0, SWEEP_DEFAULTS)
    out = ATTACKS.get("square")(otad, 3.0, n_queries=1, init="neighbour")(x, y, seed=0)
    check_threat_model(x, out.adv, "L2", 3.0, "square")
    start_ok = first.fooled & (otad.predict(x) == y)
    assert start_ok.any() and torch.equal(out.adv[start_ok], first.adv[start_ok])
    assert (out.queries[start_ok] == first.queries[start_ok] + 1).all()
    assert accuracy(otad, out.adv, y) < accuracy(otad, x, y) - 0.2


@pytest.mark.parametrize("name,cfg,match", [
    ("square", {"schedule": "autoattack"}, "valid: rescaled, fixed"),
    ("square", {"init": "stripes"}, "valid: paper, neighbour"),
    ("square", {"init": "neighbour", "norm": "Linf"}, "norm L2"),
    ("square", {"n_restarts": 0}, "n_restarts' must be an integer of at least 1"),
    ("square", {"n_queries": -1}, "n_queries' must be an integer of at least 1"),
    ("square", {"loss": "hinge"}, "valid: margin, ce"),
    ("neighbour-shift", {"norm": "Linf"}, "valid: L2"),
    ("neighbour-shift", {"refine_queries": -1}, "refine_queries must be an integer >= 0"),
    ("neighbour-shift", {"classes": 0}, "classes must be an integer >= 1"),
    ("neighbour-shift", {"k": 10 ** 6}, "points and k must be at most"),
    ("neighbour-shift-labels", {"steps": 0}, "steps' must be an integer of at least 1"),
    ("transfer-pgd", {"norm": "L1"}, "valid: L2, Linf"),
])
def test_bad_settings_are_refused_in_one_line(otad, name, cfg, match):
    with pytest.raises(OTBenchError, match=match) as err:
        ATTACKS.get(name)(otad, 2.0, **cfg)
    assert "\n" not in str(err.value)


# -- transfer-pgd ------------------------------------------------------------------------------------
class NoQueries(Defense):
    """OTAD's surrogate, but any query of the defense itself fails the test."""

    name = "no-queries"
    surrogate_description = "the wrapped defense's"

    def __init__(self, inner: Defense) -> None:
        super().__init__(inner.data, inner.config, inner.device)
        self.inner = inner

    def logits(self, x):
        raise AssertionError("transfer-pgd queried the defense")

    def surrogate(self):
        return self.inner.surrogate()


def test_transfer_pgd_fools_the_undefended_network_without_querying_the_defense(otad, test_batch):
    x, y = test_batch
    out = ATTACKS.get("transfer-pgd")(NoQueries(otad), 4.0, steps=20)(x, y, seed=0)
    check_threat_model(x, out.adv, "L2", 4.0, "transfer-pgd")
    assert (out.queries == 0).all()
    with torch.no_grad():
        assert (otad.net(out.adv).argmax(1) == y).float().mean() < 0.1
    assert accuracy(otad, out.adv, y) < accuracy(otad, x, y)  # some of it transfers at this budget
