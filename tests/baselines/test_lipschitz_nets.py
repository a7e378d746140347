"""The certified 1-Lipschitz baselines: the l-inf-dist net and SOC+."""
from __future__ import annotations

import math

import pytest
import torch
from support import DIFFPURE_TINY

from otbench.baselines.linf_dist import LinfDist, LinfDistNet, lp_dist, margin_radius
from otbench.baselines.soc import SOC, HouseHolder, LipConvNet
from otbench.registry import DEFENSES

LINF_TINY = {"depth": 3, "width": 32, "epochs": 2, "p_warm_epochs": 0, "p_end_epoch": 1, "batch_size": 128,
             "train_size": 2000}


SOC_TINY = {"num_layers": 5, "init_channels": 4, "epochs": 1, "batch_size": 64, "train_size": 512}


@pytest.fixture(scope="session")
def linf_net(mnist):
    from otbench.defense import create_defense

    return create_defense("linf-dist-net", mnist, "quick", {"train": LINF_TINY})


@pytest.fixture(scope="session")
def soc_net(mnist):
    import otbench.baselines.soc as soc_module
    from otbench.defense import create_defense

    soc_module.RECORD_TEST_N = 500  # SOC's 15-term evaluation is slow on a CPU: the record on 500 test points
    try:
        return create_defense("soc-plus", mnist, "quick", {"train": SOC_TINY})
    finally:
        soc_module.RECORD_TEST_N = None


@pytest.fixture(scope="session")
def diffpure(mnist):
    from otbench.defense import create_defense

    return create_defense("diffpure", mnist, "quick", DIFFPURE_TINY)


