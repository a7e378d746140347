"""Purification baselines: median filter, STL, APE-GAN and DiffPure."""
from __future__ import annotations

import pytest
import torch
from support import DIFFPURE_TINY, TINY_TRAIN

from otbench.defense import create_defense
from otbench.registry import ATTACKS

TINY_APE = {"ape_width": 8, "ape_lr": 5e-3, "ape_epochs": 1, "ape_batch_size": 16, "ape_train_images": 1000}


@pytest.fixture(scope="session")
def ape_gan(mnist, standard):
    return create_defense("ape-gan", mnist, "quick", {"train": {**TINY_TRAIN, **TINY_APE}})


@pytest.fixture(scope="session")
def diffpure(mnist):
    from otbench.defense import create_defense

    return create_defense("diffpure", mnist, "quick", DIFFPURE_TINY)


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


def test_diffpure_score_training_lowers_the_dsm_loss(diffpure):
    losses = diffpure.train_record["score"]["dsm_loss_per_epoch"]
    assert len(losses) == 3 and losses[-1] < 0.8 * losses[0]


def test_diffpure_purifies_toward_the_clean_image_and_is_random(diffpure, test_batch):
    x = test_batch[0][:16]
    torch.manual_seed(0)
    noisy = (x + 0.3 * torch.randn_like(x)).clamp(0, 1)
    with torch.no_grad():
        purified = diffpure.purify(noisy)
        again = diffpure.purify(noisy)
        l1, l2 = diffpure.logits(x), diffpure.logits(x)
    dist = lambda u: (u - x).flatten(1).norm(dim=1)  # noqa: E731
    assert dist(purified).mean() < 0.95 * dist(noisy).mean() and (dist(purified) < dist(noisy)).float().mean() > 0.75
    assert not torch.equal(purified, again) and not torch.equal(l1, l2)


def test_diffpure_gradients_flow_through_the_solver_and_bpda_uses_the_identity(diffpure, test_batch):
    x, y = test_batch[0][:4], test_batch[1][:4]
    xg = x.clone().requires_grad_(True)
    torch.manual_seed(1)
    loss = torch.nn.functional.cross_entropy(diffpure.exact_module()(xg), y)
    (g_exact,) = torch.autograd.grad(loss, xg)
    xs = x.clone().requires_grad_(True)
    (g_bpda,) = torch.autograd.grad(torch.nn.functional.cross_entropy(diffpure.surrogate()(xs), y), xs)
    (g_cls,) = torch.autograd.grad(torch.nn.functional.cross_entropy(diffpure.classifier(xs), y), xs)
    assert torch.isfinite(g_exact).all() and g_exact.abs().sum() > 0
    assert torch.allclose(g_bpda, g_cls) and not torch.allclose(g_exact, g_bpda, atol=1e-6)
