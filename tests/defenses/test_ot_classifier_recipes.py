"""The OT-Classifier family's `paper` presets are the authors' recipe (ER-Classifier's train_ot.py,
setup_ot_mnist.py, setup_pgd.py, utils.py; Madry's MNIST challenge for the CNN baselines), their training loop
updates what the recipe says on real MNIST, bad settings are refused before any work, and a killed run resumes."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from support import needs_mnist

from otbench.errors import OTBenchError


def paper(name: str, **train) -> dict:
    from otbench.defense import build_config
    from otbench.registry import DEFENSES

    return build_config(DEFENSES.get(name), "paper", {"train": train} if train else None)["train"]


def shapes(module: torch.nn.Module) -> list[tuple[int, ...]]:
    return [tuple(p.shape) for p in module.parameters()]


@needs_mnist
def test_paper_networks_are_the_authors_mnist_networks(mnist):
    from otbench.defenses.ot_classifier.networks import BasicCNN, Signed
    from otbench.defenses.ot_classifier.train import build_net

    net = build_net(mnist, paper("ot-cla"), "ot-cla")
    # setup_ot_mnist.py's Encoder(dim_h=128, n_z=4): 4 bias-free 4x4 convolutions, BatchNorm after the last three
    assert shapes(net.encoder) == [(128, 1, 4, 4), (256, 128, 4, 4), (256,), (256,), (512, 256, 4, 4), (512,), (512,),
                                   (1024, 512, 4, 4), (1024,), (1024,), (4, 1024), (4,)]
    assert isinstance(net.encoder.trunk[0], Signed)  # utils.py: MNIST normalised to [-1, 1]
    assert torch.equal(net.encoder.trunk[0](torch.tensor([0.0, 0.5, 1.0])), torch.tensor([-1.0, 0.0, 1.0]))
    # SmallCNN(n_z=4): 500 and 256 with BatchNorm1d
    assert shapes(net.classifier) == [(500, 4), (500,), (500,), (500,), (256, 500), (256,), (256,), (256,), (10, 256),
                                      (10,)]
    # Discriminator(dim_h=128): 4 layers of 512, then 1
    assert shapes(net.critic) == [(512, 4), (512,), *[(512, 512), (512,)] * 3, (1, 512), (1,)]
    cnn = build_net(mnist, paper("cnn-pgd-at"), "cnn")
    assert isinstance(cnn, BasicCNN)  # setup_ot_mnist.py's BasicCNN
    assert shapes(cnn) == [(20, 1, 5, 5), (20,), (50, 20, 5, 5), (50,), (500, 800), (500,), (10, 500), (10,)]


def test_paper_optimisers_schedule_and_attack_are_the_authors():
    from otbench.defenses.ot_classifier.train import build_net, build_optimisers

    class Mnist:  # the shape facts build_net reads (no data needed)
        name, input_shape, num_classes = "mnist", (1, 28, 28), 10

    cfg = paper("ot-cla-adv")
    net = build_net(Mnist, cfg, "ot-cla")
    opts = build_optimisers(net, cfg)
    # train_ot.py: Adam (default betas) at lr = 1e-4 for the encoder, 0.5 lr the critic, 0.05 lr the classifier
    found = {name: (opt.param_groups[0]["lr"], opt.param_groups[0]["betas"], len(opt.param_groups[0]["params"]))
             for name, opt in opts.opts.items()}
    assert found == {"encoder": (1e-4, (0.9, 0.999), len(list(net.encoder.parameters()))),
                     "classifier": (pytest.approx(5e-6), (0.9, 0.999), len(list(net.classifier.parameters()))),
                     "critic": (pytest.approx(5e-5), (0.9, 0.999), len(list(net.critic.parameters())))}
    assert (cfg["epochs"], cfg["batch_size"], cfg["seed"], cfg["train_size"]) == (30, 100, 123, None)
    assert (cfg["lam"], cfg["lam_class"], cfg["lam_encoder"], cfg["sigma"], cfg["clip"]) == (1.0, 1.0, 0.0005, 1, 0.01)
    # eps 0.6, a = 0.02, k = 40 on [-1, 1] inputs: eps 0.3, step 0.01 on [0, 1]; from the first epoch
    from otbench.defenses.ot_classifier.settings import resolve_adv

    adv = resolve_adv("mnist", cfg)
    assert (adv["adv_norm"], adv["adv_eps"], adv["adv_steps"], adv["adv_random_start"], adv["adv_delay"]) == \
        ("Linf", 0.3, 40, True, 0)
    assert adv["adv_step_ratio"] * adv["adv_eps"] / adv["adv_steps"] == pytest.approx(0.01)
    # Madry's MNIST challenge: Adam 1e-4, batch 50, >= 100,000 steps, the same PGD
    madry = resolve_adv("mnist", paper("cnn-pgd-at"))
    assert (madry["lr"], madry["beta1"], madry["batch_size"], madry["adv_eps"], madry["adv_steps"]) == \
        (1e-4, 0.9, 50, 0.3, 40)
    assert 100_000 <= madry["epochs"] * 60_000 // madry["batch_size"] < 100_000 + 60_000 // 50
    assert madry["adv_step_ratio"] * madry["adv_eps"] / madry["adv_steps"] == pytest.approx(0.01)


def adam_steps(opt: torch.optim.Optimizer) -> int:
    return int(next(iter(opt.state.values()))["step"])


@needs_mnist
@pytest.mark.parametrize("adversarial", [False, True])
def test_paper_loop_takes_the_authors_steps_and_learns_on_real_mnist(mnist, adversarial):
    """Per batch: one classifier step; encoder steps 2 (cross-entropy, then + critic), 3 with PGD; critic steps 1, 2
    with PGD, clipped; the PGD examples attack the network's predicted labels; cross-entropy falls."""
    from otbench.common.adversarial import pgd_perturbation
    from otbench.defenses.ot_classifier.settings import resolve_adv
    from otbench.defenses.ot_classifier.train import algorithm_one_step, build_net, build_optimisers

    # the paper recipe on narrower convolutions (the recipe, not the width, is under test)
    cfg = resolve_adv("mnist", paper("ot-cla-adv", channels=[8, 16, 32, 64], adv_steps=3))
    torch.manual_seed(0)
    net = build_net(mnist, cfg, "ot-cla").train()
    opts = build_optimisers(net, cfg)
    attacked = []
    real = pgd_perturbation(cfg)

    def perturb(model, x, y):  # the real PGD hook, its labels recorded
        attacked.append((y, model(x).argmax(1)))
        return real(model, x, y)

    step = algorithm_one_step(net, opts, cfg, torch.Generator().manual_seed(0), perturb if adversarial else None)
    x, y = mnist.x_train[:3000], mnist.y_train[:3000]
    losses = [step(x[i:i + 100], y[i:i + 100], epoch=0).item() for i in range(0, 3000, 100)]
    batches = len(losses)
    assert adam_steps(opts["classifier"]) == batches
    assert adam_steps(opts["encoder"]) == (3 if adversarial else 2) * batches
    assert adam_steps(opts["critic"]) == (2 if adversarial else 1) * batches
    assert max(p.abs().max().item() for p in net.critic.parameters()) <= cfg["clip"]
    assert all(p.requires_grad for p in net.parameters())  # nothing left frozen
    # at lr 1e-4 (classifier 5e-6): 2.35 -> 2.05 in 30 batches clean, -> 2.21 on (clean + PGD) / 2
    assert sum(losses[-5:]) / 5 < (0.97 if adversarial else 0.93) * sum(losses[:5]) / 5, losses
    if adversarial:
        labels, predicted = attacked[-1]
        assert torch.equal(labels, predicted) and not torch.equal(labels, y[-100:])  # predictions, not labels


