"""OTAD and KNN on tiny real-MNIST models: classification, identity, settings, the model cache, the step memo."""
from __future__ import annotations

import pytest
import torch
from support import TINY_TRAIN, tiny_overrides

from otbench.defense import create_defense
from otbench.errors import OTBenchError


def brute_force_knn(train, x, k):
    d = torch.cdist(x.flatten(1).double(), train.flatten(1).double())
    return torch.argsort(d, dim=1, stable=True)[:, :k]


def test_knn_defense_is_H_of_mean_neighbour_feature(knn, test_batch):
    x = test_batch[0][:10]
    idx = brute_force_knn(knn.train_x, x, 10)
    expected = knn.net.head(knn.net.features(knn.train_x[idx.flatten()]).view(10, 10, -1).mean(1))
    assert torch.allclose(knn.logits(x), expected, atol=1e-4)


def test_otad_classifies_and_is_deterministic(otad, standard, test_batch):
    x, y = test_batch
    first = otad.logits(x)
    assert torch.equal(first, otad.logits(x))  # not randomized: identical calls, identical outputs
    acc = (first.argmax(1) == y).float().mean().item()
    assert acc >= (standard.predict(x) == y).float().mean().item() - 0.15 and acc > 0.6
    assert otad.last_steps is not None and otad.last_steps.min() >= 0


def test_otad_cip_feature_differs_from_the_network_feature(otad, test_batch):
    """The CIP step must actually replace R(x): its feature is not the ResNet's."""
    x = test_batch[0][:8]
    res = otad.cip_features(x)
    assert res.converged.all()
    z = otad.net.features(x).double()
    rel = ((res.features.double() - z).norm(dim=1) / z.norm(dim=1))
    assert (rel > 1e-3).all()


def test_formulation_and_potentials_change_the_identity_and_answer(mnist, otad, test_batch):
    x = test_batch[0][:8]
    ref = create_defense("otad", mnist, "quick", tiny_overrides(formulation="reference-code"))
    assert ref.identity != otad.identity and ref.identity["defense"]["formulation"] == "reference-code"
    assert not torch.allclose(ref.cip_features(x).features, otad.cip_features(x).features)


@pytest.mark.parametrize("setting,message", [
    ({"formulation": "mosek"}, "valid: paper, reference-code"),
    ({"potentials": "smallest"}, "valid: least, lp"),
    ({"K": 0}, "K must be an integer of at least 2"),
    ({"l": 3.0}, "l < L"),
    ({"Kay": 3}, "unknown otad defense setting 'Kay'"),
    ({"L": "two"}, "setting 'L' must be a number"),
])
def test_bad_otad_settings_are_clear_errors(mnist, setting, message):
    with pytest.raises(OTBenchError, match=message):
        create_defense("otad", mnist, "quick", tiny_overrides(**setting))


def test_unknown_preset_is_named(mnist):
    with pytest.raises(OTBenchError, match="valid: paper, paper-v1, quick"):
        create_defense("otad", mnist, "fast", {"train": dict(TINY_TRAIN)})


def test_trained_model_is_cached_and_reused(mnist, standard):
    again = create_defense("standard", mnist, "quick", {"train": dict(TINY_TRAIN)})
    assert again.train_record == standard.train_record  # loaded, not retrained (same recorded time)
    for a, b in zip(again.net.state_dict().values(), standard.net.state_dict().values()):
        assert torch.equal(a.cpu(), b.cpu())


def test_step_memo_is_exact(otad, test_batch):
    """Cached relaxation steps and neighbourhood terms give exactly what a fresh solve gives, bit for bit, also on
    perturbed queries."""
    from otbench.defenses.otad.cip import solve_cip

    x = test_batch[0][:16]
    otad.cip.reset()
    otad.cip_features(x)
    assert otad.cip.steps_cache.misses == 16 and otad.cip.steps_cache.hits == 0
    moved = (x + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    cached = otad.cip_features(moved)
    assert otad.cip.steps_cache.hits > 0 and otad.cip.neighbourhoods.hits > 0
    flat = moved.flatten(1).double()
    idx = otad.knn.search(flat, 10).sort(1).values
    fresh = solve_cip(flat, otad.train_flat[idx].double(), otad.bank[idx].double(), L=2.0, l=0.0,
                      delta1=0.2, delta2=0.2)
    assert torch.equal(fresh.steps, cached.steps)
    assert torch.equal(fresh.features, cached.features) and torch.equal(fresh.value, cached.value)


def test_neighbourhood_memo_starts_over_when_full(otad, test_batch):
    """A memo too small for the batches it sees starts over and still answers every row exactly."""
    from otbench.defenses.otad.step import NeighbourhoodMemo

    x = test_batch[0][:12]
    otad.cip.reset()
    want = otad.cip_features(x)
    otad.cip.reset()
    otad.cip.neighbourhoods = NeighbourhoodMemo(max_bytes=1)  # room for one batch's lists at a time
    otad.cip_features(x[:5])
    got = otad.cip_features(x)  # five lists stored, seven new: the memo starts over mid-batch
    assert torch.equal(got.features, want.features)
    assert otad.cip.neighbourhoods.hits == 5 and len(otad.cip.neighbourhoods.slots) == 12


def test_cip_step_answer_depends_on_the_neighbour_set_alone(otad, test_batch):
    """The neighbours in any order give the same answer, bit for bit (what makes the memos per set exact)."""
    x = test_batch[0][:6].flatten(1)
    idx = otad.knn.search(x, 10)
    perm = torch.stack([torch.randperm(10, generator=torch.Generator().manual_seed(i)) for i in range(6)])
    shuffled = idx.gather(1, perm)
    answers = []
    for order in (idx, shuffled):
        otad.cip.reset()
        answers.append(otad.cip(x, otad.train_flat[order], otad.bank[order], order))
    assert torch.equal(answers[0].features, answers[1].features)
    assert torch.equal(answers[0].potentials.gather(1, perm), answers[1].potentials)  # each in its caller's order
