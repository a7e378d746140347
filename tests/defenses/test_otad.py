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
    """Cached relaxation steps give exactly what a fresh search gives, also on perturbed queries."""
    from otbench.defenses.otad.cip import solve_cip
    from otbench.defenses.otad.defense import StepCache

    x = test_batch[0][:16]
    otad.steps_cache = StepCache()
    otad.cip_features(x)
    assert otad.steps_cache.misses == 16 and otad.steps_cache.hits == 0
    moved = (x + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    cached = otad.cip_features(moved)
    assert otad.steps_cache.hits > 0
    flat = moved.flatten(1).double()
    idx = otad.knn.search(flat, 10)
    fresh = solve_cip(flat, otad.train_flat[idx].double(), otad.bank[idx].double(), L=2.0, l=0.0,
                      delta1=0.2, delta2=0.2)
    assert torch.equal(fresh.steps, cached.steps)
    assert torch.allclose(fresh.features, cached.features, rtol=1e-12, atol=1e-12)