@needs_mnist
def test_the_encoder_step_adds_the_critic_gradient_to_the_cross_entropy_one(mnist):
    """train_ot.py zeroes gradients once per batch: the encoder's critic step sees cross-entropy + critic."""
    import copy

    from otbench.defenses.ot_classifier.train import algorithm_one_step, build_net, build_optimisers

    xb, yb = mnist.x_train[:100], mnist.y_train[:100]
    cfg = paper("ot-cla", channels=[8, 16], lam_encoder=0.0)  # lambda1 = 0: the critic adds exactly nothing
    torch.manual_seed(0)
    net = build_net(mnist, cfg, "ot-cla").train()
    before = copy.deepcopy(net)
    F.cross_entropy(before(xb), yb).backward()
    step = algorithm_one_step(net, build_optimisers(net, cfg), cfg, torch.Generator().manual_seed(0))
    step(xb, yb, epoch=0)
    # what the encoder's last step used is still the batch's cross-entropy gradient, not zero
    for p, q in zip(net.encoder.parameters(), before.encoder.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-7), (p.shape, (p.grad - q.grad).abs().max())


@pytest.mark.parametrize("name, setting, value, expected", [
    ("ot-cla", "input_range", "rgb", "input_range"),
    ("ot-cla", "hidden", 64, "hidden"),
    ("ot-cla", "channels", [], "channels"),
    ("ot-cla", "beta1", 1.0, "beta1"),
    ("ot-cla", "lam_encoder", -1.0, "lam_encoder"),
    ("ot-cla", "clip", 0.0, "clip"),
    ("ot-cla-adv", "adv_delay", 30, "adv_delay"),
    ("ot-cla-adv", "adv_norm", "L1", "adv_norm"),
    ("ot-cla-adv", "adv_eps", float("nan"), "must be a finite number"),
    ("cnn-pgd-at", "arch", "resnet", "arch"),
    ("cnn-standard", "channels", [20, 50, 80], "basic-cnn"),
])
def test_bad_training_settings_are_refused_in_one_line_before_any_work(name, setting, value, expected):
    with pytest.raises(OTBenchError, match=expected) as err:
        paper(name, **{setting: value})
    assert "\n" not in str(err.value)


