"""OTAD's MNIST baselines (issue 4, part A): pgd-at, fgsm-at, median-filter, stl, ape-gan.

Tiny real-MNIST models trained once per session (TINY_TRAIN's classifier is `standard`'s checkpoint), each
baseline checked for the property that makes it a defense, against a reference where one exists."""
import pytest
import torch

from otbench.attacks.fgsm import FGSM
from otbench.defense import build_config, create_defense
from otbench.registry import ATTACKS, DEFENSES

from support import TINY_TRAIN

NAMES = ("pgd-at", "fgsm-at", "median-filter", "stl", "ape-gan")
TINY_STL = {"stl_atoms": 8, "stl_learn_images": 300, "stl_learn_steps": 8, "stl_learn_batch": 32,
            "stl_learn_iterations": 10}
TINY_APE = {"ape_width": 8, "ape_lr": 5e-3, "ape_epochs": 1, "ape_batch_size": 16, "ape_train_images": 1000}


def robust_accuracy(defense, attack: str, eps: float, x, y, **cfg) -> float:
    adv = ATTACKS.get(attack)(defense, eps, **cfg)(x, y, seed=0).adv
    return float(((defense.predict(adv) == y) & (defense.predict(x) == y)).float().mean())


@pytest.fixture(scope="session")
def eval_batch(mnist):
    return mnist.x_test[:100], mnist.y_test[:100]


@pytest.fixture(scope="session")
def pgd_at(mnist):
    # the same config as tests/test_analyses.py's pgd-at: one checkpoint per session
    return create_defense("pgd-at", mnist, "quick", {"train": {**TINY_TRAIN, "adv_steps": 5}})


@pytest.fixture(scope="session")
def fgsm_at(mnist):
    return create_defense("fgsm-at", mnist, "quick", {"train": dict(TINY_TRAIN)})


@pytest.fixture(scope="session")
def median(mnist, standard):
    return create_defense("median-filter", mnist, "quick", {"train": dict(TINY_TRAIN), "defense": {"window": 3}})


@pytest.fixture(scope="session")
def stl(mnist, standard):
    return create_defense("stl", mnist, "quick", {"train": {**TINY_TRAIN, **TINY_STL}, "defense": {"iterations": 30}})


@pytest.fixture(scope="session")
def ape_gan(mnist, standard):
    return create_defense("ape-gan", mnist, "quick", {"train": {**TINY_TRAIN, **TINY_APE}})


def test_registered_with_presets_and_declared_capabilities(capsys):
    from otbench.cli import main

    for name in NAMES:
        cls = DEFENSES.get(name)
        assert {"paper", "quick"} <= set(cls.presets) and cls.surrogate_description
        assert not cls.randomized
    assert DEFENSES.get("ape-gan").differentiable and DEFENSES.get("fgsm-at").differentiable
    assert not DEFENSES.get("median-filter").differentiable and not DEFENSES.get("stl").differentiable
    assert main(["list", "defenses"]) == 0
    listed = capsys.readouterr().out
    assert all(f"  {name} " in listed for name in NAMES)
    # the paper presets are the papers' settings, not the quick ones
    assert build_config(DEFENSES.get("fgsm-at"), "paper", None)["train"]["adv_eps"] == 0.1  # OTAD V-C
    assert build_config(DEFENSES.get("ape-gan"), "paper", None)["train"]["train_size"] is None


def test_madry_override_selects_the_ot_classifier_setting():
    from otbench.baselines.pgd_at import MADRY_MNIST
    from otbench.config import config_hash

    paper = build_config(DEFENSES.get("pgd-at"), "paper", None)["train"]
    madry = build_config(DEFENSES.get("pgd-at"), "paper", MADRY_MNIST)["train"]
    assert paper["adv_eps"] == 0.1 and madry["adv_eps"] == 0.3
    # Madry et al. on MNIST: 40 steps of 0.01
    assert madry["adv_steps"] == 40
    assert madry["adv_step_ratio"] * madry["adv_eps"] / madry["adv_steps"] == pytest.approx(0.01)
    assert config_hash(paper) != config_hash(madry)  # its own checkpoint


def test_pgd_at_is_more_robust_to_pgd_than_the_standard_net(pgd_at, standard, eval_batch):
    x, y = eval_batch
    cfg = {"norm": "Linf", "steps": 10}
    assert pgd_at.train_record["test_accuracy"] > 0.8
    std, adv_trained = (robust_accuracy(d, "pgd", 0.1, x, y, **cfg) for d in (standard, pgd_at))
    assert adv_trained > std + 0.15, (adv_trained, std)


