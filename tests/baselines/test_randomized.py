"""The randomized baselines of the OT-Classifier paper: RSE and Defense-GAN."""
from __future__ import annotations

import pytest
import torch

from otbench.baselines.defense_gan import (
    Critic,
    critic_grad_norm,
    interpolates,
    reconstruct,
)
from otbench.baselines.mnist_cnn import GaussianNoise
from otbench.common.adversarial import pgd_examples
from otbench.errors import OTBenchError
from otbench.registry import ATTACKS, DEFENSES

TINY_CNN = {"channels": [8, 16], "hidden": 32, "epochs": 2, "batch_size": 64, "lr": 3e-3, "train_size": 2000,
            "seed": 0}


TINY_GAN = {"gan_arch": "mlp", "gan_dim": 64, "gan_steps": 150, "gan_batch_size": 50, "critic_steps": 5,
            "gp_lambda": 10.0, "gan_lr": 1e-3, "gan_train_size": 2000, "gan_seed": 0}


def _rse(mnist, ensemble):
    from otbench.defense import create_defense

    return create_defense("rse", mnist, "quick", {"train": dict(TINY_CNN), "defense": {"ensemble": ensemble}})


@pytest.fixture(scope="session")
def rse(mnist):
    return _rse(mnist, 8)


@pytest.fixture(scope="session")
def defense_gan(mnist):
    from otbench.defense import create_defense

    return create_defense("defense-gan", mnist, "quick", {"train": {**TINY_CNN, **TINY_GAN},
                                                          "defense": {"rec_steps": 30, "restarts": 2}})


def test_declared_capabilities_and_presets():
    for name, differentiable in (("rse", True), ("defense-gan", False)):
        cls = DEFENSES.get(name)
        assert cls.randomized and cls.differentiable is differentiable and cls.surrogate_description
        assert {"paper", "quick"} <= set(cls.presets)
    assert DEFENSES.get("defense-gan").presets["paper"]["defense"]["rec_steps"] == 200  # L of the paper
    assert DEFENSES.get("defense-gan").presets["paper"]["defense"]["restarts"] == 10  # R of the paper


def test_rse_noise_is_on_at_test_time_before_every_conv(rse, test_batch):
    layers = list(rse.net.features)
    convs = [i for i, m in enumerate(layers) if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(isinstance(layers[i - 1], GaussianNoise) for i in convs)
    assert [m.std for m in rse.net.noise_layers] == [0.2, 0.1]
    assert not rse.net.training
    x = test_batch[0][:8]
    with torch.no_grad():
        assert not torch.allclose(rse.net(x), rse.net(x))  # one eval-mode network, two different outputs
        quiet = rse.surrogate()  # the same weights with the noise off: deterministic
        assert torch.equal(quiet(x), quiet(x))


def test_rse_outputs_vary_and_the_ensemble_reduces_the_variance(mnist, rse, test_batch):
    x = test_batch[0][:16]
    single = _rse(mnist, 1)  # same trained network (same train config), one noisy pass per call
    with torch.no_grad():
        runs = {k: torch.stack([d.logits(x).exp() for _ in range(12)]) for k, d in ((1, single), (8, rse))}
    var = {k: float(p.var(0).mean()) for k, p in runs.items()}
    assert var[1] > 0 and var[8] > 0  # outputs vary between calls
    assert var[8] < var[1] / 3  # ~1/8 expected for the mean of 8 independent passes
    clean = {k: float((d.predict(test_batch[0]) == test_batch[1]).float().mean()) for k, d in ((1, single), (8, rse))}
    assert clean[8] > 0.6


def test_rse_gets_eot_from_the_runner(rse, tmp_path):
    from otbench.data import eval_subset
    from otbench.plan import evaluate_defense
    from otbench.store import ResultStore

    store = ResultStore(tmp_path / "r.sqlite")
    result = evaluate_defense(rse, {"pgd": [0.3]}, eval_subset(len(rse.data.x_test), 4, 0), store,
                       {"steps": 2}, progress=False)
    cell = next(c for c in store.cells() if c["cell_id"] == result.cells[0].cell_id)
    assert cell["attack_config"]["eot_samples"] == 20
    assert any(f.code == "randomized" and f.level == "info" for f in result.flags)


@pytest.mark.slow
def test_gradient_penalty_keeps_the_critic_gradient_norm_near_one(defense_gan, mnist):
    real = mnist.x_test[:200]
    with torch.no_grad():
        fake = defense_gan.generator(torch.randn(200, defense_gan.config["train"]["latent_dim"],
                                                 generator=torch.Generator().manual_seed(0)))
    points = interpolates(real, fake, torch.Generator().manual_seed(0))
    trained = critic_grad_norm(defense_gan.critic, points)
    torch.manual_seed(0)
    untrained = critic_grad_norm(Critic(TINY_GAN["gan_dim"], "mlp"), points)
    assert abs(float(trained.mean()) - 1) < 0.3, trained.mean()
    assert abs(float(untrained.mean()) - 1) > 0.5  # what the penalty had to correct: the test can fail


def test_defense_gan_reconstruction_removes_the_adversarial_perturbation(defense_gan, test_batch):
    x, y = test_batch[0][:16], test_batch[1][:16]
    # a large budget: the session GAN is trained for a minute, so it projects clean digits only to within L2 ~6
    # (the quick preset's GAN: ~5), more than a Linf 0.3 perturbation's L2 norm
    torch.manual_seed(0)
    adv = pgd_examples(defense_gan.classifier, x, y, "Linf", 0.5, 10)
    torch.manual_seed(0)
    rec = reconstruct(defense_gan.generator, adv, 100, 4, 10.0, 0.7, defense_gan.config["train"]["latent_dim"])
    to_clean = (rec - x).flatten(1).norm(dim=1)
    perturbation = (adv - x).flatten(1).norm(dim=1)
    assert float(to_clean.mean()) < float(perturbation.mean())
    assert (to_clean < perturbation).float().mean() >= 0.75


def test_defense_gan_is_randomized_and_its_bpda_backward_is_the_identity(defense_gan, test_batch):
    x, y = test_batch[0][:6], test_batch[1][:6]
    assert not torch.equal(defense_gan.project(x), defense_gan.project(x))  # random restarts
    xg = x.clone().requires_grad_(True)
    torch.manual_seed(1)
    loss = torch.nn.functional.cross_entropy(defense_gan.surrogate()(xg), y)
    (grad,) = torch.autograd.grad(loss, xg)
    torch.manual_seed(1)
    rec = defense_gan.project(x).requires_grad_(True)  # the same restarts: the same projection
    (expected,) = torch.autograd.grad(torch.nn.functional.cross_entropy(defense_gan.classifier(rec), y), rec)
    assert grad.abs().sum() > 0 and torch.allclose(grad, expected, atol=1e-6)
    with pytest.raises(OTBenchError, match="not differentiable"):
        ATTACKS.get("cw-l2")(defense_gan, 0.005)
    out = ATTACKS.get("bpda-cw-l2")(defense_gan, 0.2, steps=20, binary_search_steps=1, c=1.0)(x, y)
    assert ((out.adv - x).flatten(1).norm(dim=1) / 28 <= 0.2 + 1e-6).all()