@needs_mnist
def test_a_killed_ot_cla_training_resumes_to_the_unbroken_weights(mnist, tmp_path, capsys):
    """Three optimisers and the critic's prior draws are saved with each finished epoch (training.py)."""
    from otbench.defenses.ot_classifier.train import train_net
    from otbench.training import _RESUME

    cfg = paper("ot-cla", channels=[8, 16], hidden=[32], epochs=3, batch_size=100)
    data = mnist.take_train(600)

    def run(partial):
        token = _RESUME.set(partial)
        try:
            return train_net(data, cfg, torch.device("cpu"), "ot-cla", progress=False)
        finally:
            _RESUME.reset(token)

    unbroken = run(tmp_path / "a.partial")
    assert torch.load(tmp_path / "a.partial", weights_only=True)["epoch"] == 2
    capsys.readouterr()
    resumed = run(tmp_path / "a.partial")  # a run killed in its last epoch: starts at epoch 2 from the saved state
    assert "resuming train ot-cla on mnist at epoch 2" in capsys.readouterr().err
    assert all(torch.equal(p, q) for p, q in zip(unbroken.state_dict().values(), resumed.state_dict().values()))


@needs_mnist
def test_madrys_adv_trains_on_a_fresh_pgd_batch_at_every_step_with_the_true_labels(mnist):
    """Madry's MNIST challenge (the paper's "Madry's Adv"): every Adam step on the PGD examples of its batch."""
    from otbench.common.adversarial import pgd_perturbation
    from otbench.defenses.ot_classifier.settings import resolve_adv
    from otbench.defenses.ot_classifier.train import train_net

    cfg = resolve_adv("mnist", paper("cnn-pgd-at", epochs=1, adv_steps=2))
    data = mnist.take_train(200)
    real, seen = pgd_perturbation(cfg), []

    def perturb(model, x, y):
        seen.append((x.clone(), y.clone()))
        return real(model, x, y)

    train_net(data, cfg, torch.device("cpu"), "cnn", perturb, progress=False)
    assert len(seen) == 200 // cfg["batch_size"] == 4  # batch 50: one PGD batch per step
    x, y = torch.cat([s[0] for s in seen]), torch.cat([s[1] for s in seen])
    index = torch.cdist(x.flatten(1), data.x_train.flatten(1)).argmin(1)  # which training point each image is
    assert sorted(index.tolist()) == list(range(200))  # every point once
    assert torch.equal(y, data.y_train[index])  # attacked with its true label (Madry), not a prediction