def test_fgsm_training_examples_are_fgsm_and_keep_the_clean_share(standard, eval_batch):
    """The goodfellow hook against the harness's own FGSM attack: same examples, first half left clean."""
    from otbench.baselines.fgsm_at import FGSM_ADV, fgsm_perturbation

    x, y = eval_batch[0][:40], eval_batch[1][:40]
    net = standard.net
    out = fgsm_perturbation({**FGSM_ADV, "adv_eps": 0.2})(net, x, y)
    assert net.training  # the hook leaves the network in train mode (for the training step)
    net.eval()
    reference = FGSM(standard, 0.2)(x[20:], y[20:], seed=0).adv
    assert torch.equal(out[:20], x[:20])
    assert torch.allclose(out[20:], reference, atol=1e-6)
    wong = fgsm_perturbation({**FGSM_ADV, "fgsm_variant": "wong", "adv_clean_fraction": 0.0})(net, x, y)
    net.eval()
    assert (wong - x).abs().max() <= 0.1 + 1e-6 and not torch.equal(wong, out)


def test_fgsm_at_is_more_robust_to_fgsm_than_the_standard_net(fgsm_at, standard, eval_batch):
    x, y = eval_batch
    std, adv_trained = (robust_accuracy(d, "fgsm", 0.1, x, y) for d in (standard, fgsm_at))
    assert adv_trained > std + 0.1, (adv_trained, std)


def test_median_filter_matches_art_spatial_smoothing(mnist):
    from art.defences.preprocessor import SpatialSmoothing

    from otbench.baselines.median_filter import median_filter

    x = mnist.x_test[:20]
    x = x + 0.3 * torch.rand_like(x)  # break ties: every rank matters
    for window in (2, 3, 4):
        ref, _ = SpatialSmoothing(window_size=window, channels_first=True)(x.numpy())
        assert torch.equal(median_filter(x, window), torch.from_numpy(ref)), window


def test_median_filter_removes_salt_and_pepper_noise(median, eval_batch):
    x, y = eval_batch
    gen = torch.Generator().manual_seed(0)
    u = torch.rand(x.shape, generator=gen)
    noisy = torch.where(u < 0.05, 0.0, torch.where(u > 0.95, 1.0, x))  # 10% of the pixels flipped
    before = (noisy - x).flatten(1).norm(dim=1)
    after = (median.purify(noisy) - x).flatten(1).norm(dim=1)
    assert (after < before).all() and after.mean() < 0.5 * before.mean()
    with torch.no_grad():  # and the classifier behind the filter does better than on the noisy images
        unfiltered = float((median.net(noisy).argmax(1) == y).float().mean())
    assert float((median.predict(noisy) == y).float().mean()) > unfiltered


def test_purifier_bpda_surrogate_is_the_classifier_at_the_purified_point(median, eval_batch):
    x = eval_batch[0][:8].clone().requires_grad_(True)
    sur = median.surrogate()
    out = sur(x)
    with torch.no_grad():
        assert torch.allclose(out, median.logits(x))
    (grad,) = torch.autograd.grad(out[:, 0].sum(), x)
    p = median.purify(x.detach()).requires_grad_(True)
    (ref,) = torch.autograd.grad(median.net(p)[:, 0].sum(), p)
    assert torch.allclose(grad, ref)


def test_stl_codes_are_sparse_and_remove_perturbation_energy(stl, standard, eval_batch):
    x, y = eval_batch[0][:40], eval_batch[1][:40]
    low, z = stl.codes(x)
    assert (z != 0).float().mean() < 0.1  # sparse: most coefficients are exactly zero
    clean = stl.purify(x)
    assert float((clean - x).norm() / x.norm()) < 0.3  # clean images are kept
    assert float((stl.predict(x) == y).float().mean()) > 0.8
    # adversarial noise (PGD on the undefended classifier) is mostly not representable by the dictionary
    adv = ATTACKS.get("pgd")(standard, 0.1, norm="Linf", steps=10)(x, y, seed=0).adv
    ratio = (stl.purify(adv) - clean).flatten(1).norm(dim=1) / (adv - x).flatten(1).norm(dim=1)
    assert (ratio < 1).all() and ratio.mean() < 0.8, ratio


def test_ape_gan_generator_moves_fgsm_examples_back_to_the_clean_images(ape_gan, eval_batch):
    from otbench.common.adversarial import pgd_examples

    x, y = eval_batch
    adv = pgd_examples(ape_gan.net, x, y, "Linf", 0.3, 1, 1.0, False)  # the examples it is trained on
    with torch.no_grad():
        restored = ape_gan.purify(adv)
    before, after = ((a - x).flatten(1).norm(dim=1) for a in (adv, restored))
    assert after.mean() < 0.85 * before.mean()
    assert float((ape_gan.predict(adv) == y).float().mean()) > float((ape_gan.net(adv).argmax(1) == y).float().mean())
    # differentiable end to end: a real gradient through the generator
    xg = x[:4].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(ape_gan.module()(xg).logsumexp(1).sum(), xg)
    assert g.abs().sum() > 0
