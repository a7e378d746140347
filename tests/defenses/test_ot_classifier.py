"""The OT-Classifier family: Algorithm 1's critic and codes and the intrinsic-dimension MLE, on real MNIST."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from support import needs_mnist

from otbench.errors import OTBenchError


# Tiny stand-in for the quick preset: 8-16 channels, 2 epochs on 2000 real MNIST training points.
@pytest.fixture(scope="session")
def codes(mnist, ot_cla, e_cla):
    x = mnist.x_test[:1000]
    return ot_cla.embed(x), e_cla.embed(x)


# -- intrinsic dimension ------------------------------------------------------------------------------------------
def _torus(k: int, n: int = 1000, ambient: int = 50, seed: int = 0) -> np.ndarray:
    """A flat k-torus (no boundary) embedded isometrically in R^ambient by a random rotation."""
    rng = np.random.default_rng(seed)
    angles = rng.uniform(0, 2 * np.pi, (n, k))
    q, _ = np.linalg.qr(rng.normal(size=(ambient, 2 * k)))
    return np.concatenate([np.cos(angles), np.sin(angles)], 1) @ q.T


# -- Algorithm 1 ------------------------------------------------------------------------------------------------
@needs_mnist
def test_critic_weights_stay_within_the_clip(ot_cla, e_cla):
    critic = ot_cla.net.critic
    clip = ot_cla.config["train"]["clip"]
    weights = torch.cat([p.detach().flatten() for p in critic.parameters()])
    assert weights.abs().max() <= clip + 1e-12
    assert (weights.abs() > 0.999 * clip).float().mean() > 0.01  # the clip binds: training pushed weights to it
    assert e_cla.net.critic is None  # E-CLA: the same encoder and classifier, no critic


@needs_mnist
def test_codes_have_the_table_3_dimension_and_classify(ot_cla, e_cla, codes, mnist):
    z_ot, z_e = codes
    assert z_ot.shape == z_e.shape == (1000, 4)  # Table 3: n_z = 4 on MNIST
    for d in (ot_cla, e_cla):
        assert d.train_record["test_accuracy"] > 0.7  # the code still carries the classes (chance: 0.1)


@needs_mnist
def test_ot_cla_codes_are_closer_to_the_gaussian_prior_than_e_cla(codes):
    from otbench.defenses.ot_classifier.analysis import gaussian_energy_distance

    z_ot, z_e = codes
    d_ot, d_e = gaussian_energy_distance(z_ot), gaussian_energy_distance(z_e)
    # a reference: two independent Gaussian samples of the same size are this close
    noise = gaussian_energy_distance(torch.randn(1000, 4, generator=torch.Generator().manual_seed(7)), seed=1)
    assert d_ot < d_e / 2, (d_ot, d_e)
    assert noise < d_ot  # the statistic resolves the difference: OT-CLA's codes are not exactly Gaussian either


def test_defenses_with_the_same_train_settings_never_share_stored_cells():
    from otbench.config import config_hash
    from otbench.defense import build_config
    from otbench.registry import DEFENSES

    names = ("ot-cla", "e-cla", "cnn-standard", "ot-cla-adv", "cnn-pgd-at")
    # the identity a cell is stored under (Defense.identity: the config's `defense` section replaces the name)
    idents = {config_hash({"defense": n, "dataset": "mnist", **build_config(DEFENSES.get(n), "quick", None)})
              for n in names}
    assert len(idents) == len(names)
    with pytest.raises(OTBenchError, match="defense.model"):
        DEFENSES.get("e-cla")(None, build_config(DEFENSES.get("e-cla"), "quick", {"defense": {"model": "ot-cla"}}),
                              torch.device("cpu"))


def test_energy_distance_is_zero_only_for_equal_samples():
    from otbench.defenses.ot_classifier.analysis import energy_distance

    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(500, 3, generator=gen), torch.randn(500, 3, generator=gen)
    assert energy_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    assert energy_distance(a, b) < 0.05 < energy_distance(a, b + 0.5)


def test_adversarial_settings_follow_supplement_a():
    from otbench.defense import build_config
    from otbench.defenses.ot_classifier.settings import resolve_adv, resolve_n_z
    from otbench.registry import DEFENSES

    cfg = build_config(DEFENSES.get("ot-cla-adv"), "paper", None)["train"]
    assert resolve_adv("mnist", cfg)["adv_eps"] == 0.3 and resolve_adv("tiny-imagenet", cfg)["adv_eps"] == 0.01
    assert resolve_adv("mnist", {**cfg, "adv_eps": 0.25})["adv_eps"] == 0.25
    assert cfg["adv_steps"] * 0.01 == pytest.approx(cfg["adv_step_ratio"] * 0.3)  # Madry: 40 steps of 0.01
    assert [resolve_n_z(d, None) for d in ("mnist", "cifar10", "stl10", "tiny-imagenet")] == [4, 16, 16, 20]
    with pytest.raises(OTBenchError, match="digits"):
        resolve_adv("digits", cfg)


def test_mle_finds_the_dimension_of_a_5_manifold_in_50_dimensions():
    from otbench.defenses.ot_classifier.intrinsic import mle_intrinsic_dimension

    assert mle_intrinsic_dimension(_torus(5)) == pytest.approx(5, abs=0.75)
    dims = [mle_intrinsic_dimension(_torus(k, seed=k)) for k in (2, 5, 8)]
    assert dims[0] < dims[1] < dims[2] and dims[0] == pytest.approx(2, abs=0.3)


def test_knn_distances_match_a_brute_force_reference():
    from scipy.spatial.distance import cdist

    from otbench.defenses.ot_classifier.intrinsic import knn_distances

    x = np.random.default_rng(1).normal(size=(200, 30))
    ref = np.sort(cdist(x, x), axis=1)[:, 1:13]  # drop the zero distance to itself
    assert np.allclose(knn_distances(x, 12), ref, atol=1e-9)


def test_mle_rejects_bad_settings():
    from otbench.defenses.ot_classifier.intrinsic import mle_intrinsic_dimension

    with pytest.raises(OTBenchError, match="levina"):
        mle_intrinsic_dimension(_torus(2), estimator="mle")
    with pytest.raises(OTBenchError, match="duplicate"):
        mle_intrinsic_dimension(np.zeros((50, 3)))