def pgd_within(model, x, y, radius, norm, steps=30):
    """PGD on the cross-entropy with a per-sample radius (the certificates differ per sample)."""
    r = radius.view(-1, *([1] * (x.dim() - 1)))
    delta = torch.zeros_like(x)
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(x + delta), y)
        (g,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            if norm == "Linf":
                delta = (delta + 0.25 * r * g.sign()).clamp(-r, r)
            else:
                g = g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view_as(r)
                delta = delta + 0.25 * r * g
                delta = delta * (r / delta.flatten(1).norm(dim=1).clamp_min(1e-12).view_as(r)).clamp(max=1)
            delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()


def test_defenses_are_registered_with_both_presets_and_declared_capabilities():
    for name in ("linf-dist-net", "soc-plus", "diffpure"):
        cls = DEFENSES.get(name)
        assert {"paper", "quick"} <= set(cls.presets) and cls.surrogate_description
    assert DEFENSES.get("diffpure").randomized and not DEFENSES.get("linf-dist-net").randomized


def test_lp_relaxation_matches_cdist_and_tends_to_linf():
    torch.manual_seed(0)
    x, w = torch.rand(6, 50), torch.randn(7, 50)
    assert torch.allclose(lp_dist(x, w, 8.0), torch.cdist(x, w, p=8.0), rtol=1e-4)
    inf = lp_dist(x, w, math.inf)
    assert torch.allclose(inf, (x[:, None] - w[None]).abs().amax(2))
    big = lp_dist(x * 40, w * 40, 1000.0)  # entries far above 1: the naive sum of d^1000 overflows float32
    assert torch.isfinite(big).all() and torch.allclose(big, lp_dist(x * 40, w * 40, math.inf), rtol=0.01)


def test_linf_dist_layer_is_1_lipschitz_in_linf_on_random_and_adversarial_pairs():
    torch.manual_seed(0)
    layer = LinfDist(20, 30).eval()
    layer.running_mean.normal_()
    a, b = torch.rand(500, 20), torch.rand(500, 20)
    ratio = (layer(a) - layer(b)).abs().amax(1) / (a - b).abs().amax(1)
    assert ratio.max() <= 1 + 1e-5
    # adversarial pairs: gradient ascent on the ratio from nearby starting points
    a = torch.rand(64, 20, requires_grad=True)
    b = (a.detach() + 0.01 * torch.randn(64, 20)).requires_grad_(True)
    opt = torch.optim.Adam([a, b], lr=1e-3)
    for _ in range(200):
        r = (layer(a) - layer(b)).abs().amax(1) / (a - b).abs().amax(1).clamp_min(1e-9)
        opt.zero_grad()
        (-r.sum()).backward()
        opt.step()
    r = ((layer(a) - layer(b)).abs().amax(1) / (a - b).abs().amax(1)).detach()
    assert r.max() <= 1 + 1e-5 and r.max() > 0.99  # the bound holds and is tight (the attack reached it)
    net = LinfDistNet(20, 5, 3, 16).eval()
    a, b = torch.rand(300, 20), torch.rand(300, 20)
    assert ((net(a) - net(b)).abs().amax(1) <= (a - b).abs().amax(1) + 1e-5).all()


def test_linf_dist_net_learns_and_its_certified_radius_holds_against_pgd(linf_net, test_batch):
    x, y = test_batch
    assert linf_net.train_record["test_accuracy"] > 0.5
    pred = linf_net.predict(x)
    radius = linf_net.certified_radius(x)
    assert torch.allclose(radius, margin_radius(linf_net.logits(x)).detach()) and (radius > 0).all()
    model = linf_net.module()
    for norm in ("Linf", "L2"):  # ||d||_inf <= ||d||_2: the l-inf radius also certifies l2
        adv = pgd_within(model, x, pred, 0.98 * radius, norm)
        assert torch.equal(linf_net.predict(adv), pred)
    # the attack is not idle: within the radius it eats into the margin, never beyond the Lipschitz bound
    adv = pgd_within(model, x, pred, 0.98 * radius, "Linf")
    drop = radius - margin_radius(linf_net.logits(adv)).detach()
    assert (drop <= 0.98 * radius + 1e-4).all() and drop.mean() > 0.2 * radius.mean()


@pytest.mark.parametrize("c_in,c_out,k,stride", [(4, 4, 3, 1), (4, 16, 3, 2), (8, 8, 1, 1)])
def test_soc_layer_is_orthogonal(c_in, c_out, k, stride):
    torch.manual_seed(0)
    layer = SOC(c_in, c_out, k, stride).eval()
    with torch.no_grad():
        layer.weight.mul_(5)  # far from the identity
    layer.power_iteration(50)
    lin = lambda t: layer(t) - layer.bias.view(1, -1, 1, 1)  # noqa: E731  (the linear part)
    x = torch.randn(8, c_in, 6, 6)
    ratio = lin(x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)
    assert (ratio - 1).abs().max() < 1e-4
    if stride == 1:
        assert (lin(x) - x).abs().max() > 0.1  # and not the identity
    jac = torch.autograd.functional.jacobian(lambda t: lin(t.view(1, c_in, 4, 4)).flatten(), torch.randn(c_in * 16))
    assert torch.allclose(jac @ jac.T, torch.eye(jac.shape[0]), atol=1e-4)


def test_householder_activation_is_norm_preserving_1_lipschitz_and_maxmin_at_init():
    torch.manual_seed(0)
    hh = HouseHolder(6)
    z = torch.randn(200, 6, 3, 3)
    a, b = z.chunk(2, dim=1)
    assert torch.allclose(hh(z), torch.cat([torch.minimum(a, b), torch.maximum(a, b)], 1), atol=1e-6)  # theta = pi/2
    with torch.no_grad():
        hh.theta.uniform_(0, 2 * math.pi)
    assert torch.allclose(hh(z).flatten(1).norm(dim=1), z.flatten(1).norm(dim=1), atol=1e-5)
    w = z + 0.05 * torch.randn_like(z)  # close pairs: many straddle a reflection boundary
    assert ((hh(z) - hh(w)).flatten(1).norm(dim=1) <= (z - w).flatten(1).norm(dim=1) + 1e-5).all()


def test_lipconvnet_features_are_lipschitz_and_soc_certificate_holds_against_pgd(soc_net, test_batch):
    torch.manual_seed(0)
    net = LipConvNet(5, 4, 10).eval()
    a, b = torch.rand(16, 1, 28, 28), torch.rand(16, 1, 28, 28)
    feats = lambda t: net.features(torch.nn.functional.pad((t - 0.1307) / 0.3081, (2, 2, 2, 2)))  # noqa: E731
    assert ((feats(a) - feats(b)).flatten(1).norm(dim=1) <= (a - b).flatten(1).norm(dim=1) / 0.3081 + 1e-3).all()
    x = test_batch[0][:12]  # SOC's 15-term evaluation is slow on a CPU: few images, few steps
    assert soc_net.train_record["test_accuracy_n"] == 500  # 8 steps: learning is not the point here
    pred, radius = soc_net.predict(x), soc_net.certified_radius(x)
    assert (radius > 0).all()
    model = soc_net.module()
    adv = pgd_within(model, x, pred, 0.98 * radius, "L2", steps=10)
    assert torch.equal(soc_net.predict(adv), pred)
    new = soc_net.net.certificates(soc_net.logits(adv), pred).detach()
    assert (new < radius).float().mean() > 0.8  # the attack moved toward the boundary, as far as it may
    adv = pgd_within(model, x, pred, 4 * radius, "L2", steps=20)  # beyond the certificate PGD does succeed
    assert (soc_net.predict(adv) != pred).any()


# -- preset `cpu` (issue 20): the paper's recipe on the model a CPU can train, marked in every table -------------
@pytest.mark.parametrize("name, differs", [
    ("soc-plus", {"num_layers": 10, "init_channels": 16, "epochs": 10}),
    ("linf-dist-net", {"width": 256, "epochs": 40, "p_warm_epochs": 1, "p_end_epoch": 8}),
])
def test_cpu_preset_is_the_paper_recipe_on_a_smaller_model_and_schedule(name, differs):
    from otbench.defense import build_config

    cls = DEFENSES.get(name)
    paper, cpu = build_config(cls, "paper", None)["train"], build_config(cls, "cpu", None)["train"]
    assert {k: v for k, v in cpu.items() if paper[k] != v} == differs
    assert cpu["train_size"] is None  # all 60,000 training points, as the paper


def test_cpu_rows_are_marked_as_such_never_as_the_papers():
    from otbench.defense import preset_note
    from otbench.report.render import fallback_note

    note = fallback_note(["cpu"], "paper")
    assert "[preset cpu]" in note and "never the paper's" in note and preset_note("cpu") in note
    assert "LipConvNet-10 with 16 channels" in note and "width 256" in note


@pytest.mark.parametrize("name, setting, value, expected", [
    ("soc-plus", "num_layers", 7, "multiple of 5"),
    ("soc-plus", "train_terms", 20, "train_terms must be <= eval_terms"),
    ("soc-plus", "gamma", -0.5, "gamma"),
    ("linf-dist-net", "p_start", 0.5, "p_start"),
    ("linf-dist-net", "hinge_mix", 1.5, "hinge_mix"),
    ("linf-dist-net", "p_end_epoch", 50, "p_end_epoch"),  # beyond the 40 epochs
])
def test_bad_lipschitz_settings_are_refused_in_one_line_before_any_work(name, setting, value, expected):
    from otbench.defense import build_config
    from otbench.errors import OTBenchError

    with pytest.raises(OTBenchError, match=expected) as err:
        build_config(DEFENSES.get(name), "cpu", {"train": {setting: value}})
    assert "\n" not in str(err.value)


def test_a_killed_linf_dist_training_resumes_to_the_unbroken_weights(mnist, tmp_path, capsys):
    """The per-step p and lr schedule restarts from the saved epoch exactly (training.py keeps the epochs)."""
    from otbench.baselines.linf_dist import train_linf_dist
    from otbench.defense import build_config
    from otbench.training import _RESUME

    cfg = build_config(DEFENSES.get("linf-dist-net"), "cpu",
                       {"train": {"depth": 2, "width": 16, "epochs": 3, "p_end_epoch": 2, "batch_size": 128}})["train"]
    data = mnist.take_train(512)

    def run():
        token = _RESUME.set(tmp_path / "l.partial")
        try:
            return train_linf_dist(data, cfg, torch.device("cpu"), progress=False)
        finally:
            _RESUME.reset(token)

    unbroken = run()
    capsys.readouterr()
    resumed = run()  # a run killed in its last epoch: starts at epoch 2 (p already inf, lr mid-cosine)
    assert "resuming train linf-dist-net on mnist at epoch 2" in capsys.readouterr().err
    assert all(torch.equal(p, q) for p, q in zip(unbroken.state_dict().values(), resumed.state_dict().values()))
